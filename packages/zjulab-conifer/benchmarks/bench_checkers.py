"""Checker throughput on IFEval's 541 prompts.

Responses are the prompts themselves and five variants of them (upper, lower, quoted,
with a postscript, doubled), so every checker runs on realistic text. Figures: prompts/s and
checks/s for strict scoring (the baseline), and loose scoring as a ratio against it; the
sentence splitter alone against a plain regex splitter as a second ratio.

    python benchmarks/bench_checkers.py --quick   # one response per prompt
    python benchmarks/bench_checkers.py
"""

import argparse
import re
import time
from pathlib import Path

from zjulab.conifer import count_sentences, default_registry, detect_language, load_ifeval


def find_ifeval():
    for parent in [Path.cwd(), *Path(__file__).resolve().parents]:
        p = parent / "shared" / "data" / "ifeval" / "input_data.jsonl"
        if p.is_file():
            return p
    raise SystemExit("shared/data/ifeval/input_data.jsonl not found")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ifeval", default=None)
    args = ap.parse_args()
    prompts = load_ifeval(args.ifeval or find_ifeval())
    reg = default_registry()

    def variants(p):
        v = [p]
        if not args.quick:
            v += [p.upper(), p.lower(), '"' + p + '"', p + "\nP.S. done", p + "\n\n" + p]
        return v

    work = [(p, r) for p in prompts for r in variants(p.prompt)]
    n_checks = sum(len(p.instruction_id_list) for p, _ in work)
    timings = {}
    detect_language("warm up the language profiles once")
    for mode in ("strict", "loose"):
        detect_language.cache_clear()  # no carry-over between modes
        t0 = time.perf_counter()
        for p, r in work:
            for iid, kw in zip(p.instruction_id_list, p.kwargs):
                reg.check(iid, r, kw, mode=mode, prompt=p.prompt)
        timings[mode] = time.perf_counter() - t0
    print(
        f"{len(prompts)} IFEval prompts x {len(work) // len(prompts)} responses = {n_checks} instruction checks (2 CPU cores, shared)"
    )
    for mode in ("strict", "loose"):
        dt = timings[mode]
        print(
            f"{mode:<7} {len(work) / dt:9.1f} responses/s  {n_checks / dt:9.1f} checks/s  x{timings['strict'] / dt:5.2f} vs strict"
        )
    texts = [r for _, r in work]
    naive = re.compile(r"[.!?]+(?:\s+|$)")

    def best_of(fn, repeats=5):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for t in texts:
                fn(t)
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best_of(count_sentences)
    base = best_of(lambda t: len(naive.findall(t)))
    print(
        f"sentence counting: {len(texts) / ours:9.1f} texts/s (Punkt-compatible), "
        f"{len(texts) / base:9.1f} texts/s (plain regex split), ratio x{base / ours:5.3f}"
    )


if __name__ == "__main__":
    main()
