"""Instrumentation overhead: a plain call vs the decorated call outside a trace vs recording.

    python benchmarks/bench_overhead.py [--quick]

Ratios are against the undecorated function in the same process.
"""

from __future__ import annotations

import argparse
import time

from zjulab.memtrace import Tracer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 200_000

    def step(xs: list[int], k: int) -> list[int]:
        return xs[:k]

    tracer = Tracer()
    traced = tracer.operation("step")(step)
    ref_tracer = Tracer(snapshot="reference")
    traced_ref = ref_tracer.operation("step")(step)
    data = list(range(16))
    off_tracer = Tracer(enabled=False)
    traced_off = off_tracer.operation("step")(step)

    def timeit(fn, reps: int) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            fn(data, 8)
        return (time.perf_counter() - t) / reps

    raw = min(timeit(step, n) for _ in range(3))
    off = min(timeit(traced, n) for _ in range(3))
    disabled = min(timeit(traced_off, n) for _ in range(3))
    m = n // 20
    with tracer.trace():
        on = timeit(traced, m)
    with ref_tracer.trace():
        on_ref = timeit(traced_ref, m)
    print(f"plain call            {raw * 1e9:8.0f} ns  x1.00")
    print(f"disabled tracer       {disabled * 1e9:8.0f} ns  x{disabled / raw:.2f}")
    print(f"decorated, no trace   {off * 1e9:8.0f} ns  x{off / raw:.2f}")
    print(f"recording (deepcopy)  {on * 1e9:8.0f} ns  x{on / raw:.1f}")
    print(f"recording (reference) {on_ref * 1e9:8.0f} ns  x{on_ref / raw:.1f}")


if __name__ == "__main__":
    main()
