"""Attribution on shapes agent code has: message objects, and a crash caused by an earlier step."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from zjulab.memtrace import EvidenceJudge, Gold, Tracer, attribute, load_trace, replay, save_trace
from zjulab.memtrace.matching import carries, flatten_text

REX = "My dog is called Rex"


@dataclass
class Message:
    role: str
    text: str


class Document:  # a plain object with attributes, as retrieval libraries return them
    def __init__(self, page_content: str, metadata: dict):
        self.page_content = page_content
        self.metadata = metadata
        self._cache = "not user data"


def test_evidence_is_seen_inside_message_and_document_objects():
    assert list(flatten_text([Message("user", REX)])) == ["user", REX]
    assert list(flatten_text(Document("chunk", {"page": 3}))) == ["chunk", "3"]
    assert carries([Message("user", REX)], REX)
    assert not carries([Message("user", "My cat is called Milo")], REX)
    node = Document("x", {})
    node.self_ref = node  # a cycle ends instead of recursing forever
    assert list(flatten_text(node)) == ["x"]


def _agent(tracer: Tracer, *, drop: bool, crash_on_empty: bool):
    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m.text for m in messages if not (drop and "dog" in m.text)]

    @tracer.operation("update")
    def update(store, facts):  # mutates the store, returns nothing
        for f in facts:
            store[f"m{len(store)}"] = f

    @tracer.operation("retrieve", outputs=("hits",))
    def retrieve(store, query):
        return [v for v in store.values() if any(w in v for w in query.split())]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, hits):
        if not hits and crash_on_empty:
            raise RuntimeError("empty context")
        return hits[0].rsplit(" ", 1)[-1] if hits else "I don't know"

    @tracer.operation("pipeline")
    def pipeline(messages, question):
        store: dict = {}
        update(store, extract(messages))
        return generate(question, retrieve(store, question))

    return pipeline


@pytest.mark.parametrize("crash_on_empty", [False, True])
def test_a_lost_fact_in_message_objects_is_blamed_on_extract(crash_on_empty):
    tracer = Tracer()
    pipeline = _agent(tracer, drop=True, crash_on_empty=crash_on_empty)
    msgs = [Message("user", REX), Message("user", "I live in Oslo")]
    with tracer.trace() as trace:
        try:
            pipeline(msgs, "dog name")
        except RuntimeError:
            pass
    att = attribute(trace, Gold("Rex", evidence=(REX,)), EvidenceJudge())
    assert att.failed
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["extract#0"]
    assert att.modes == ["information_loss"] and att.verified
    assert att.crashed is crash_on_empty
    if crash_on_empty:  # the crash stays on record, but the step that starved it is decisive
        assert "empty context" in att.traceback
        assert att.summary().startswith("decisive: extract#0") and "crashed in" in att.summary()


def test_a_crash_with_everything_it_needed_is_still_its_own(tmp_path):
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return list(messages)

    @tracer.operation("generate", outputs=("answer",))
    def generate(facts):
        raise ValueError("model server returned 500")

    with tracer.trace() as trace, pytest.raises(ValueError):
        generate(extract([REX]))
    att = attribute(trace, Gold("Rex", evidence=(REX,)), EvidenceJudge())
    assert att.crashed and [trace.operation_label(o) for o in att.decisive_ops] == ["generate#0"]
    assert att.modes == ["exception"] and not att.verified
    assert att.summary().startswith("crashed: generate#0")
    back = attribute(load_trace(save_trace(trace, tmp_path / "t.json")), Gold("Rex", (REX,)), EvidenceJudge())
    assert back.crashed and back.decisive_ops == att.decisive_ops


def test_the_summary_line_is_redacted():
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd"
    tracer = Tracer()

    @tracer.operation("generate", outputs=("answer",))
    def generate(facts):
        raise RuntimeError(f"401 for Authorization: Bearer {key}")

    with tracer.trace() as trace, pytest.raises(RuntimeError):
        generate(tracer.variable([REX], "facts"))
    att = attribute(trace, Gold("Rex", (REX,)), EvidenceJudge())
    assert att.crashed and "401" in att.summary()
    assert key not in att.summary() and "AbCdEfGhIj" not in att.summary()


def _streaming(tracer: Tracer, drop: bool):
    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if not (drop and "dog" in m)]

    @tracer.operation("generate", outputs=("tokens",))
    def generate(question, facts):  # streams its answer word by word
        hit = [f for f in facts if "dog" in f]
        yield from (hit[0].split()[-1:] if hit else ["I", "don't", "know"])

    @tracer.operation("noise")
    def noise(x):
        return x

    @tracer.operation("answer", outputs=("answer",))
    def answer(question, facts):
        words = []
        for w in generate(question, facts):
            words.append(w)
            noise(w)  # the consumer's own steps between items
        return " ".join(words)

    return extract, answer


def test_a_streaming_step_records_what_it_yielded_and_replays(tmp_path):
    tracer = Tracer()
    extract, answer = _streaming(tracer, drop=True)
    with tracer.trace() as trace:
        assert answer("What is the dog called?", extract([REX, "Bob: hi"])) == "I don't know"
    gen = trace.find_operations("generate")[0]
    assert trace.variables[gen.outputs[0]].value == ["I", "don't", "know"]
    ans = trace.find_operations("answer")[0]
    assert gen.parent == ans.id  # it ran inside answer
    assert all(trace.operations[o.id].parent == ans.id for o in trace.find_operations("noise"))
    # replaying generate re-runs the generator and records its items, not a generator object
    from zjulab.memtrace import replay

    fixed = replay(trace, {trace.find_operations("extract")[0].id: [REX, "Bob: hi"]})
    assert fixed.final == "Rex"
    rep = replay(trace, {}, patches={gen.id: {}})
    assert rep.executed[0] == gen.id and rep.values[gen.outputs[0]] == ["I", "don't", "know"]
    att = attribute(trace, Gold("Rex", (REX,)), EvidenceJudge())
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["extract#0"] and att.verified
    back = load_trace(save_trace(trace, tmp_path / "t.json"))
    assert back.variables[gen.outputs[0]].value == ["I", "don't", "know"]


def test_a_stream_stopped_early_or_failing_is_recorded():
    tracer = Tracer()

    @tracer.operation("generate", outputs=("tokens",))
    def generate(n):
        for i in range(n):
            if i == 3:
                raise RuntimeError("stream broke")
            yield f"w{i}"

    with tracer.trace() as trace:
        stream = generate(10)
        assert next(stream) == "w0" and next(stream) == "w1"
        stream.close()  # the consumer stops after two items
        with pytest.raises(RuntimeError, match="stream broke"):
            list(generate(10))
    first, second = trace.find_operations("generate")
    assert trace.variables[first.outputs[0]].value == ["w0", "w1"] and first.error is None
    assert second.error is not None and "stream broke" in second.meta["traceback"]
    with tracer.trace() as again:
        list(generate(2))
    assert [o.parent for o in again.operations.values()] == [None]


def _async_agent(tracer: Tracer):
    import asyncio

    @tracer.operation("extract", outputs=("facts",))
    async def extract(messages):
        await asyncio.sleep(0)
        return [m for m in messages if "dog" not in m]

    @tracer.operation("generate", outputs=("tokens",))
    async def generate(question, facts):  # an async stream
        hit = [f for f in facts if "dog" in f]
        for w in hit[0].split()[-1:] if hit else ["I", "don't", "know"]:
            await asyncio.sleep(0)
            yield w

    @tracer.operation("answer", outputs=("answer",))
    async def answer(question, facts):
        return " ".join([w async for w in generate(question, facts)])

    async def run():
        with tracer.trace() as trace:
            await answer("What is the dog called?", await extract([REX, "Bob: hi"]))
        return trace

    return run


def test_async_steps_and_async_streams_are_recorded_and_replayed():
    import asyncio

    trace = asyncio.run(_async_agent(Tracer())())
    gen = trace.find_operations("generate")[0]
    assert trace.variables[gen.outputs[0]].value == ["I", "don't", "know"]
    assert trace.final_value == "I don't know"
    ext = trace.find_operations("extract")[0]
    # replay awaits the async steps (it put a coroutine object in the answer's place)
    assert replay(trace, {ext.id: [REX, "Bob: hi"]}).final == "Rex"

    async def from_async_code():  # replay called inside a running event loop
        return replay(trace, {ext.id: [REX]}).final

    assert asyncio.run(from_async_code()) == "Rex"
    att = attribute(trace, Gold("Rex", (REX,)), EvidenceJudge())
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["extract#0"] and att.verified
