"""Five-task benchmark on the synthetic set: baseline vs. trained model, with throughput.

    python benchmarks/bench_five_tasks.py --quick     # tiny random models, ~1 min on 2 cores
    python benchmarks/bench_five_tasks.py             # embedded MiniLM-L6 + SmolLM2-135M (LoRA)
    python benchmarks/bench_five_tasks.py --llm       # also the LLM variants (embedded chat model)

Every figure comes from one process: each trained model is compared with the baseline of its
task run just before it ("vs base" = trained headline metric / baseline headline metric).
The paper's U-NEED numbers are printed for orientation only: they are on a different data set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import asdict

import torch

from zjulab.crs.report import HEADLINE, format_table
from zjulab.crs.samples import TASKS
from zjulab.crs.suite import SuiteConfig, embedded_factories, five_task_table, run_suite, tiny_factories
from zjulab.crs.synthetic import synthetic_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny random models, small run (CI)")
    ap.add_argument(
        "--steps", type=int, default=0, help="steps per trained model (default 40 quick / 60 full)"
    )
    ap.add_argument(
        "--max-eval", type=int, default=0, help="test samples per task (default 64 quick / 96 full)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--llm", action="store_true", help="add the LLM variants with the embedded chat model")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="tasks to run")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

    start = time.perf_counter()
    corpus = synthetic_corpus()
    enc_f, lm_f = tiny_factories() if args.quick else embedded_factories(args.device)
    if args.quick:
        cfg = SuiteConfig.tiny(
            steps=args.steps or 40, max_eval=args.max_eval or 64, device=args.device, tasks=tuple(args.tasks)
        )
    else:
        cfg = SuiteConfig(
            steps=args.steps or 60, max_eval=args.max_eval or 96, device=args.device, tasks=tuple(args.tasks)
        )
    chat = None
    if args.llm:
        from zjulab.common.defaults import default_chat_model

        chat = default_chat_model(device=args.device, max_new_tokens=96)
    results = run_suite(corpus, enc_f, lm_f, config=cfg, chat_model=chat)

    rows = []
    for task in cfg.tasks:
        base = next(
            (r for r in results if r.task == task and r.kind == "baseline" and r.system != "popularity"), None
        )
        for r in results:
            if r.task != task or r is base:
                continue
            metric = HEADLINE[task][0]
            ratio = (
                r.metrics[metric] / base.metrics[metric] if base and base.metrics[metric] else float("nan")
            )
            rows.append(
                {
                    "task": task,
                    "system": r.system,
                    "vs baseline": base.system if base else "-",
                    "metric": metric,
                    "metric / baseline": ratio,
                    "infer speed / baseline": (r.infer_examples_per_s / base.infer_examples_per_s)
                    if base
                    else float("nan"),
                }
            )
    mode = "quick (tiny random models)" if args.quick else "full (embedded MiniLM-L6 + SmolLM2-135M)"
    print(
        f"# zjulab-crs five-task benchmark, {mode}, {platform.processor() or platform.machine()}, "
        f"torch threads {torch.get_num_threads()}, steps {cfg.steps}, test samples <= {cfg.max_eval}\n"
    )
    print(five_task_table(results))
    print()
    print(format_table(rows, floatfmt=".3f"))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"config": asdict(cfg), "results": [asdict(r) for r in results]}, fh, indent=1)


if __name__ == "__main__":
    main()
