import asyncio
import itertools
import threading

import pytest
from memtrace_toy import record

from zjulab.memtrace import Tracer, TracingError


def test_disabled_tracer_records_nothing_and_returns_plain_results():
    tracer = Tracer(enabled=False)
    answer, trace, calls = record(tracer)
    assert trace is None
    assert answer == "I adopted a cat named Milo"
    assert calls == {"extract": 2, "update": 2, "retrieve": 1, "generate": 1}


def test_disabled_tracer_leaves_functions_unwrapped():
    def f(xs):
        return xs

    assert Tracer(enabled=False).operation("f")(f) is f
    assert Tracer().operation("f")(f) is not f


def test_calls_outside_a_trace_are_not_recorded():
    tracer = Tracer()

    @tracer.operation("double")
    def double(xs):
        return [2 * x for x in xs]

    assert double([1, 2]) == [2, 4]
    assert tracer.current() is None
    with tracer.trace() as t:
        double([3])
        assert tracer.current() is t
    assert len(t.operations) == 1
    assert tracer.current() is None


def test_threads_record_separate_traces():
    tracer = Tracer()

    @tracer.operation("step")
    def step(xs, tag):
        return [*xs, tag]

    traces = {}
    barrier = threading.Barrier(4)

    def worker(tag):
        with tracer.trace(tag) as t:
            out = [tag]
            for _ in range(20):
                barrier.wait() if _ == 0 else None
                out = step(out, tag)
        traces[tag] = t

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for tag, t in traces.items():
        assert len(t.operations) == 20
        assert t.final_value == [tag] * 21
        # the same tag object is one source variable, read by all 20 steps
        assert sorted(repr(t.variables[v].value) for v in t.sources()) == sorted([repr([tag]), repr(tag)])


def test_asyncio_tasks_record_separate_traces():
    tracer = Tracer()

    @tracer.operation("fetch")
    async def fetch(xs, n):
        await asyncio.sleep(0)
        return [*xs, n]

    async def job(n):
        with tracer.trace(f"job{n}") as t:
            out = [n]
            for _ in range(5):
                out = await fetch(out, n)
        return t

    async def main():
        return await asyncio.gather(*(job(n) for n in range(3)))

    traces = asyncio.run(main())
    for n, t in enumerate(traces):
        assert len(t.operations) == 5
        assert t.final_value == [n] * 6
        # chained: each fetch reads the previous one's output
        ops = [t.operations[o] for o in t.topological_operations()]
        for a, b in itertools.pairwise(ops):
            assert a.outputs[0] in b.inputs


def test_nested_operations_record_parent_and_tuple_outputs_split():
    tracer = Tracer()

    @tracer.operation("inner")
    def inner(xs):
        return [x + 1 for x in xs]

    @tracer.operation("outer", outputs=("evens", "odds"))
    def outer(xs):
        ys = inner(xs)
        return [y for y in ys if y % 2 == 0], [y for y in ys if y % 2]

    with tracer.trace() as t:
        _evens, _odds = outer([1, 2, 3])
    inner_op = t.find_operations("inner")[0]
    outer_op = t.find_operations("outer")[0]
    assert inner_op.parent == outer_op.id
    assert outer_op.output_mode == "tuple"
    assert [t.variables[v].label for v in outer_op.outputs] == ["evens@0", "odds@0"]
    assert [t.variables[v].value for v in outer_op.outputs] == [[2, 4], [3]]
    assert t.final_value == [3]


def test_context_manager_operation_and_explicit_variable():
    tracer = Tracer()
    with tracer.trace() as t:
        notes = tracer.variable(["a", "b"], "notes", "message")
        with tracer.operation(
            "summarise", inputs={"notes": notes, "style": "short"}, params=("style",), prompt="Summarise."
        ) as op:
            op.set_output(" & ".join(notes), "summary")
    summ = t.find_operations("summarise")[0]
    assert [t.variables[v].label for v in summ.inputs] == ["notes@0"]
    assert t.variables[summ.outputs[0]].value == "a & b"
    assert summ.prompt == "Summarise."
    assert summ.params == {"style": "short"}
    assert t.variables[summ.inputs[0]].kind == "message"


def test_exceptions_are_recorded_and_reraised():
    tracer = Tracer()

    @tracer.operation("boom")
    def boom(xs):
        raise RuntimeError("bad step")

    with tracer.trace() as t, pytest.raises(RuntimeError, match="bad step"):
        boom([1])
    op = t.find_operations("boom")[0]
    assert "bad step" in op.error
    (err,) = [t.variables[v] for v in op.outputs]
    assert err.kind == "error" and err.value == {"error": "RuntimeError('bad step')", "type": "RuntimeError"}
    assert 'raise RuntimeError("bad step")' in op.meta["traceback"]
    assert t.final == err.id  # the run's result is the failure, not an earlier output


def test_snapshots_do_not_follow_later_mutation():
    tracer = Tracer()

    @tracer.operation("make")
    def make(xs):
        return list(xs)

    with tracer.trace() as t:
        out = make([1])
        out.append(99)  # mutated after recording
    assert t.final_value == [1]


def test_bad_arguments():
    with pytest.raises(TracingError, match="snapshot"):
        Tracer(snapshot="copy")
    with pytest.raises(TracingError, match="non-empty"):
        Tracer().operation("")
