import pytest
from memtrace_toy import MILO, PARIS, record

from zjulab.memtrace import ReplayError, replay


def test_replay_reexecutes_exactly_the_downstream_operations():
    answer, trace, calls = record(drops={0: [MILO]})
    assert answer != "I adopted a cat named Milo"
    before = dict(calls)
    ext0 = trace.find_operations("extract")[0]
    res = replay(trace, {ext0.id: [MILO, "Bob: nice, I like cats"]})
    assert [trace.operation_label(o) for o in res.executed] == [
        "update#0",
        "update#1",
        "retrieve#0",
        "generate#0",
    ]
    assert res.final == "I adopted a cat named Milo"
    # the handles really ran: one more call for each re-executed step, none for extract
    assert {k: calls[k] - before[k] for k in calls} == {
        "extract": 0,
        "update": 2,
        "retrieve": 1,
        "generate": 1,
    }
    # the original trace is untouched
    assert trace.final_value == answer
    assert [trace.variables[v].label for v in res.changed] == [
        "facts@0",
        "store@1",
        "store@2",
        "retrieved@0",
        "answer@0",
    ]


def test_replay_of_a_later_step_leaves_upstream_alone():
    _, trace, calls = record()
    before = dict(calls)
    ext1 = trace.find_operations("extract")[1]
    res = replay(trace, {ext1.id: [PARIS]})
    assert [trace.operation_label(o) for o in res.executed] == ["update#1", "retrieve#0", "generate#0"]
    assert calls["extract"] == before["extract"] and calls["update"] == before["update"] + 1


def test_prompt_patch_reruns_the_patched_operation():
    answer, trace, _ = record(garble_answer=True)
    assert answer == "I don't know"
    gen = trace.find_operations("generate")[0]
    res = replay(trace, patches={gen.id: {"prompt": "Please use the memories."}})
    assert res.executed == [gen.id]
    assert res.final == "I adopted a cat named Milo"


def test_replay_errors():
    _, trace, _ = record()
    with pytest.raises(ReplayError, match="no operation"):
        replay(trace, {"op999": []})
    gen = trace.find_operations("generate")[0]
    with pytest.raises(ReplayError, match="no argument 'temperature'"):
        replay(trace, patches={gen.id: {"temperature": 0}})
    ext0 = trace.find_operations("extract")[0]
    trace.handles.pop(trace.find_operations("update")[0].id)
    with pytest.raises(ReplayError, match="no handle"):
        replay(trace, {ext0.id: []})


def test_handle_failure_is_a_replay_error():
    _, trace, _ = record()
    ret = trace.find_operations("retrieve")[0]
    with pytest.raises(ReplayError, match="raised during replay"):
        replay(trace, {trace.find_operations("update")[1].id: None})  # retrieve cannot sort None
    assert ret.id in trace.handles
