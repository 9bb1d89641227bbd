"""The pipeline against an OpenAI-compatible stub: outages, 4xx, malformed bodies, in-flight
limits, changed seeds and a kill -9 in the middle of a stage, each counted at the server."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zjulab.common.chat import OpenAIChatModel
from zjulab.conifer import Pipeline, PipelineConfig, load_seeds

from .fakes import FakeModel, weak_reply
from .stub import StubServer

SEEDS = [
    "How do I keep a sourdough starter alive?",
    "Explain photosynthesis to a child please",
    "What makes a good first programming language?",
]


def cfg(out, **kw):
    base = dict(
        mode="verifiable",
        out_dir=str(out),
        num_reframes=1,
        num_levels=3,
        max_structured_retries=1,
        few_shot=False,
        retry_backoff=0.0,
        max_remote_retries=0,
        show_progress=False,
    )
    base.update(kw)
    return PipelineConfig(**base)


def client(stub, **kw):
    return OpenAIChatModel("stub-model", base_url=stub.url, api_key="test", max_retries=0, timeout=10, **kw)


def reference(tmp_path, seeds=SEEDS, **kw):
    return Pipeline(FakeModel(), FakeModel(weak_reply), cfg(tmp_path / "ref", **kw)).run(load_seeds(seeds))


def test_outage_then_recovery_reaches_every_record(tmp_path):
    ref = reference(tmp_path)
    with StubServer() as stub:
        stub.down = True
        first = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        assert not first.complete and first.records == [] and first.failed == 3
        assert {r["state"] for r in first.set_aside()} == {"failed"}
        stub.down = False
        before = stub.total()
        second = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
    assert second.complete and stub.total() > before
    assert second.records == ref.records  # 100% of the records
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["status"] == "complete"


def test_an_outage_outlasting_max_request_failures_still_recovers(tmp_path):
    ref = reference(tmp_path)
    with StubServer() as stub:
        stub.down = True  # HTTP 503 for more runs than the cap
        for _ in range(3):
            res = Pipeline(
                client(stub), FakeModel(weak_reply), cfg(tmp_path / "run", max_request_failures=2)
            ).run(load_seeds(SEEDS))
            assert res.records == [] and {r["state"] for r in res.set_aside()} == {"failed"}
        stub.down = False
        before = stub.total()
        res = Pipeline(
            client(stub), FakeModel(weak_reply), cfg(tmp_path / "run", max_request_failures=2)
        ).run(load_seeds(SEEDS))
    assert res.complete and stub.total() > before and res.records == ref.records


def test_a_request_refused_in_max_request_failures_runs_is_abandoned(tmp_path):
    victim = "L2: Q1 on How do I keep a sourdough starter alive??"
    with StubServer() as stub:
        stub.refuse(lambda text: text == victim)  # HTTP 400 every time
        for _ in range(3):
            res = Pipeline(
                client(stub), FakeModel(weak_reply), cfg(tmp_path / "run", max_request_failures=2)
            ).run(load_seeds(SEEDS))
        states = [r["state"] for r in res.set_aside() if r["stage"] == "answer"]
        calls = sum(b["messages"][-1]["content"] == victim for b in stub.bodies)
    assert states == ["abandoned"] and calls == 2  # asked in two runs, not in the third


def test_one_refused_request_sets_aside_only_its_record(tmp_path):
    ref = reference(tmp_path)
    victim = "L2: Q1 on How do I keep a sourdough starter alive??"
    with StubServer() as stub:
        stub.refuse(lambda text: text == victim)
        res = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        # every other answer was kept: one request per distinct prompt, nothing paid twice
        assert max(stub.calls.values()) == 1
    (row,) = [r for r in res.set_aside() if r["stage"] == "answer"]
    assert row["state"] == "failed" and "400" in row["reason"]
    assert len(res.records) == len(ref.records) - 1
    assert victim not in {r["instruction"] for r in res.records}


def test_malformed_body_is_set_aside_and_retried(tmp_path):
    victim = "L1: Q1 on Explain photosynthesis to a child please?"
    with StubServer() as stub:
        stub.malformed(lambda text: text == victim)
        res = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        assert not res.complete
        (row,) = [r for r in res.set_aside() if r["state"] == "failed"]
        assert "unexpected body" in row["reason"] or "RemoteModelError" in row["reason"]
        stub.malformed(lambda text: False)
        before = stub.total()
        res2 = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        assert res2.complete
        # only the failed answer and what depends on it (internal feedback is level >= 2) are asked
        assert stub.total() - before == 1


def test_failed_optional_stage_keeps_the_record(tmp_path):
    ref = reference(tmp_path)
    with StubServer() as stub:
        stub.refuse(lambda text: "Go through the requirements" in text)
        res = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
    assert len(res.records) == len(ref.records)  # no answered record lost
    hard = [r for r in res.records if r["level"] >= 2]
    assert hard and all("internal_feedback" in r["lacks"] and "process" not in r for r in hard)
    assert all("feedback" in r for r in res.records if r["level"] == 3)  # later stages still ran


def test_rejected_optional_stage_keeps_the_record_and_raw(tmp_path):
    class NoSteps(FakeModel):
        def __init__(self):
            super().__init__()
            base = self.reply
            self.reply = lambda c: "no json" if "Go through the requirements" in c[0]["content"] else base(c)

    res = Pipeline(NoSteps(), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
    ref = reference(tmp_path)
    assert len(res.records) == len(ref.records)
    rows = [r for r in res.set_aside() if r["stage"] == "internal_feedback"]
    assert rows and all(r["state"] == "rejected" and r["raw"] == "no json" for r in rows)


@pytest.mark.parametrize("limit", [1, 4])
def test_the_server_never_sees_more_than_max_in_flight(tmp_path, limit):
    with StubServer(latency=0.03) as stub:
        model = client(stub, concurrency=8)  # the client's own limit no longer multiplies
        res = Pipeline(
            model, FakeModel(weak_reply), cfg(tmp_path / "run", max_in_flight=limit, batch_size=8)
        ).run(load_seeds(SEEDS))
    assert res.complete
    assert stub.max_in_flight == limit  # honoured exactly: reached, never exceeded


def test_changing_one_seed_reissues_only_its_calls(tmp_path):
    changed = [SEEDS[0], "Why do cats purr when they are happy?", SEEDS[2]]
    with StubServer() as stub:
        Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        first = set(stub.calls)
        res = Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(changed))
        new = set(stub.calls) - first
    assert max(stub.calls.values()) == 1  # nothing asked twice
    assert new and all("cats purr" in k for k in new)
    with StubServer() as alone:
        Pipeline(client(alone), FakeModel(weak_reply), cfg(tmp_path / "alone")).run(load_seeds([changed[1]]))
    assert len(new) == alone.total()  # exactly that seed's calls
    assert {r["seed"] for r in res.records} == set(changed)  # nothing stale from the old seed


def test_changing_the_model_reissues_its_calls(tmp_path):
    with StubServer() as stub:
        Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        n = stub.total()
        other = OpenAIChatModel("another-model", base_url=stub.url, api_key="test", max_retries=0)
        Pipeline(other, FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        assert stub.total() == 2 * n


def test_changing_the_clients_server_settings_reissues_its_calls(tmp_path):
    # extra_body (vLLM/SGLang sampling such as top_k, or chat_template_kwargs) shapes every
    # answer; it was not in the request key, so a run with new settings replayed the old answers
    with StubServer() as stub:
        run = lambda **kw: Pipeline(client(stub, **kw), FakeModel(weak_reply), cfg(tmp_path / "run")).run(  # noqa: E731
            load_seeds(SEEDS)
        )
        first = run(extra_body={"top_k": 20})
        n = stub.total()
        assert {b.get("top_k") for b in stub.bodies} == {20}
        second = run(extra_body={"top_k": 40})
        assert stub.total() == 2 * n and second.records == first.records
        assert {b.get("top_k") for b in stub.bodies[n:]} == {40}
        run(extra_body={"top_k": 40})  # unchanged settings: everything replayed
        assert stub.total() == 2 * n


def test_a_client_without_server_settings_keeps_its_request_keys(tmp_path):
    # keys of a client with no extra_body are the plain (stage, conversation, model, sampling)
    # hash, so caches written before server settings entered the key stay valid
    from zjulab.conifer import request_key
    from zjulab.conifer.pipeline import RequestCache

    with StubServer() as stub:
        Pipeline(client(stub), FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS))
        first = stub.bodies[0]
    sampling = {"max_new_tokens": first["max_tokens"], "temperature": first["temperature"]}
    key = request_key("reframe", first["messages"], "stub-model", sampling)
    assert RequestCache(tmp_path / "run" / "requests.jsonl").get(key) is not None


RUNNER = textwrap.dedent(
    """
    import sys
    from zjulab.common.chat import OpenAIChatModel
    from zjulab.conifer import Pipeline, PipelineConfig, load_seeds
    sys.path.insert(0, sys.argv[3])
    from tests.fakes import FakeModel, weak_reply
    cfg = PipelineConfig(mode="verifiable", out_dir=sys.argv[2], num_reframes=2, num_levels=3, max_structured_retries=1,
                         few_shot=False, retry_backoff=0.0, max_remote_retries=0, show_progress=False,
                         max_in_flight=2)
    seeds = load_seeds(sys.argv[4:])
    Pipeline(OpenAIChatModel("stub-model", base_url=sys.argv[1], api_key="test", max_retries=0), FakeModel(weak_reply), cfg).run(seeds)
    """
)


def test_kill_9_mid_stage_then_resume_repeats_no_answered_call(tmp_path):
    ref = reference(tmp_path, num_reframes=2)
    out = tmp_path / "run"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    pkg_root = Path(__file__).resolve().parents[1]
    with StubServer(latency=0.02) as stub:
        proc = subprocess.Popen(
            [sys.executable, str(script), stub.url, str(out), str(pkg_root), *SEEDS],
            env={**os.environ, "PYTHONPATH": str(pkg_root)},
        )
        answer_prompts = lambda: sum(  # noqa: E731
            n for k, n in stub.answered.items() if json.loads(k)[-1]["content"].startswith("L")
        )
        deadline = time.time() + 60
        while answer_prompts() < 7 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run finished before the kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        cached = {
            json.loads(x)["key"]
            for x in (out / "requests.jsonl").read_bytes().splitlines()
            if x.endswith(b"}")
        }
        answered_before = sum(stub.answered.values())
        assert 0 < len(cached) <= answered_before
        calls_before = dict(stub.calls)
        res = Pipeline(client(stub), FakeModel(weak_reply), cfg(out, max_in_flight=2, num_reframes=2)).run(
            load_seeds(SEEDS)
        )
    assert res.complete and res.records == ref.records  # zero lost records
    # the resume asked every request without a cached answer once, and no cached one at all
    # (a request in flight at the kill, answered by the server but never recorded, is asked again)
    assert sum(stub.calls.values()) - sum(calls_before.values()) == len(stub.calls) - len(cached)
    assert sum(s.resumed for s in res.stats) == len(cached)
    assert not list(out.glob("*.tmp"))


def test_guided_json_sends_the_stage_schema_when_the_server_supports_it(tmp_path):
    import inspect

    if "json_schema" not in inspect.signature(OpenAIChatModel).parameters:
        pytest.skip("this zjulab-common has no guided JSON")
    with StubServer() as stub:
        model = client(stub, json_schema=True)
        Pipeline(model, FakeModel(weak_reply), cfg(tmp_path / "run")).run(load_seeds(SEEDS[:1]))
        formats = {b["messages"][-1]["content"][:12]: b.get("response_format") for b in stub.bodies}
    reframe = next(v for k, v in formats.items() if k.startswith("Here is a re"))
    assert reframe["type"] == "json_schema" and "questions" in json.dumps(reframe["json_schema"])
    answers = [v for k, v in formats.items() if k.startswith("L")]
    assert answers and all(v is None for v in answers)  # free-text answers are not constrained
    with StubServer() as stub:
        model = client(stub, json_schema=True)
        Pipeline(model, FakeModel(weak_reply), cfg(tmp_path / "off", guided_json=False)).run(
            load_seeds(SEEDS[:1])
        )
        assert all("response_format" not in b for b in stub.bodies)
