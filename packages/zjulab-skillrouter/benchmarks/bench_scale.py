"""Scale benchmark: first-stage retrieval over an 80K-skill pool.

Encoding 80K skill texts on a CPU takes hours, so the pool is 80K synthetic unit vectors of
the encoder's dimension (384 for the embedded MiniLM, 1024 for the 0.6B SkillRouter encoder
with --dim 1024) instead of encoded skills. ``clustered`` (default) mimics a skill pool: 2,000
groups of near-duplicate skills around random centres, queries near one skill each.
``uniform`` vectors have no structure at all, the worst case for approximate search.

Measures build time and single-query latency (p50/p95) of faiss flat (exact) and HNSW against
numpy brute force (matrix product + argpartition) in the same process, printed as ratios, and
recall@50 of HNSW against the exact top 50.

Usage: python benchmarks/bench_scale.py [--quick] [--n 80000] [--dim 384]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import faiss  # noqa: F401  (imported before timing: the first import costs ~0.5 s)
import numpy as np

from zjulab.skillrouter import VectorIndex, brute_force_search


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(
    rng: np.random.Generator, n: int, d: int, nq: int, groups: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Skill-like vectors: ``groups`` functional groups (random centres) of near-duplicate
    skills (centre + noise), and queries that sit near one pool skill each."""
    centres = unit(rng, groups, d)
    pool = centres[rng.integers(0, groups, n)] + 0.6 * unit(rng, n, d)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[rng.integers(0, n, nq)] + 0.8 * unit(rng, nq, d)
    return pool.astype(np.float32), (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(
        np.float32
    )


def latencies(fn, queries: np.ndarray) -> np.ndarray:
    out = []
    for q in queries:
        t = time.perf_counter()
        fn(q[None, :])
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10K vectors, 50 queries")
    ap.add_argument("--n", type=int, default=80_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument(
        "--distribution",
        choices=["clustered", "uniform"],
        default="clustered",
        help="clustered: groups of near-duplicate skills, queries near a skill; uniform: worst case for HNSW",
    )
    ap.add_argument("--ef-construction", type=int, default=200)
    args = ap.parse_args()
    n, nq = (10_000, 50) if args.quick else (args.n, args.queries)
    rng = np.random.default_rng(0)
    if args.distribution == "clustered":
        pool, queries = clustered(rng, n, args.dim, nq)
    else:
        pool, queries = unit(rng, n, args.dim), unit(rng, nq, args.dim)
    print(
        f"pool {n} x {args.dim} {args.distribution} random unit vectors, {nq} single-vector queries, k={args.k}"
    )
    print(f"HNSW M={args.hnsw_m}, efConstruction={args.ef_construction}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )

    rows = []
    t = time.perf_counter()
    base = np.ascontiguousarray(pool)
    build_np = time.perf_counter() - t
    lat_np = latencies(lambda q: brute_force_search(base, q, args.k), queries)
    rows.append(("numpy brute force", build_np, lat_np))
    _, exact = brute_force_search(base, queries, args.k)

    t = time.perf_counter()
    flat = VectorIndex(args.dim, "flat").build(pool)
    rows.append(
        ("faiss flat (exact)", time.perf_counter() - t, latencies(lambda q: flat.search(q, args.k), queries))
    )
    _, flat_ids = flat.search(queries, args.k)
    flat_recall = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(flat_ids, exact)])

    t = time.perf_counter()
    hnsw = VectorIndex(
        args.dim, "hnsw", hnsw_m=args.hnsw_m, hnsw_ef_construction=args.ef_construction, hnsw_ef_search=128
    ).build(pool)
    hnsw_build = time.perf_counter() - t
    recalls = {}
    for ef in (64, 128, 256):
        hnsw.hnsw_ef_search = ef
        lat = latencies(lambda q: hnsw.search(q, args.k), queries)
        _, ids = hnsw.search(queries, args.k)
        recalls[ef] = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, exact)])
        rows.append((f"faiss HNSW{args.hnsw_m} ef={ef}", hnsw_build, lat))

    p50_np = np.percentile(lat_np, 50)
    print(
        f"\n{'method':<22} {'build s':>8} {'p50 ms':>8} {'p95 ms':>8} {'speed-up p50':>13} {'recall@50':>10}"
    )
    for name, build, lat in rows:
        rec = (
            "1.000"
            if name.startswith("numpy")
            else f"{flat_recall:.3f}"
            if "flat" in name
            else f"{recalls[int(name.split('=')[1])]:.3f}"
        )
        print(
            f"{name:<22} {build:8.2f} {np.percentile(lat, 50):8.3f} {np.percentile(lat, 95):8.3f} "
            f"{p50_np / np.percentile(lat, 50):12.1f}x {rec:>10}"
        )


if __name__ == "__main__":
    main()
