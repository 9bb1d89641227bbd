"""Agreement of the checkers with IFEval's own strict verdicts on real responses.

IFEval's evaluation output (``eval_results_strict.jsonl``: a response and IFEval's verdict per
instruction) is read next to ``input_data.jsonl`` (the instruction arguments). Every
(response, instruction) pair whose instruction has a checker here is checked again and the
verdicts compared. The authors of RTT ship such a file in their repository
(TURLEing/Rubrics-To-Tokens, ``Benchmark/instruction_following_eval/data/``).

    python benchmarks/bench_ifeval_agreement.py --results eval_results_strict.jsonl \\
        --inputs ../shared/data/ifeval/input_data.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json

from zjulab.rtt.rubrics import CHECKERS, run_check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", required=True, help="IFEval eval_results_strict.jsonl")
    ap.add_argument("--inputs", required=True, help="IFEval input_data.jsonl")
    ns = ap.parse_args()
    with open(ns.inputs, encoding="utf-8") as fh:
        inputs = {r["prompt"]: r for r in map(json.loads, fh)}
    total: collections.Counter[str] = collections.Counter()
    differ: collections.Counter[str] = collections.Counter()
    with open(ns.results, encoding="utf-8") as fh:
        for rec in map(json.loads, fh):
            args = inputs[rec["prompt"]]["kwargs"]
            for iid, kw, ref in zip(rec["instruction_id_list"], args, rec["follow_instruction_list"]):
                if iid not in CHECKERS:
                    continue
                kw = {k: v for k, v in kw.items() if v is not None}
                if iid == "combination:repeat_prompt":
                    kw.setdefault("prompt_to_repeat", rec["prompt"])
                total[iid] += 1
                differ[iid] += run_check(iid, rec["response"], kw).passed != ref
    n, d = sum(total.values()), sum(differ.values())
    print(f"{n - d} of {n} verdicts agree with IFEval ({100 * (n - d) / n:.1f}%)")
    for iid in sorted(differ):
        if differ[iid]:
            print(f"  {iid}: {differ[iid]} of {total[iid]} differ")


if __name__ == "__main__":
    main()
