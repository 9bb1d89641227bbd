import pytest
from memtrace_toy import MILO, QUESTION, record

from zjulab.memtrace import CycleError, DanglingVariableError, Trace, TracingError


def labelled_edges(trace):
    def lab(n):
        if n in trace.variables:
            return trace.variables[n].label
        return trace.operation_label(n)

    return sorted((lab(a), lab(b)) for a, b in trace.edges())


def test_hand_written_pipeline_builds_exact_graph():
    answer, trace, _ = record()
    assert answer == "I adopted a cat named Milo"
    assert sorted(v.label for v in trace.variables.values()) == sorted(
        [
            "messages@0",
            "messages@1",
            "facts@0",
            "facts@1",
            "store@0",
            "store@1",
            "store@2",
            "question@0",
            "retrieved@0",
            "answer@0",
        ]
    )
    assert [trace.operation_label(o) for o in trace.topological_operations()] == [
        "extract#0",
        "update#0",
        "extract#1",
        "update#1",
        "retrieve#0",
        "generate#0",
    ]
    assert labelled_edges(trace) == sorted(
        [
            ("messages@0", "extract#0"),
            ("extract#0", "facts@0"),
            ("store@0", "update#0"),
            ("facts@0", "update#0"),
            ("update#0", "store@1"),
            ("messages@1", "extract#1"),
            ("extract#1", "facts@1"),
            ("store@1", "update#1"),
            ("facts@1", "update#1"),
            ("update#1", "store@2"),
            ("store@2", "retrieve#0"),
            ("question@0", "retrieve#0"),
            ("retrieve#0", "retrieved@0"),
            ("question@0", "generate#0"),
            ("retrieved@0", "generate#0"),
            ("generate#0", "answer@0"),
        ]
    )
    gen = trace.find_operations("generate")[0]
    assert gen.prompt == "Answer briefly."
    ret = trace.find_operations("retrieve")[0]
    assert ret.params == {"k": 2}
    assert trace.variables[trace.final].label == "answer@0"
    assert trace.final_value == "I adopted a cat named Milo"
    # snapshots are immutable copies
    assert trace.variables[trace.find_operations("extract")[0].outputs[0]].value[0] == MILO
    assert trace.metadata["question"] == QUESTION


def test_bipartite_queries():
    _, trace, _ = record()
    ext1 = trace.find_operations("extract")[1].id
    upd1 = trace.find_operations("update")[1].id
    assert trace.child_operations(ext1) == [upd1]
    assert trace.parent_operations(upd1) == [trace.find_operations("update")[0].id, ext1]
    assert [trace.operation_label(o) for o in trace.descendant_operations(ext1)] == [
        "update#1",
        "retrieve#0",
        "generate#0",
    ]
    assert [trace.operation_label(o) for o in trace.ancestor_operations(trace.final)] == [
        "extract#0",
        "update#0",
        "extract#1",
        "update#1",
        "retrieve#0",
        "generate#0",
    ]
    assert sorted(trace.variables[v].label for v in trace.sources()) == [
        "messages@0",
        "messages@1",
        "question@0",
        "store@0",
    ]


def test_manual_cycle_is_refused():
    t = Trace()
    a = t.add_variable("a", 1)
    b = t.add_variable("b", 2)
    t.add_operation("f", [a.id], [b.id])
    c = t.add_variable("c", 3)
    t.add_operation("g", [b.id], [c.id])
    x = t.add_variable("x")
    # x is produced by h from c; then an op from x back to a would close a cycle
    t.add_operation("h", [c.id], [x.id])
    with pytest.raises(CycleError, match="cycle"):
        t.add_operation("back", [x.id], [a.id])
    assert "back" not in [o.name for o in t.operations.values()]
    assert t.variables[a.id].producer is None  # rolled back


def test_self_loop_and_double_producer_and_dangling():
    t = Trace()
    a = t.add_variable("a", 1)
    b = t.add_variable("b", 2)
    with pytest.raises(CycleError, match="reads and writes"):
        t.add_operation("f", [a.id], [a.id])
    t.add_operation("f", [a.id], [b.id])
    with pytest.raises(TracingError, match="already produced"):
        t.add_operation("g", [a.id], [b.id])
    with pytest.raises(DanglingVariableError, match="v99"):
        t.add_operation("g", ["v99"], [])
    with pytest.raises(DanglingVariableError, match="nope"):
        t.final = "nope"
    with pytest.raises(TracingError, match="non-empty"):
        t.add_variable("", 1)


def test_versions_increase_per_name():
    t = Trace()
    assert [t.add_variable("store", i).version for i in range(3)] == [0, 1, 2]
    assert t.add_variable("other").version == 0
