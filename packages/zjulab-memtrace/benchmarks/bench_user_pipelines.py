"""Attribution on pipelines written the way users write them, and the cost of tracing them.

    python benchmarks/bench_user_pipelines.py [--quick] [--locomo PATH] [--repeats N]

The three pipelines of ``user_pipelines.py`` (a Mem0-style agent with an in-place store and a
traced root wrapper, a RAG index of paraphrasing chunk summaries, a long-context compressor) are
instrumented only with ``@tracer.operation``. LoCoMo questions (categories 1 and 4, one evidence
turn holding the gold answer) run through each pipeline clean; where the clean answer is right,
each planted fault runs in turn and becomes a case when it makes the answer wrong. Every method
is scored on operation-level (top-1) accuracy: the decisive set is exactly the planted
operation. "Verified" is checked too: how many attributions say "verified by replay", and how
many of those blame the planted operation.

Tracing overhead: the same pipeline object code with a disabled tracer (the decorators return the
plain functions) and with an enabled one, on the same inputs in the same process, interleaved;
the ratio is traced / untraced wall time (best of ``--repeats``). Saving the trace is timed
separately (redacted, the default, and with ``redact=None``).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).parent))

from user_pipelines import PIPELINES, fault_plans

from zjulab.common.testing import HashingEncoder
from zjulab.memtrace import EvidenceJudge, Gold, attribute, save_trace
from zjulab.memtrace.bench import BenchCase, default_methods, evaluate
from zjulab.memtrace.locomo import find_locomo, load_locomo
from zjulab.memtrace.matching import check_answer


def question_pool(path: Path, n: int, seed: int = 0) -> list[tuple[Gold, list[list[str]], int]]:
    """``(gold, three sessions around the evidence, index of the evidence session)``."""
    pool = []
    for conv in load_locomo(path):
        for qa in conv.qa:
            if qa.category not in (1, 4) or len(qa.evidence) != 1:
                continue
            turn = conv.turn(qa.evidence[0])
            if turn is None or not check_answer(turn.text, qa.answer, qa.question).correct:
                continue
            numbers = list(conv.sessions)
            pos = numbers.index(turn.session)
            lo = max(0, min(pos - 1, len(numbers) - 3))
            chosen = numbers[lo : lo + 3]
            sessions = [[t.line for t in conv.sessions[s]] for s in chosen]
            pool.append((Gold(qa.answer, (turn.line,), qa.question), sessions, chosen.index(turn.session)))
    random.Random(seed).shuffle(pool)
    return pool[:n]


def _summary_label(trace, evidence: str) -> str | None:
    for op in trace.find_operations("summarise"):
        turns = trace.variables[op.inputs[0]].value if op.inputs else []
        if evidence in turns:
            return trace.operation_label(op.id)
    return None


def build_cases(pool, encoder, controls_per_pipeline: int = 10) -> list[BenchCase]:
    cases, controls = [], []
    for qi, (gold, sessions, ev_idx) in enumerate(pool):
        evidence = gold.evidence[0]
        for name, cls in PIPELINES.items():
            clean, reference = cls(encoder).run(sessions, gold.question)
            if not gold.is_correct(clean):
                continue
            if sum(c.pipeline == name for c in controls) < controls_per_pipeline:
                controls.append(
                    BenchCase(
                        f"q{qi}/{name}/control", name, gold, sessions, None, None, None, reference, reference
                    )
                )
            for bugs, label, mode in fault_plans(name, evidence, ev_idx, len(sessions), gold.answer):
                answer, trace = cls(encoder, bugs).run(sessions, gold.question)
                if gold.is_correct(answer):
                    continue  # masked: no failure to attribute
                if label == "summarise":
                    label = _summary_label(trace, evidence)
                    if label is None:
                        continue
                kind = next(iter(bugs))
                cases.append(
                    BenchCase(
                        f"q{qi}/{name}/{kind}", name, gold, sessions, bugs, label, mode, trace, reference
                    )
                )  # type: ignore[arg-type]
    return cases + controls


def overhead(pool, encoder, repeats: int) -> list[tuple[str, int, float, float, int, float, float]]:
    """Per pipeline: (name, runs, untraced s, traced s, operations, save redacted s, save raw s)."""
    rows = []
    for name, cls in PIPELINES.items():
        plain, traced = cls(encoder, enabled=False), cls(encoder, enabled=True)
        inputs = [(sessions, gold.question) for gold, sessions, _ in pool]
        for s, q in inputs:  # warm the encoder caches of both, so only tracing differs
            plain.run(s, q)
            traced.run(s, q)
        best_plain = best_traced = float("inf")
        n_ops = 0
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            for s, q in inputs:
                plain.run(s, q)
            t1 = time.perf_counter()
            traces = [traced.run(s, q)[1] for s, q in inputs]
            t2 = time.perf_counter()
            best_plain, best_traced = min(best_plain, t1 - t0), min(best_traced, t2 - t1)
            n_ops = sum(len(t.operations) for t in traces)
        with TemporaryDirectory() as d:
            t0 = time.perf_counter()
            for i, t in enumerate(traces):
                save_trace(t, Path(d) / f"r{i}.json")
            t1 = time.perf_counter()
            for i, t in enumerate(traces):
                save_trace(t, Path(d) / f"p{i}.json", redact=None)
            t2 = time.perf_counter()
        rows.append((name, len(inputs), best_plain, best_traced, n_ops, t1 - t0, t2 - t1))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 questions instead of 60")
    ap.add_argument("--locomo")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    encoder = HashingEncoder(512)
    pool = question_pool(find_locomo(args.locomo), 20 if args.quick else 60)
    t0 = time.perf_counter()
    cases = build_cases(pool, encoder)
    t1 = time.perf_counter()
    methods = {
        **default_methods(),
        "iterative / evidence judge + encoder": lambda c: attribute(
            c.trace, c.gold, EvidenceJudge(encoder=encoder)
        ),
    }
    verified: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def on_case(case, done):
        if case.is_control:
            return
        for name, att in done.items():
            if att.verified:
                labels = {case.trace.operation_label(d.op_id) for d in att.decisive}
                verified[name][0] += 1
                verified[name][1] += int(labels == {case.gold_op})

    report = evaluate(cases, methods, on_case)
    t2 = time.perf_counter()
    faulted = [c for c in cases if not c.is_control]
    print(
        f"{len(pool)} questions; cases: {report.counts} ({len(faulted)} faulted); built in {t1 - t0:.1f} s, scored in {t2 - t1:.1f} s\n"
    )
    print(report.table())
    print("\n| method | said verified | verified and right |\n|---|---|---|")
    for name in methods:
        n, ok = verified[name]
        print(f"| {name} | {n}/{len(faulted)} | {ok}/{n} |")
    print("\nevidence judge by pipeline / planted mode:\n")
    print(report.group_table("iterative / evidence judge"))
    wrong = defaultdict(int)
    for c in faulted:
        att = methods["iterative / evidence judge"](c)
        labels = sorted(c.trace.operation_label(d.op_id) for d in att.decisive)
        if labels != [c.gold_op]:
            wrong[f"{c.pipeline}: planted {c.gold_op} ({c.gold_mode}) -> blamed {labels}"] += 1
    if wrong:
        print("\nevidence judge misses:")
        for k, n in sorted(wrong.items()):
            print(f"  {n} x {k}")
    print(
        "\n| pipeline | runs | untraced | traced | ratio | operations | per operation | save (redacted) | save (raw) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, n, plain, traced, ops, save_red, save_raw in overhead(pool, encoder, args.repeats):
        per_op = (traced - plain) / ops * 1e6
        print(
            f"| {name} | {n} | {plain * 1e3:.1f} ms | {traced * 1e3:.1f} ms | x{traced / plain:.2f} | {ops} | "
            f"{per_op:.0f} µs | {save_red * 1e3:.0f} ms | {save_raw * 1e3:.0f} ms (x{save_red / save_raw:.1f}) |"
        )


if __name__ == "__main__":
    main()
