from collections import Counter

from zjulab.common.testing import HashingEncoder
from zjulab.memtrace import BenchConfig
from zjulab.memtrace.bench import build_memtracebench, default_methods, evaluate, fault_plans, stratified


def test_fault_plans_labels():
    plans = fault_plans("mem0", "A: x", 1, 3, "x")
    assert [(f.op, f.kind, lab) for f, lab in plans] == [
        ("extract", "drop", "extract#1"),
        ("extract", "corrupt", "extract#1"),
        ("update", "overwrite", "update#2"),
        ("retrieve", "near_miss", "retrieve#0"),
        ("generate", "ignore_evidence", "generate#0"),
    ]
    assert fault_plans("mem0", "A: x", 2, 3, "x")[2][1] == "update#2"  # last session: same update
    assert [lab for _, lab in fault_plans("rag", "A: x", 0, 3, "x")] == [
        "chunk#0",
        "retrieve#0",
        "generate#0",
    ]
    assert [f.mode for f, _ in fault_plans("long_context", "A: x", 0, 3, "x")] == [
        "information_loss",
        "incorrect_extraction",
        "generation_error",
    ]


def test_small_memtracebench_from_locomo(shared_data):
    cfg = BenchConfig(max_questions=6, controls_per_pipeline=2)
    cases = build_memtracebench(shared_data / "locomo" / "locomo10.json", HashingEncoder(512), cfg)
    faulted = [c for c in cases if not c.is_control]
    assert len(faulted) >= 20
    assert {c.pipeline for c in faulted} == {"mem0", "rag", "long_context"}
    controls = [c for c in cases if c.is_control]
    assert {c.pipeline for c in controls} == {"mem0", "rag", "long_context"}
    assert all(Counter(c.pipeline for c in controls)[p] <= 2 for p in ("mem0", "rag", "long_context"))
    for c in faulted:
        assert not c.gold.is_correct(c.trace.final_value)  # every fault flipped the answer
        assert c.gold.is_correct(c.reference.final_value)
        assert c.gold_op in {c.trace.operation_label(o) for o in c.trace.operations}
    report = evaluate(cases, default_methods())
    oracle = report.scores["iterative / oracle judge"]
    assert oracle.op_accuracy == 1.0 and oracle.mode_accuracy == 1.0
    assert oracle.controls_correct == oracle.n_controls == len(controls)
    last = report.scores["last operation"]
    gen_share = sum(c.gold_op == "generate#0" for c in faulted) / len(faulted)
    assert abs(last.op_accuracy - gen_share) < 1e-9  # last-op is right exactly on generation faults
    assert "| iterative / oracle judge |" in report.table()
    sub = stratified(cases, 5)
    assert len(sub) == 5 and len({(c.pipeline, c.gold_mode) for c in sub}) == 5
    assert Counter(c.pipeline for c in faulted)["mem0"] > 0
