"""What survives a save/load round trip, and replay that never changes the recorded trace."""

from __future__ import annotations

import dataclasses
import json

import pytest

from zjulab.memtrace import ReplayError, Tracer, load_trace, replay, save_trace


@dataclasses.dataclass
class Fact:
    text: str


def test_lossless_values_survive_and_lossy_ones_are_marked(tmp_path):
    tracer = Tracer()

    @tracer.operation("keep", outputs=("out",))
    def keep(x):
        return x

    values = {
        "str": "héllo",
        "list": [1, 2.5, None, True, "x", {"a": [1]}],
        "dict": {"k": {"n": 1}},
        "tuple": (1, 2),
        "intkeys": {1: "a"},
        "set": {"a"},
        "dataclass": Fact("Milo"),
        "nan": float("nan"),
    }
    with tracer.trace() as trace:
        for name, v in values.items():
            keep(tracer.variable(v, name))
    back = load_trace(save_trace(trace, tmp_path / "t.json", redact=None))
    by_name = {v.name: v for v in back.variables.values() if v.producer is None}
    for name in ("str", "list", "dict"):
        assert by_name[name].serializable and by_name[name].value == values[name]
    for name in ("tuple", "intkeys", "set", "dataclass", "nan"):
        assert not by_name[name].serializable, name
    assert by_name["tuple"].value == [1, 2]
    assert by_name["dataclass"].value == {"__repr__": "Fact(text='Milo')"}


def test_replay_refuses_a_value_the_file_could_not_hold(tmp_path):
    tracer = Tracer()

    @tracer.operation("first", outputs=("pair",))
    def first(x):
        return (x, x)

    @tracer.operation("second", outputs=("out",))
    def second(pair, tag):
        return f"{pair[0]}-{tag}"

    with tracer.trace() as trace:
        second(first(tracer.variable(["a"], "x")), "t")
    back = load_trace(save_trace(trace, tmp_path / "t.json", redact=None), handles={"second": second})
    sid = back.find_operations("second")[0].id
    with pytest.raises(ReplayError, match="losslessly"):
        replay(back, patches={sid: {"tag": "u"}})
    # the live trace holds the real tuple and replays
    assert replay(trace, patches={sid: {"tag": "u"}}).final == "['a']-u"


def test_replay_is_repeatable_and_leaves_the_trace_alone():
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if m != "drop"]

    @tracer.operation("grow", outputs=("facts2",))
    def grow(facts):
        facts.extend(["c", "d"])  # mutates its input in place
        return facts

    with tracer.trace() as trace:
        grow(extract(tracer.variable(["a", "drop"], "messages")))
    ext = trace.find_operations("extract")[0].id
    before = json.dumps({k: v.value for k, v in trace.variables.items()})
    gid = trace.find_operations("grow")[0].id
    # re-running grow on the recorded facts twice gives the same answer both times
    assert replay(trace, patches={gid: {}}).final == replay(trace, patches={gid: {}}).final == ["a", "c", "d"]
    one = replay(trace, {ext: ["a"]})
    two = replay(trace, {ext: ["a"]})
    assert one.final == two.final == ["a", "c", "d"]
    assert json.dumps({k: v.value for k, v in trace.variables.items()}) == before
    assert trace.variables[trace.operations[ext].outputs[0]].value == ["a"]
    # a mutated result does not leak into the trace either
    one.values[trace.variables[next(iter(trace.variables))].id].append("zzz")
    assert json.dumps({k: v.value for k, v in trace.variables.items()}) == before


def test_constant_arguments_are_snapshots():
    tracer = Tracer()
    stop = ["x"]

    @tracer.operation("filt", outputs=("kept",), params=("stop",))
    def filt(items, stop):
        return [i for i in items if i not in stop]

    with tracer.trace() as trace:
        filt(tracer.variable(["x", "y"], "items"), stop)
    stop.append("y")
    op = trace.find_operations("filt")[0]
    assert op.arg_names == ["items", "stop"] and op.args[1].const == ["x"]


# ------------------------------------------------------------------ real pipeline shapes
from zjulab.memtrace import EvidenceJudge, Gold, attribute  # noqa: E402

MILO = "Ann: my cat is called Milo"


def _wrapped_pipeline(tracer, drop=True, crash=False):
    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if not (drop and "Milo" in m)]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, facts):
        if crash:
            raise ValueError("model server returned 500")
        hit = [f for f in facts if "cat" in f]
        return hit[0].rsplit(" ", 1)[-1] if hit else "I don't know"

    @tracer.operation("pipeline")
    def pipeline(messages, question):
        return generate(question, extract(messages))

    return pipeline


def test_nested_operations_are_attributed_inside_their_wrapper():
    tracer = Tracer()
    pipeline = _wrapped_pipeline(tracer)
    with tracer.trace() as trace:
        pipeline([MILO, "Bob: hi"], "What is the cat called?")
    gold = Gold("Milo", (MILO,))
    final = trace.variables[trace.final]
    assert final.producer == trace.find_operations("pipeline")[0].id
    assert trace.variables[trace.answer_var].producer == trace.find_operations("generate")[0].id
    # replaying a fixed extract changes the wrapper's answer too
    ext = trace.find_operations("extract")[0].id
    assert replay(trace, {ext: [MILO, "Bob: hi"]}).final == "Milo"
    att = attribute(trace, gold, EvidenceJudge())
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["extract#0"]
    assert att.verified and att.modes == ["information_loss"]


def test_a_crashed_final_operation_is_a_failure_with_its_traceback(tmp_path):
    tracer = Tracer()
    pipeline = _wrapped_pipeline(tracer, drop=False, crash=True)
    with tracer.trace() as trace, pytest.raises(ValueError):
        pipeline([MILO], "What is the cat called?")
    gold = Gold("Milo", (MILO,))
    att = attribute(trace, gold, EvidenceJudge())
    assert att.failed and att.crashed and att.modes == ["exception"]
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["generate#0"]
    assert "model server returned 500" in att.traceback and "Traceback" in att.traceback
    assert att.summary().startswith("crashed: generate#0")
    # the same survives a save/load round trip
    back = load_trace(save_trace(trace, tmp_path / "t.json"))
    again = attribute(back, gold, EvidenceJudge())
    assert again.crashed and "model server returned 500" in again.traceback
    from zjulab.memtrace import last_operation

    assert last_operation(trace, gold).failed


def test_a_crash_after_a_correct_looking_step_is_not_correct():
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return list(messages)

    @tracer.operation("generate", outputs=("answer",))
    def generate(facts):
        raise TimeoutError("slow")

    with tracer.trace() as trace, pytest.raises(TimeoutError):
        generate(extract(["Milo"]))  # the earlier output holds the gold answer
    att = attribute(trace, Gold("Milo"), EvidenceJudge())
    assert att.failed and att.crashed


def test_default_arguments_are_recorded_and_patchable():
    tracer = Tracer()

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, facts, prompt="Answer in one word.", k=1):
        return f"{prompt}|{k}|{facts[0]}"

    with tracer.trace() as trace:
        generate("q?", tracer.variable(["Milo"], "facts"))
    op = trace.find_operations("generate")[0]
    assert op.prompt == "Answer in one word." and op.params == {"prompt": "Answer in one word.", "k": 1}
    res = replay(trace, patches={op.id: {"prompt": "Be brief.", "k": 2}})
    assert res.final == "Be brief.|2|Milo"
    assert replay(trace, patches={op.id: {}}).final == "Answer in one word.|1|Milo"


# ------------------------------------------------------------------ provenance beyond identity
def test_in_place_update_returning_none_links_the_new_store_state():
    tracer = Tracer()

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m for m in messages if "hi" not in m]

    @tracer.operation("update")
    def update(store, facts):
        store.extend(facts)  # Mem0-style: mutate the store, return nothing

    @tracer.operation("retrieve", outputs=("hits",))
    def retrieve(store, query):
        return [m for m in store if "cat" in m]

    store = []
    with tracer.trace() as trace:
        tracer.variable(store, "store")
        update(store, extract([MILO, "Bob: hi"]))
        retrieve(store, "cat?")
    ret = trace.find_operations("retrieve")[0]
    upd = trace.find_operations("update")[0]
    assert upd.id in trace.parent_operations(ret.id)  # retrieve reads the updated store
    assert trace.find_operations("extract")[0].id in trace.ancestor_operations(ret.id)
    new_store = next(trace.variables[v] for v in upd.outputs if trace.variables[v].name == "store")
    assert new_store.version == 1 and new_store.value == [MILO]
    # replay: a corrected extract flows through the in-place update into retrieve
    ext = trace.find_operations("extract")[0].id
    assert replay(trace, {ext: [MILO, "Ann: my dog is called Rex, not a cat"]}).final == [
        MILO,
        "Ann: my dog is called Rex, not a cat",
    ]
    assert store == [MILO]  # the user's object is not touched by replay


def test_a_container_built_from_recorded_values_links_to_all_of_them():
    tracer = Tracer()

    @tracer.operation("search", outputs=("hits",))
    def search(q):
        return ["Ann: my cat is called Milo", "Ann: I live in Oslo"]

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m.upper() for m in messages]

    @tracer.operation("generate", outputs=("answer",))
    def generate(context):
        return context[0]

    with tracer.trace() as trace:
        hits = search("cat")
        facts = extract(["Ann: a fact"])
        generate(hits + facts[:1])
    gen = trace.find_operations("generate")[0]
    parents = {trace.operations[p].name for p in trace.parent_operations(gen.id)}
    assert parents == {"search", "extract"}


def test_an_interned_literal_is_no_link():
    tracer = Tracer()

    @tracer.operation("check", outputs=("ok",))
    def check(x):
        return "yes"

    @tracer.operation("report", outputs=("out",))
    def report(flag, text):
        return f"{flag}:{text}"

    with tracer.trace() as trace:
        check(tracer.variable(["a"], "x"))
        report("yes", "unrelated")  # the same interned object as check's return value
    rep = trace.find_operations("report")[0]
    assert trace.parent_operations(rep.id) == []


def _paraphrase_pipeline(tracer, k=0):
    EV = "Priya: I am a nurse at St Mary's hospital"

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages):
        return [m.replace("Priya: I am", "Priya is") for m in messages]  # paraphrases

    @tracer.operation("retrieve", outputs=("hits",))
    def retrieve(facts, question):
        return facts[k : k + 1]  # k=1: a retrieval fault

    @tracer.operation("generate", outputs=("answer",))
    def generate(question, hits):
        return "a nurse" if any("nurse" in h for h in hits) else "I don't know"

    with tracer.trace() as trace:
        generate("What is Priya's job?", retrieve(extract([EV, "Priya: I like tea"]), "job?"))
    return trace, Gold("nurse", (EV,), "What is Priya's job?")


def test_a_paraphrasing_extract_is_not_blamed_for_a_retrieval_fault():
    trace, gold = _paraphrase_pipeline(Tracer(), k=1)
    att = attribute(trace, gold, EvidenceJudge())
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["retrieve#0"]


def test_semantic_matching_with_an_encoder():
    from zjulab.memtrace.judges import EvidenceJudge as EJ

    class Table:  # a test encoder: two texts are similar when they share their last four words
        def encode(self, texts, batch_size=32):
            import zlib

            import numpy as np

            out = np.zeros((len(texts), 256), dtype="float32")
            for i, t in enumerate(texts):
                out[i, zlib.crc32(" ".join(t.split()[-4:]).encode()) % 256] = 1.0
            return out

    judge = EJ(threshold=1.0, encoder=Table())
    assert judge._similar("x nurse at St Mary's", ["Priya works as nurse at St Mary's"])
    assert not judge._similar("x nurse at St Mary's", ["Priya likes tea"])
    trace, gold = _paraphrase_pipeline(Tracer(), k=1)
    att = attribute(trace, gold, judge)
    assert [trace.operation_label(o) for o in att.decisive_ops] == ["retrieve#0"]
