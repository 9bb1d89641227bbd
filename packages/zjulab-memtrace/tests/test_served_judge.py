"""A chat judge behind a served model that fails: retried answers count, a dead server is said."""

from __future__ import annotations

import json
import time

import pytest

from zjulab.common.chat import OpenAIChatModel
from zjulab.common.testing import ChatServer, ScriptedChatModel
from zjulab.memtrace import ChatJudge, Gold, Tracer, attribute

GOLD = Gold("Milo", ("Ann: my cat is called Milo",), "What is the cat called?")


def _trace():
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if "Milo" not in m]

    @tracer.operation("answer", outputs=("answer",))
    def answer(question, facts):
        return next((f for f in facts if "cat" in f), "I don't know")

    with tracer.trace() as trace:
        answer(GOLD.question, extract(["Ann: my cat is called Milo", "Bob: hi"]))
    return trace


def _reply(conv):
    """A judge whose verdict depends on the operations it is shown (so a lost answer shows)."""
    user = conv[-1]["content"]
    if "[op1] extract" in user:
        return json.dumps({"faulty": [{"op": "op1", "origin": "self", "mode": "information_loss"}]})
    return json.dumps({"faulty": [{"op": "op4", "origin": "upstream"}]})


@pytest.mark.parametrize(
    "fault",
    [
        dict(n=2, status=500),
        dict(n=1, status=429, retry_after=0.2),
        dict(n=1, status=200, body=b'{"choices": ['),
        dict(n=1, status=200, delay=1.5),
    ],
    ids=["500s", "429-retry-after", "malformed", "slow"],
)
def test_a_failing_server_is_retried_and_the_verdict_kept(fault):
    with ChatServer(ScriptedChatModel(_reply, model_id="judge")) as server:
        server.fail_next(**fault)
        client = OpenAIChatModel("judge", base_url=server.url, timeout=0.5, max_retries=3, backoff=0.01)
        t0 = time.monotonic()
        att = attribute(_trace(), GOLD, ChatJudge(client))
        assert time.monotonic() - t0 < 20
    assert att.summary() == "decisive: extract#0 (op1) -> information_loss [verified by replay]"
    assert not att.degraded


def test_a_dead_server_is_reported_not_passed_off_as_a_finding():
    with ChatServer(ScriptedChatModel(_reply, model_id="judge")) as server:
        server.fail_next(100, status=500)
        client = OpenAIChatModel("judge", base_url=server.url, timeout=0.5, max_retries=1, backoff=0.01)
        att = attribute(_trace(), GOLD, ChatJudge(client))
    assert att.degraded and att.decisive_ops == ["op4"]
    assert att.summary().endswith("; degraded: the judge gave no usable answer]")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_misconfigured_judge_is_an_error_not_a_degraded_finding(status):
    # a wrong key, model name or URL fails every question the same way: the user hears of it
    from zjulab.common.errors import ConfigError
    from zjulab.memtrace import attribute_all_at_once

    key = "sk-proj-Q7mZr2Lx9KpW4vNt8YbC3dHs"
    with ChatServer(ScriptedChatModel(_reply, model_id="judge")) as server:
        server.fail_next(100, status=status)
        client = OpenAIChatModel(
            "judge", base_url=server.url, api_key=key, timeout=0.5, max_retries=1, backoff=0.01
        )
        with pytest.raises(ConfigError, match=str(status)) as info:
            attribute(_trace(), GOLD, ChatJudge(client))
        assert key not in str(info.value)
        with pytest.raises(ConfigError):
            attribute_all_at_once(_trace(), GOLD, client)
        sent = len(server.log)
    assert sent == 2  # one question each, never retried: it cannot succeed
