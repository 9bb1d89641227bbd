"""Attribution on shapes agent code has: message objects, and a crash caused by an earlier step."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from zjulab.memtrace import EvidenceJudge, Gold, Tracer, attribute, load_trace, save_trace
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
