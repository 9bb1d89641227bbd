"""Search latency with metadata filters against the same search unfiltered (one in-memory scope).

A memory of N single-user messages (12-word texts over 2,000 words, HashingEncoder-384,
Stage I links off) where one batch of 500 in 20 carries ``tag="rare"``, the rest ``tag="common"``.
Three searches of four query words each, ``top_k=10``, no context: unfiltered, filtered on the
rare tag (few admitted: the scope is read through the SQL pre-filter), filtered on the common
tag (most admitted: the filtered top candidates suffice). CPU time of the process, p50.

    python benchmarks/bench_filters.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import FluxMemConfig, FluxMemory


def p50(mem: FluxMemory, words: list[str], queries: int, **kw: object) -> float:
    """Median CPU milliseconds of ``queries`` searches (the same queries for every call)."""
    qrng = random.Random(1)
    times = []
    for _ in range(queries):
        q = " ".join(qrng.choice(words[:300]) for _ in range(4))
        t = time.process_time()
        mem.search(q, user_id="u", with_context=False, **kw)
        times.append(time.process_time() - t)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000])
    ap.add_argument("--queries", type=int, default=40)
    args = ap.parse_args()
    for n in args.sizes:
        rng = random.Random(0)
        words = [f"w{i}" for i in range(2000)]
        mem = FluxMemory(HashingEncoder(384), None, FluxMemConfig(max_links=0, link_adjacent=False))
        for start in range(0, n, 500):
            batch = [
                {"role": "user", "content": " ".join(rng.choice(words[: 50 + (i % 1950)]) for _ in range(12))}
                for i in range(start, min(n, start + 500))
            ]
            tag = "rare" if (start // 500) % 20 == 0 else "common"
            mem.add(batch, user_id="u", metadata={"tag": tag}, infer=False)

        plain = p50(mem, words, args.queries)
        rare = p50(mem, words, args.queries, filters={"tag": "rare"})
        common = p50(mem, words, args.queries, filters={"tag": "common"})
        print(
            f"{n:>7} nodes  unfiltered {plain:6.2f} ms  rare tag {rare:6.2f} ms ({rare / plain:.1f}x)  "
            f"common tag {common:6.2f} ms ({common / plain:.1f}x)"
        )
        mem.close()


if __name__ == "__main__":
    main()
