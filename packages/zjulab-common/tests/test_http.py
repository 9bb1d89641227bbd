"""OpenAIChatModel against a real HTTP server on 127.0.0.1 serving the tiny chat model."""

import pytest

from zjulab.common import ConfigError, OpenAIChatModel, RemoteModelError
from zjulab.common.testing import ChatServer


@pytest.fixture()
def server(tiny_chat_model):
    with ChatServer(tiny_chat_model) as srv:
        yield srv


CONVS = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "tell me about the sea"}]]


def test_round_trip_matches_local_model(server, tiny_chat_model):
    client = OpenAIChatModel("tiny", base_url=server.url, backoff=0.01)
    got = client.generate(CONVS, max_new_tokens=5)
    assert got == tiny_chat_model.generate(CONVS, max_new_tokens=5)
    assert [r["max_tokens"] for r in server.requests] == [5, 5]
    # the two requests run concurrently, so they may reach the server in either order
    assert sorted(map(str, (r["messages"] for r in server.requests))) == sorted(map(str, CONVS))
    assert {r["model"] for r in server.requests} == {"tiny"}
    assert client.usage.calls == 2 and client.usage.prompt_tokens == 2


def test_base_url_without_v1_is_completed(server):
    client = OpenAIChatModel("tiny", base_url=server.url.removesuffix("/v1"), backoff=0.01)
    assert client.base_url == server.url
    assert len(client.generate(CONVS[:1], max_new_tokens=2)) == 1


def test_retries_after_500_then_succeeds(server):
    server.fail_next(2, status=500)
    client = OpenAIChatModel("tiny", base_url=server.url, max_retries=2, backoff=0.01)
    assert len(client.generate(CONVS[:1], max_new_tokens=2)) == 1
    assert len(server.requests) == 3  # two failures, one success


def test_gives_up_after_retries(server):
    server.fail_next(5, status=503)
    client = OpenAIChatModel("tiny", base_url=server.url, max_retries=1, backoff=0.01)
    with pytest.raises(RemoteModelError, match="no answer after 2 attempts; last error: HTTP 503"):
        client.generate(CONVS[:1])
    assert len(server.requests) == 2


def test_client_error_is_not_retried(server):
    server.fail_next(1, status=400)
    client = OpenAIChatModel("tiny", base_url=server.url, max_retries=3, backoff=0.01)
    with pytest.raises(RemoteModelError, match="refused the request: HTTP 400"):
        client.generate(CONVS[:1])
    assert len(server.requests) == 1


def test_timeout_is_retried_then_raised(server):
    server.delay = 0.5
    client = OpenAIChatModel("tiny", base_url=server.url, timeout=0.1, max_retries=1, backoff=0.01)
    with pytest.raises(RemoteModelError, match="ReadTimeout"):
        client.generate(CONVS[:1])


def test_connection_refused():
    client = OpenAIChatModel("tiny", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=1)
    with pytest.raises(RemoteModelError, match="ConnectError"):
        client.generate(CONVS[:1])


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"timeout": 0}, "timeout"), ({"max_retries": -1}, "max_retries"), ({"concurrency": 0}, "concurrency")],
)
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        OpenAIChatModel("m", **kw)
