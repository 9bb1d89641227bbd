"""OpenAIChatModel against a real HTTP server on 127.0.0.1 (ChatServer)."""

import logging
import threading
import time

import pytest

from zjulab.common import (
    ChatResult,
    ConfigError,
    IncompleteAnswerError,
    InputError,
    OpenAIChatModel,
    RemoteModelError,
)
from zjulab.common.testing import ChatServer, ScriptedChatModel

CONVS = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "tell me about the sea"}]]


def echo(conv):
    return "echo: " + conv[-1]["content"]


@pytest.fixture()
def scripted():
    return ScriptedChatModel(echo)


@pytest.fixture()
def server(scripted):
    with ChatServer(scripted, models=["tiny"]) as srv:
        yield srv


def client(server, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAIChatModel("tiny", base_url=server.url, **kw)


def q(text):
    return [{"role": "user", "content": text}]


def test_round_trip_matches_local_model(tiny_chat_model):
    with ChatServer(tiny_chat_model, models=["tiny"]) as srv:
        c = client(srv)
        got = c.generate(CONVS, max_new_tokens=5)
        local = tiny_chat_model.generate(CONVS, max_new_tokens=5)
        assert got == local and got[0] != got[1] and all(got)  # the prompts give different answers
        assert [r["max_tokens"] for r in srv.requests] == [5, 5]
        assert sorted(map(str, (r["messages"] for r in srv.requests))) == sorted(map(str, CONVS))
        # usage is the model's own token count, not a placeholder
        res = c.generate_results(CONVS[:1], max_new_tokens=5)[0]
        assert res.completion_tokens == 5 and res.finish_reason == "length"
        prompt = tiny_chat_model.tokenizer(tiny_chat_model.render(CONVS[0]), add_special_tokens=False)
        assert res.prompt_tokens == len(prompt["input_ids"])


def test_answers_keep_their_order_and_usage_is_counted(server):
    c = client(server)
    convs = [q(f"question {i}") for i in range(12)]
    assert c.generate(convs) == [f"echo: question {i}" for i in range(12)]
    assert c.usage.calls == 12 and c.usage.prompt_tokens == 24 and c.usage.completion_tokens == 36


def test_base_url_without_v1_is_completed(server):
    c = OpenAIChatModel("tiny", base_url=server.url.removesuffix("/v1"))
    assert c.base_url == server.url
    assert c.generate(CONVS[:1]) == ["echo: hello"]


# -- every answer says how it ended ------------------------------------------------------------


def test_truncated_answer_is_reported_by_policy(caplog):
    cut = ChatResult("The capital of Fr", finish_reason="length")
    with ChatServer(ScriptedChatModel([cut, cut, cut]), models=["m"]) as srv:
        warn = OpenAIChatModel("m", base_url=srv.url)
        with caplog.at_level(logging.WARNING, logger="zjulab.common.chat"):
            assert warn.generate([q("capital?")]) == ["The capital of Fr"]
        assert "cut off at the token limit" in caplog.text
        res = warn.generate_results([q("capital?")])[0]
        assert (res.text, res.finish_reason, res.truncated) == ("The capital of Fr", "length", True)
        strict = OpenAIChatModel("m", base_url=srv.url, on_truncation="raise")
        with pytest.raises(IncompleteAnswerError, match="cut off") as info:
            strict.generate([q("capital?")])
        assert info.value.results[0].text == "The capital of Fr" and info.value.indices == [0]


def test_content_filter_and_empty_answers_follow_their_policies(caplog):
    model = ScriptedChatModel([ChatResult("", finish_reason="content_filter"), "   ", "fine"])
    with ChatServer(model, models=["m"]) as srv:
        c = OpenAIChatModel(
            "m", base_url=srv.url, on_content_filter="raise", on_empty="return", concurrency=1
        )
        with pytest.raises(IncompleteAnswerError) as info:
            c.generate([q("a"), q("b"), q("c")])
        assert info.value.reason == "content_filter" and [r.text for r in info.value.results] == [
            "",
            "   ",
            "fine",
        ]
        model.push("")
        c2 = OpenAIChatModel("m", base_url=srv.url, on_empty="raise")
        with pytest.raises(IncompleteAnswerError, match="empty"):
            c2.generate([q("d")])


def test_reasoning_text_is_kept():
    body = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 7},
    }
    with ChatServer(ScriptedChatModel(default="x"), models=["m"]) as srv:
        srv.fail_next(1, 200, body=body)
        res = OpenAIChatModel("m", base_url=srv.url).generate_results([q("2+2?")])[0]
    assert (res.text, res.reasoning, res.prompt_tokens, res.completion_tokens) == ("4", "2+2 is 4", 3, 7)


def test_content_given_as_parts_is_joined_and_thinking_kept_apart():
    # Mistral-style content: a list of parts, not a string (was returned as the list's repr)
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": [{"type": "text", "text": "capital of France"}]},
                        {"type": "text", "text": "Par"},
                        {"type": "text", "text": "is"},
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    }
    with ChatServer(ScriptedChatModel(default="x"), models=["m"]) as srv:
        srv.fail_next(1, 200, body=body)
        res = OpenAIChatModel("m", base_url=srv.url).generate_results([q("capital?")])[0]
    assert (res.text, res.reasoning, res.finish_reason) == ("Paris", "capital of France", "stop")


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (None, "the first choice has no message"),
        ({"role": "assistant", "content": 42}, "content is int, not text"),
        ({"role": "assistant", "content": [{"type": "image_url", "image_url": "x"}]}, "unknown kind"),
    ],
)
def test_a_message_that_is_not_text_is_a_malformed_body(message, why):
    body = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    with ChatServer(ScriptedChatModel(default="fine"), models=["m"]) as srv:
        srv.fail_next(1, 200, body=body)
        res = OpenAIChatModel("m", base_url=srv.url, max_retries=1, backoff=0.01).generate_results([q("a")])[
            0
        ]
        assert len(srv.requests) == 2  # retried like any malformed body, then answered
    assert (res.text, res.attempts, res.error) == ("fine", 2, None)
    with ChatServer(ScriptedChatModel(default="fine"), models=["m"]) as srv:
        srv.fail_next(1, 200, body=body)
        res = OpenAIChatModel("m", base_url=srv.url, max_retries=0).generate_results([q("a")])[0]
    assert isinstance(res.error, RemoteModelError) and why in str(res.error)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'\xff\xfe{"choices": []}', "malformed body"),  # not UTF-8: escaped as UnicodeDecodeError
        (
            b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "\xff"}, '
            b'"finish_reason": "stop"}]}',
            "malformed body",
        ),
        (
            b'{"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": 5}]}',
            "finish_reason is 5",
        ),
    ],
)
def test_an_undecodable_answer_fails_alone(server, body, why):
    server.fail_next(1, 200, body=body)
    res = client(server, max_retries=0).generate_results([q("a"), q("b")])
    bad = [r for r in res if not r.ok]
    assert len(bad) == 1 and why in str(bad[0].error)
    assert [r.text for r in res if r.ok] in (["echo: a"], ["echo: b"])  # the other answer is kept


def test_an_error_object_sent_with_http_200_keeps_the_servers_message(server):
    # some proxies answer 200 {"error": ...}: the message was lost ("no choices") and retried
    server.fail_next(
        1, 200, body={"error": {"message": "maximum context length is 4096 tokens", "code": 400}}
    )
    res = client(server, max_retries=3).generate_results([q("long")])[0]
    assert isinstance(res.error, RemoteModelError)
    assert "HTTP 200 with an error: maximum context length is 4096 tokens" in str(res.error)
    assert (res.attempts, len(server.requests)) == (1, 1)  # a refusal is not sent again
    server.fail_next(1, 200, body={"error": {"message": "overloaded", "code": 503}})
    res = client(server, max_retries=3).generate_results([q("again")])[0]
    assert (res.text, res.attempts) == ("echo: again", 2)  # a "try again" code is retried


# -- nothing received is thrown away ----------------------------------------------------------


def test_one_refused_request_keeps_the_other_answers(server):
    server.fail_if(lambda b: "poison" in str(b["messages"]), 400)
    convs = [q(f"q{i}") for i in range(19)]
    convs.insert(6, q("poison"))
    c = client(server, max_retries=3)
    with pytest.raises(RemoteModelError, match="1 of 20 conversation") as info:
        c.generate(convs)
    results = info.value.results
    assert info.value.failed == [6] and results[6].error is info.value
    assert [r.text for i, r in enumerate(results) if i != 6] == [f"echo: q{i}" for i in range(19)]
    # a 400 is not retried, and usage counts the 19 answers only
    assert sum("poison" in str(b["messages"]) for b in server.requests) == 1
    assert (c.usage.calls, c.usage.failed) == (19, 1)
    out = c.generate(convs, on_error="return")
    assert out[6] is None and out[7] == "echo: q6"


def test_unknown_model_is_a_config_error_even_with_concurrent_requests(server):
    server.delay = 0.05
    c = OpenAIChatModel("nope", base_url=server.url, concurrency=4)
    with pytest.raises(ConfigError, match="no such model"):
        c.generate([q(str(i)) for i in range(12)])
    assert len(server.requests) <= 4 + 4  # at most the requests already in flight are sent


def test_malformed_body_echoing_the_key_is_redacted(server):
    server.fail_next(1, 200, body=b"not json at all: sk-leaky-key", route="chat")
    server.fail_next(1, 200, body=b"not json at all: sk-leaky-key", route="chat")
    res = client(server, api_key="sk-leaky-key", max_retries=1).generate_results(CONVS[:1])[0]
    assert res.error is not None and "sk-leaky-key" not in str(res.error)


def test_unknown_model_is_a_config_error_and_stops_the_batch(server):
    c = OpenAIChatModel("nope", base_url=server.url, concurrency=1)
    with pytest.raises(ConfigError, match="no such model") as info:
        c.generate([q("a"), q("b"), q("c")])
    assert len(server.requests) == 1  # the two requests after a 404 are not sent
    assert all(r.error is not None for r in info.value.results)


def test_model_failure_is_a_500_with_a_json_body():
    def boom(conv):
        raise RuntimeError("CUDA out of memory")

    with ChatServer(ScriptedChatModel(boom), models=["m"]) as srv:
        c = OpenAIChatModel("m", base_url=srv.url, max_retries=1, backoff=0.01)
        res = c.generate_results([q("a")])[0]
        assert "HTTP 500" in str(res.error) and "CUDA out of memory" in str(res.error)
        assert res.attempts == 2 and srv.log[0].status == 500


# -- the server's pace is respected ------------------------------------------------------------


def test_retry_after_is_honoured(server):
    server.fail_next(1, 429, retry_after=0.6)
    c = client(server, backoff=0.01)
    assert c.generate(CONVS[:1]) == ["echo: hello"]
    first, second = server.log
    assert first.status == 429 and second.status == 200
    assert second.arrived - first.arrived >= 0.6
    assert c.usage.retries == 1 and c.usage.calls == 1


@pytest.mark.parametrize("value", ["soon", "nan", "-", "Wed, 99 Foo 2015 07:28:00 GMT"])
def test_a_retry_after_that_is_not_a_delay_falls_back_to_backoff(server, value):
    # it raised ValueError out of generate_results, losing every answer of the batch
    server.fail_next(1, 429, retry_after=value)
    c = client(server, backoff=0.01)
    assert c.generate([q("a"), q("b")]) == ["echo: a", "echo: b"]
    assert c.usage.retries == 1


def test_retry_after_as_an_http_date_is_waited_out(server, monkeypatch):
    import email.utils

    slept = []
    monkeypatch.setattr("zjulab.common.chat.time.sleep", slept.append)
    server.fail_next(1, 503, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    assert client(server, max_retry_wait=60).generate([q("a")]) == ["echo: a"]
    assert len(slept) == 1 and 10 < slept[0] <= 31  # the date is 30 s ahead, to the second


def test_retry_after_longer_than_allowed_fails_at_once(server, monkeypatch):
    server.fail_next(1, 503, retry_after=30)
    c = client(server, max_retry_wait=1)
    slept = []
    monkeypatch.setattr("zjulab.common.chat.time.sleep", slept.append)
    res = c.generate_results(CONVS[:1])[0]
    assert "asked to wait 30s" in str(res.error)
    assert len(server.requests) == 1 and slept == []  # failed at once, without waiting


def test_retries_after_500_then_succeeds(server):
    server.fail_next(2, status=500)
    c = client(server, max_retries=2)
    assert c.generate(CONVS[:1]) == ["echo: hello"]
    assert len(server.requests) == 3


def test_gives_up_after_retries(server):
    server.fail_next(5, status=503)
    c = client(server, max_retries=1)
    with pytest.raises(RemoteModelError, match=r"no answer after 2 attempts; last error: .*HTTP 503"):
        c.generate(CONVS[:1])
    assert len(server.requests) == 2


def test_malformed_body_is_retried_then_reported(server):
    server.fail_next(1, 200, body=b'{"choices": [')
    c = client(server)
    assert c.generate(CONVS[:1]) == ["echo: hello"]
    server.fail_next(3, 200, body={"object": "chat.completion", "choices": []})
    res = client(server, max_retries=2).generate_results(CONVS[:1])[0]
    assert isinstance(res.error, RemoteModelError) and "malformed body" in str(res.error)


def test_timeout_bounds_a_trickling_response(server):
    # headers at once, then 16 bytes every 0.1 s: no single read waits long, the whole does
    server.fail_next(1, 200, drip=0.1)
    # the whole answer takes > 3 s to trickle in; only the whole-request deadline can stop it
    c = client(server, timeout=0.5, max_retries=0)
    res = c.generate_results([q("x" * 300)])[0]
    assert "timed out after 0.5s" in str(res.error) and res.text == ""


def test_timeout_on_a_slow_server(server):
    server.fail_next(2, 200, delay=1.0)
    c = client(server, timeout=0.3, max_retries=1)
    with pytest.raises(RemoteModelError, match="timed out"):
        c.generate(CONVS[:1])


def test_connection_refused():
    c = OpenAIChatModel("tiny", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=1)
    with pytest.raises(RemoteModelError, match="connection failed"):
        c.generate(CONVS[:1])


def test_concurrency_limit_holds_across_threads_and_connections_are_reused(server):
    server.delay = 0.05
    c = client(server, concurrency=3)
    threads = [
        threading.Thread(target=c.generate, args=([q(f"t{t}-{i}") for i in range(4)],)) for t in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.requests) == 16
    assert server.max_in_flight == 3
    assert server.connections <= 3 + 1  # one pool for the client, not one per call


# -- secrets stay secret -----------------------------------------------------------------------


def test_api_key_never_in_logs_errors_or_repr(server, tmp_path, caplog):
    key_file = tmp_path / "key"
    key_file.write_text("sk-very-secret-123\n")
    c = client(server, api_key_file=key_file, max_retries=1)
    server.fail_next(2, 500, message="echoing sk-very-secret-123 back")
    with caplog.at_level(logging.DEBUG):
        res = c.generate_results(CONVS[:1])[0]
    assert server.log[0].headers["authorization"] == "Bearer sk-very-secret-123"  # newline stripped
    assert "sk-very-secret-123" not in caplog.text
    assert "sk-very-secret-123" not in str(res.error) and "***" in str(res.error)
    assert "sk-very-secret-123" not in repr(c) and "api_key=***" in repr(c)


def test_no_key_sends_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client(server).generate(CONVS[:1])
    assert "authorization" not in server.log[0].headers


def test_key_from_environment(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-env\n")
    client(server, api_key_env="MY_KEY").generate(CONVS[:1])
    assert server.log[0].headers["authorization"] == "Bearer sk-env"


def test_bad_key_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        OpenAIChatModel("m", api_key_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        OpenAIChatModel("m", api_key_file=tmp_path / "empty")


def test_401_is_a_config_error_without_the_key(server):
    server.fail_next(1, 401, message="bad key")
    with pytest.raises(ConfigError, match="rejected the API key") as info:
        client(server, api_key="sk-wrong").generate(CONVS[:1])
    assert "sk-wrong" not in str(info.value)


# -- sampling options are forwarded or refused -------------------------------------------------


def test_sampling_options_are_forwarded(server):
    c = client(server)
    c.generate(
        CONVS[:1],
        max_tokens=7,
        temperature=0.7,
        top_p=0.9,
        stop=["\n"],
        seed=3,
        presence_penalty=0.5,
        top_k=20,
        repetition_penalty=1.1,
    )
    body = server.requests[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        7,
        0.7,
        0.9,
        ["\n"],
        3,
    )
    assert (body["presence_penalty"], body["top_k"], body["repetition_penalty"]) == (0.5, 20, 1.1)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"do_sample": True}, r"\['do_sample'\] are not supported"),
        ({"n": 2}, "one answer per conversation"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 3, "max_new_tokens": 4}, "disagree"),
        # typed errors, not a ValueError/TypeError from inside the check or a batch of 400s
        ({"top_p": "abc"}, "top_p must be a number, got 'abc'"),
        ({"stop": 5}, "stop must be a string or a list of strings"),
        ({"stop": ["\n", None]}, "stop must be a string or a list of strings"),
        ({"seed": "7"}, "seed must be a number"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"top_k": True}, "top_k must be a number"),
        ({"repetition_penalty": "1.1"}, "repetition_penalty must be a number"),
    ],
)
def test_unknown_or_invalid_sampling_is_refused(server, kw, match):
    with pytest.raises(ConfigError, match=match):
        client(server).generate(CONVS[:1], **kw)
    assert server.requests == []


def test_input_errors(server):
    with pytest.raises(InputError, match="not a single one"):
        client(server).generate(CONVS[0][0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"max_retries": -1}, "max_retries"),
        ({"concurrency": 0}, "concurrency"),
        ({"on_truncation": "ignore"}, "on_truncation"),
        ({"on_error": "none"}, "on_error"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        OpenAIChatModel("m", **kw)


def test_chat_module_imports_neither_torch_nor_the_sdk():
    import subprocess
    import sys

    code = (
        "import sys; import zjulab.common.chat, zjulab.common.structured, zjulab.common.embeddings, "
        "zjulab.common.testing; print(sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_transformers_chat_model_without_torch_is_a_typed_error():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from zjulab.common.errors import MissingDependencyError\n"
        "try:\n    from zjulab.common.chat import TransformersChatModel\n"
        "except MissingDependencyError as e:\n    print('typed', e.install)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "typed pip install 'zjulab-common[torch]'" in out.stdout, out.stderr


def test_async_calls_share_the_limit(server):
    import asyncio

    server.delay = 0.05
    c = client(server, concurrency=2)

    async def main():
        return await asyncio.gather(*(c.agenerate([q(f"a{i}"), q(f"b{i}")]) for i in range(3)))

    out = asyncio.run(main())
    assert out == [[f"echo: a{i}", f"echo: b{i}"] for i in range(3)]
    assert server.max_in_flight == 2


def test_text_a_server_cannot_receive_is_refused_before_any_request(server):
    """A lone surrogate fails inside the HTTP client's JSON encoder; an unknown role is a 400 from
    vLLM. Both are refused up front, naming the conversation, the message and the character."""
    client = OpenAIChatModel("tiny", base_url=server.url)
    with pytest.raises(
        InputError, match=r"conversation 1 message 0: character 3 \(\\ud800\) is a lone surrogate"
    ):
        client.generate([[{"role": "user", "content": "ok"}], [{"role": "user", "content": "abc\ud800"}]])
    with pytest.raises(InputError, match=r"conversation 0 message 1: role 'wizard' is not one of"):
        client.generate([[{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}]])
    assert client.usage.calls == 0


@pytest.mark.parametrize("url", ["not a url", "ftp://host/v1", "http://", "localhost:8000"])
def test_a_base_url_that_is_not_http_is_a_config_error_at_once(url):
    with pytest.raises(ConfigError, match="base_url must be an http"):
        OpenAIChatModel("m", base_url=url)


# -- the length field, extra choices, pickling --------------------------------------------------

REFUSE_MAX_TOKENS = {
    "error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
        "Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter",
    }
}


def test_a_server_refusing_max_tokens_is_asked_with_max_completion_tokens(server, caplog):
    server.fail_if(lambda b: "max_tokens" in b, 400, body=REFUSE_MAX_TOKENS)
    c = client(server, max_retries=0)
    with caplog.at_level(logging.WARNING, logger="zjulab.common"):
        first = c.generate_results([q("a")], max_new_tokens=9)[0]
    assert (first.text, first.attempts) == ("echo: a", 1)
    assert [sorted(k for k in r if k.startswith("max")) for r in server.requests] == [
        ["max_tokens"],
        ["max_completion_tokens"],
    ]
    assert server.requests[1]["max_completion_tokens"] == 9
    assert c.max_tokens_field == "max_completion_tokens"
    assert sum("sending max_completion_tokens" in r.getMessage() for r in caplog.records) == 1
    # later calls, from any thread, go straight to the accepted field
    server.clear()
    server.fail_if(lambda b: "max_tokens" in b, 400, body=REFUSE_MAX_TOKENS)
    assert c.generate([q("b"), q("c")], max_new_tokens=4) == ["echo: b", "echo: c"]
    assert all("max_tokens" not in r and r["max_completion_tokens"] == 4 for r in server.requests)


@pytest.mark.parametrize(
    "message",
    [
        "prompt too long",
        # vLLM names both fields when the value is too large: not a refusal of the name
        "'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum context "
        "length is 4096 tokens and your request has 12 input tokens",
    ],
)
def test_another_400_is_not_sent_again_with_the_other_field(server, message):
    server.fail_if(lambda b: True, 400, times=1, message=message)
    c = client(server, max_retries=3)
    res = c.generate_results([q("a")])[0]
    assert isinstance(res.error, RemoteModelError) and message[:20] in str(res.error)
    assert len(server.requests) == 1 and c.max_tokens_field == "max_tokens"


def test_max_completion_tokens_can_be_chosen_and_is_validated(server):
    c = client(server, max_tokens_field="max_completion_tokens")
    assert c.generate([q("a")], max_tokens=3) == ["echo: a"]
    assert server.requests[0]["max_completion_tokens"] == 3 and "max_tokens" not in server.requests[0]
    with pytest.raises(ConfigError, match="max_tokens_field must be one of"):
        client(server, max_tokens_field="max_new_tokens")


def test_extra_choices_are_reported_once_and_the_first_is_used(server, caplog):
    def two(k):
        return {"index": k, "message": {"role": "assistant", "content": f"c{k}"}, "finish_reason": "stop"}

    body = {"choices": [two(0), two(1)], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    server.fail_next(2, 200, body=body)
    c = client(server)
    with caplog.at_level(logging.WARNING, logger="zjulab.common"):
        assert c.generate([q("a")]) == ["c0"] and c.generate([q("b")]) == ["c0"]
    assert sum("answered with 2 choices" in r.getMessage() for r in caplog.records) == 1


def test_a_pickled_client_keeps_its_settings_and_starts_its_own_pool_and_usage(server):
    import pickle

    c = client(server, api_key="sk-test-123", concurrency=3, max_tokens_field="max_completion_tokens")
    assert c.generate([q("a")]) == ["echo: a"] and c.usage.calls == 1
    copy = pickle.loads(pickle.dumps(c))
    assert (copy.base_url, copy.concurrency, copy.max_tokens_field, copy.has_api_key) == (
        c.base_url,
        3,
        "max_completion_tokens",
        True,
    )
    assert copy.usage.calls == 0 and copy._client is None
    assert copy.generate([q("b")]) == ["echo: b"] and copy.usage.calls == 1 and c.usage.calls == 1
    assert server.requests[-1]["max_completion_tokens"] == 512
    counted = pickle.loads(pickle.dumps(c.usage))
    assert counted.as_dict() == c.usage.as_dict()
    counted.add(1, 0, 0)  # its lock works


def test_a_pickled_encoder_client_encodes():
    import pickle

    import numpy as np

    from zjulab.common import OpenAIEncoder
    from zjulab.common.testing import HashingEncoder

    with ChatServer(encoder=HashingEncoder(16), models=["e"]) as srv:
        enc = OpenAIEncoder("e", base_url=srv.url)
        copy = pickle.loads(pickle.dumps(enc))
        np.testing.assert_allclose(copy.encode(["a b"]), enc.encode(["a b"]))
