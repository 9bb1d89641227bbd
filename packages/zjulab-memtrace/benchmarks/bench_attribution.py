"""Reduced MemTraceBench: attribution accuracy of iterative attribution and baselines.

    python benchmarks/bench_attribution.py [--quick] [--limit N] [--locomo PATH]

Builds the benchmark from LoCoMo (three reference pipelines with HashingEncoder retrieval,
planted faults of known root cause, unfaulted controls), then scores operation-level and
mode-level accuracy of: iterative attribution with the oracle (reference-run) judge and with
the evidence judge, the last-operation heuristic, and a random operation. With --limit N it
also scores iterative attribution and the all-at-once baseline with the embedded chat model
(SmolLM2-135M-Instruct) on N stratified faulted cases.
"""

from __future__ import annotations

import argparse
import time

from zjulab.common.testing import HashingEncoder
from zjulab.memtrace import BenchConfig
from zjulab.memtrace.bench import build_memtracebench, chat_methods, default_methods, evaluate, stratified
from zjulab.memtrace.locomo import find_locomo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 questions instead of 60")
    ap.add_argument(
        "--limit", type=int, default=0, help="faulted cases for the embedded chat-model judge (0: skip)"
    )
    ap.add_argument("--locomo")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cfg = BenchConfig(max_questions=20 if args.quick else 60)
    cases = build_memtracebench(find_locomo(args.locomo), HashingEncoder(512), cfg)
    t1 = time.perf_counter()
    report = evaluate(cases, default_methods(cfg.seed))
    t2 = time.perf_counter()
    faulted = [c for c in cases if not c.is_control]
    print(f"cases: {len(faulted)} faulted + {len(cases) - len(faulted)} controls {report.counts}")
    print(f"build {t1 - t0:.1f} s, scoring 4 methods {t2 - t1:.1f} s\n")
    print(report.table())
    base = report.scores["random operation"].op_accuracy or 1e-9
    for name, s in report.scores.items():
        print(f"  {name}: operation accuracy x{s.op_accuracy / base:.2f} of random")
    print("\nper pipeline / planted mode, iterative with the evidence judge:")
    print(report.group_table("iterative / evidence judge"))
    print("\nper pipeline / planted mode, last-operation heuristic:")
    print(report.group_table("last operation"))

    if args.limit > 0:
        from zjulab.common.defaults import default_chat_model

        model = default_chat_model(device=args.device, max_new_tokens=160)
        sub = stratified(cases, args.limit)
        methods = {**chat_methods(model)}
        full = default_methods(cfg.seed)
        methods["iterative / oracle judge"] = full["iterative / oracle judge"]
        methods["last operation"] = full["last operation"]
        t3 = time.perf_counter()

        def show(case, atts):
            got = {k: [case.trace.operation_label(o) for o in a.decisive_ops] for k, a in atts.items()}
            print(f"  [{time.perf_counter() - t3:5.0f} s] {case.id} gold={case.gold_op}: {got}", flush=True)

        chat_report = evaluate(sub, methods, on_case=show)
        dt = time.perf_counter() - t3
        print(
            f"\nembedded chat model {model.model_id} on {len(sub)} stratified faulted cases ({dt:.0f} s, "
            f"{model.usage.calls} model calls):"
        )
        print(chat_report.table())


if __name__ == "__main__":
    main()
