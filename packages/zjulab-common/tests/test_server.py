"""ChatServer answers the way OpenAI-compatible servers do, and fails when told to."""

import json

import httpx
import pytest

from zjulab.common.testing import ChatServer, ScriptedChatModel


def post(srv, path, body, **kw):
    return httpx.post(srv.url + path, json=body, timeout=10, **kw)


MSG = [{"role": "user", "content": "tell me about the sea"}]


@pytest.fixture(scope="module")
def tiny_server(tiny_chat_model):
    with ChatServer(tiny_chat_model, models=["tiny"]) as srv:
        yield srv


def test_real_usage_and_finish_reason(tiny_server, tiny_chat_model):
    r = post(tiny_server, "/chat/completions", {"model": "tiny", "messages": MSG, "max_tokens": 5}).json()
    local = tiny_chat_model.generate_results([MSG], max_new_tokens=5)[0]
    assert r["choices"][0]["message"]["content"] == local.text != ""
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"] == {
        "prompt_tokens": local.prompt_tokens,
        "completion_tokens": 5,
        "total_tokens": local.prompt_tokens + 5,
    }


def test_stop_is_honoured(tiny_server):
    full = post(tiny_server, "/chat/completions", {"model": "tiny", "messages": MSG, "max_tokens": 12}).json()
    text = full["choices"][0]["message"]["content"]
    stop = text[4:7]
    cut = post(
        tiny_server, "/chat/completions", {"model": "tiny", "messages": MSG, "max_tokens": 12, "stop": [stop]}
    ).json()
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "stop" and stop not in choice["message"]["content"]
    assert text.startswith(choice["message"]["content"])
    assert cut["usage"]["completion_tokens"] < 12


def test_seed_top_p_and_n_are_honoured(tiny_server):
    body = {"model": "tiny", "messages": MSG, "max_tokens": 8, "temperature": 1.0, "seed": 5, "n": 3}
    a = post(tiny_server, "/chat/completions", body).json()
    b = post(tiny_server, "/chat/completions", body).json()
    texts = [c["message"]["content"] for c in a["choices"]]
    assert len(texts) == 3 and len(set(texts)) == 3  # n choices, each its own sample
    assert texts == [c["message"]["content"] for c in b["choices"]]  # same seed, same samples
    assert a["usage"]["completion_tokens"] == sum(1 for _ in texts) * 8
    # top_p so small that only the most likely token survives: sampling becomes greedy
    greedy = post(
        tiny_server, "/chat/completions", {"model": "tiny", "messages": MSG, "max_tokens": 8}
    ).json()
    nucleus = post(tiny_server, "/chat/completions", {**body, "n": 1, "top_p": 1e-6}).json()
    assert nucleus["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]


def test_unknown_model_is_404_and_model_failure_is_500_json():
    def boom(conv):
        raise RuntimeError("model crashed")

    with ChatServer(ScriptedChatModel(boom), models=["m"]) as srv:
        r = post(srv, "/chat/completions", {"model": "other", "messages": MSG})
        assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
        r = post(srv, "/chat/completions", {"model": "m", "messages": MSG})
        assert r.status_code == 500 and r.json()["error"]["message"] == "RuntimeError: model crashed"
        r = post(srv, "/chat/completions", {"model": "m", "messages": []})
        assert r.status_code == 400
        r = post(srv, "/chat/completions", {"model": "m", "messages": MSG, "stream": True})
        assert r.status_code == 400 and "does not stream" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/models").json()["data"] == [{"id": "m", "object": "model"}]
        assert post(srv, "/embeddings", {"model": "m", "input": "x"}).status_code == 404


def test_fail_next_scripts_status_retry_after_and_body():
    with ChatServer(ScriptedChatModel(default="ok"), models=["m"]) as srv:
        srv.fail_next(1, 429, retry_after=3)
        srv.fail_next(1, 200, body=b'{"choices": [')
        r = post(srv, "/chat/completions", {"model": "m", "messages": MSG})
        assert r.status_code == 429 and r.headers["retry-after"] == "3" and r.json()["error"]["code"] == 429
        r = post(srv, "/chat/completions", {"model": "m", "messages": MSG})
        assert r.status_code == 200 and r.content == b'{"choices": ['
        r = post(srv, "/chat/completions", {"model": "m", "messages": MSG})
        assert r.json()["choices"][0]["message"]["content"] == "ok"
        assert [rec.status for rec in srv.log] == [429, 200, 200]


def test_fail_if_hits_only_matching_requests():
    with ChatServer(ScriptedChatModel(default="ok"), models=["m"]) as srv:
        srv.fail_if(lambda b: "bad" in json.dumps(b["messages"]), 400, times=1)
        bad = [{"role": "user", "content": "bad"}]
        assert post(srv, "/chat/completions", {"model": "m", "messages": MSG}).status_code == 200
        assert post(srv, "/chat/completions", {"model": "m", "messages": bad}).status_code == 400
        assert post(srv, "/chat/completions", {"model": "m", "messages": bad}).status_code == 200


def test_slow_responses_and_in_flight_counter():
    import threading

    with ChatServer(ScriptedChatModel(default="ok"), models=["m"]) as srv:
        srv.delay = 0.3
        threads = [
            threading.Thread(target=post, args=(srv, "/chat/completions", {"model": "m", "messages": MSG}))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # the server lowers its counter just after writing a reply: a client may read first
        import time

        for _ in range(500):
            if srv.in_flight == 0:
                break
            time.sleep(0.01)
        assert srv.max_in_flight == 3 and srv.in_flight == 0  # served concurrently


@pytest.mark.timeout(60)  # a hang fails the test instead of stalling the suite
def test_stop_does_not_hang_on_idle_keep_alive_connections():
    srv = ChatServer(ScriptedChatModel(default="ok"), models=["m"]).start()
    client = httpx.Client()
    assert client.post(srv.url + "/chat/completions", json={"model": "m", "messages": MSG}).status_code == 200
    srv.stop()
    with pytest.raises(httpx.TransportError):  # the kept-alive connection was closed by stop()
        client.post(srv.url + "/chat/completions", json={"model": "m", "messages": MSG})
    client.close()
