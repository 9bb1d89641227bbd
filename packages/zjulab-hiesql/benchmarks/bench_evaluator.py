"""Evaluator throughput on SParC/CoSQL dev: gold-vs-gold (must give QM = IM = 100%) and a perturbed file.

Baseline in the same process: tokenizing every gold and predicted SQL (the part every evaluator
must do); the figure reported is the full evaluation time as a multiple of that baseline.

    python benchmarks/bench_evaluator.py [--quick] [--data ../../shared/data]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

from zjulab.hiesql import evaluate_files, read_turn_file, tokenize_sql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_data import find_data  # noqa: E402
from perturb import perturb_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="SParC only, one perturbation")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    data = find_data(args.data)
    sets = ["sparc"] if args.quick else ["sparc", "cosql"]
    seeds = [1] if args.quick else [1, 2, 3]
    print(f"{'set':7} {'pred':10} {'turns':>6} {'QM':>8} {'IM':>8} {'turns/s':>9} {'x tokenize':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in sets:
            gold_text = (data / name / "dev_gold.txt").read_text().rstrip("\n") + "\n\n"
            gold = Path(tmp) / f"{name}_gold.txt"
            gold.write_text(gold_text)
            tables = data / name / "tables.json"
            runs = [("gold", gold)]
            for s in seeds:
                p = Path(tmp) / f"{name}_pert{s}.txt"
                p.write_text(perturb_text(gold_text, s))
                runs.append((f"perturb-{s}", p))
            for label, pred in runs:
                t0 = time.perf_counter()
                for inter in read_turn_file(gold) + read_turn_file(pred):
                    for sql, _ in inter:
                        with contextlib.suppress(ValueError):
                            tokenize_sql(sql)
                base = time.perf_counter() - t0
                t0 = time.perf_counter()
                rep = evaluate_files(gold, pred, tables)
                dt = time.perf_counter() - t0
                n = len(rep.turns)
                print(
                    f"{name:7} {label:10} {n:>6} {rep.question_match:>8.4f} {rep.interaction_match:>8.4f} {n / dt:>9.0f} {dt / base:>11.1f}"
                )
                if label == "gold":
                    assert rep.question_match == rep.interaction_match == 1.0, "gold-vs-gold must be 100%"


if __name__ == "__main__":
    main()
