"""OpenAIEncoder against ChatServer's /v1/embeddings route."""

import numpy as np
import pytest

from zjulab.common import ConfigError, InputError, OpenAIEncoder, RemoteModelError, TextEncoder
from zjulab.common.testing import ChatServer, HashingEncoder

REF = HashingEncoder(16)
TEXTS = [f"text number {i} about the sea" for i in range(11)]


@pytest.fixture()
def server():
    with ChatServer(encoder=REF, models=["emb"], max_batch=4) as srv:
        yield srv


def enc(server, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAIEncoder("emb", base_url=server.url, **kw)


def test_good_answer_equals_the_served_encoder(server):
    e = enc(server, max_batch=3)
    got = e.encode(TEXTS)
    assert isinstance(e, TextEncoder) and got.dtype == np.float32 and got.shape == (11, 16)
    np.testing.assert_allclose(got, REF.encode(TEXTS), atol=1e-6)
    assert sorted(len(r.body["input"]) for r in server.log) == [2, 3, 3, 3]  # batches run concurrently
    assert e.dim == 16 and e.prompt_tokens == sum(len(t.split()) for t in TEXTS)


def test_batches_shrink_to_the_servers_limit(server):
    e = enc(server, max_batch=8)
    np.testing.assert_allclose(e.encode(TEXTS), REF.encode(TEXTS), atol=1e-6)
    assert e.max_batch == 4  # 413 for 8 inputs, then halves are accepted
    assert all(len(r.body["input"]) <= 4 for r in server.log if r.status == 200)


def test_answers_are_matched_by_index(server):
    body = {"data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 0.0]}]}
    server.fail_next(1, 200, body=body)
    got = enc(server).encode(["a", "b"])
    np.testing.assert_allclose(got, [[1.0, 0.0], [0.0, 1.0]])


def test_normalisation_is_optional(server):
    server.fail_next(1, 200, body={"data": [{"index": 0, "embedding": [3.0, 4.0]}]})
    np.testing.assert_allclose(enc(server, normalize=False).encode(["a"]), [[3.0, 4.0]])


def test_500_is_retried(server):
    server.fail_next(2, 500, route="embeddings")
    np.testing.assert_allclose(enc(server).encode(TEXTS[:2]), REF.encode(TEXTS[:2]), atol=1e-6)
    assert [r.status for r in server.log] == [500, 500, 200]


def test_429_waits_for_retry_after(server):
    server.fail_next(1, 429, retry_after=0.5)
    enc(server).encode(TEXTS[:1])
    assert server.log[1].arrived - server.log[0].arrived >= 0.5


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"data": [', "malformed body"),
        ({"data": []}, "0 vectors"),
        ({"data": [{"index": 0, "embedding": [1.0, "x"]}]}, "not lists of numbers"),
        ({"data": [{"index": 0, "embedding": [1.0, float("nan")]}]}, "NaN"),
        ({"data": [{"index": 3, "embedding": [1.0]}]}, "indices"),
        ({"object": "list"}, "malformed body"),
    ],
)
def test_malformed_bodies_are_typed_errors(server, body, match):
    server.fail_next(3, 200, body=body)
    with pytest.raises(RemoteModelError, match=match):
        enc(server, max_retries=2).encode(["a"])


def test_an_error_object_sent_with_http_200_keeps_the_servers_message(server):
    server.fail_next(1, 200, body={"error": {"message": "input is too long for the model", "code": 400}})
    with pytest.raises(RemoteModelError, match="HTTP 200 with an error: input is too long"):
        enc(server, max_retries=3).encode(["a"])
    assert len(server.requests) == 1  # a refusal is not sent again


def test_slow_server_times_out(server):
    server.fail_next(2, 200, delay=1.0)
    with pytest.raises(RemoteModelError, match="timed out"):
        enc(server, timeout=0.3, max_retries=1).encode(["a"])
    assert len(server.requests) == 2  # each attempt gave up before the late answer came


def test_dimension_check(server):
    with pytest.raises(ConfigError, match="returned 16-dimensional vectors; expected 8"):
        enc(server, dim=8).encode(["a"])
    e = enc(server)
    e.encode(["a"])
    server.fail_next(1, 200, body={"data": [{"index": 0, "embedding": [1.0, 2.0]}]})
    with pytest.raises(ConfigError, match="returned 2-dimensional"):
        e.encode(["b"])


def test_dim_probe_and_unknown_model(server):
    assert enc(server).dim == 16 and len(server.log) == 1
    with pytest.raises(ConfigError, match="no such model"):
        OpenAIEncoder("other", base_url=server.url).encode(["a"])


def test_input_errors(server):
    e = enc(server)
    with pytest.raises(InputError, match="not a single string"):
        e.encode("a")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="text 1 is empty"):
        e.encode(["a", " "])
    with pytest.raises(InputError, match=r"text 2: character 0 \(\\udc80\) is a lone surrogate"):
        e.encode(["a", "b", "\udc80 name"])
    with pytest.raises(ConfigError, match="unknown OpenAIEncoder option"):
        OpenAIEncoder("emb", base_url=server.url, pooling="mean")
    assert server.log == []


def test_key_not_in_repr(server):
    e = enc(server, api_key="sk-emb-secret")
    assert "sk-emb-secret" not in repr(e)
    e.encode(["a"])
    assert server.log[0].headers["authorization"] == "Bearer sk-emb-secret"
