"""Add + commit and search latency of the SQLite store at 1K / 10K / 100K nodes (faiss, Qdrant).

Each size is reached by bulk pre-fill (Stage I links off, 1,000 messages per transaction), then
measured with the default configuration on a store on disk: ``add`` of one message (its own
transaction: insert, FTS5 row, change log, Stage I candidate search and linking, ``next`` link,
COMMIT in WAL mode) and ``search`` (dense + FTS5 candidates in the scope, graph expansion, hybrid
score, propagation, no context). The baseline, in the same process, is a bare faiss
``IndexFlatIP`` search over the same vectors. Texts are embedded with the deterministic
HashingEncoder at 384 dimensions so the figures measure the memory, not an encoder.

    python benchmarks/bench_store.py                          # faiss 1K/10K/100K, Qdrant 1K/10K
    python benchmarks/bench_store.py --sizes 1000 10000 --backends faiss
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time

import faiss
import numpy as np

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import FluxMemConfig, FluxMemory


def texts(rng: np.random.Generator, n: int, vocab: list[str]) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, size=(n, 12)) - 1, len(vocab) - 1)
    return [" ".join(vocab[r] for r in row) for row in ranks]


def run(
    backend: str, sizes: list[int], queries: int, adds: int, ivf_min: int | None = None, nprobe: int = 16
) -> list[dict]:
    rng = np.random.default_rng(0)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe"]
    vocab = sorted({"".join(rng.choice(syll, size=3)) for _ in range(20000)})
    enc = HashingEncoder(384)
    fill_cfg = FluxMemConfig(max_links=0, link_adjacent=False, vector_backend=backend)
    path = tempfile.mkdtemp(prefix="fluxmem-bench-")
    mem = FluxMemory.open(path, enc, config=fill_cfg)
    rows = []
    for n in sizes:
        mem.config = fill_cfg
        t0 = time.perf_counter()
        while len(mem.graph) < n:
            mem.add(texts(rng, min(1000, n - len(mem.graph)), vocab), user_id="bench", infer=False)
        fill_s = time.perf_counter() - t0
        measured = FluxMemConfig(vector_backend=backend, ivf_min_nodes=ivf_min, ivf_nprobe=nprobe)
        if ivf_min is not None:  # the IVF index is built when a store is opened
            mem.close()
            mem = FluxMemory.open(path, enc, config=measured)
            mem.search("warm up", user_id="bench")
        mem.config = measured  # measured operations use the defaults (plus --ivf-min)
        add_ms, add_cpu = [], []
        for t in texts(rng, adds, vocab):
            t1, c1 = time.perf_counter(), time.process_time()
            mem.add(t, user_id="bench")
            add_ms.append((time.perf_counter() - t1) * 1000)
            add_cpu.append((time.process_time() - c1) * 1000)
        qs = texts(rng, queries, vocab)
        search_ms, search_cpu, found = [], [], []
        for q in qs:
            t1, c1 = time.perf_counter(), time.process_time()
            hits = mem.search(q, user_id="bench", top_k=10, with_context=False)["results"]
            search_ms.append((time.perf_counter() - t1) * 1000)
            search_cpu.append((time.process_time() - c1) * 1000)
            found.append({h["id"] for h in hits})
        # what a user sees: the share of the exact search's top-10 that this index returns too
        agree = float("nan")
        if ivf_min is not None:
            exact = FluxMemory.open(path, enc, config=FluxMemConfig(vector_backend=backend))
            agree = statistics.mean(
                len(
                    got
                    & {
                        h["id"]
                        for h in exact.search(q, user_id="bench", top_k=10, with_context=False)["results"]
                    }
                )
                / 10
                for q, got in zip(qs, found)
            )
            exact.close()
        # baseline: a bare faiss flat scan over the same vectors
        vecs = np.frombuffer(
            b"".join(b for (b,) in mem.store.conn.execute("SELECT vec FROM nodes")), dtype=np.float32
        ).reshape(-1, 384)
        flat = faiss.IndexFlatIP(384)
        flat.add(vecs)
        qv = enc.encode(qs).astype(np.float32)
        base_ms = []
        for row in qv:
            t1 = time.perf_counter()
            flat.search(row.reshape(1, -1), 10)
            base_ms.append((time.perf_counter() - t1) * 1000)
        # dense recall@10 of the memory's index against the exact scan (1.0 unless IVF)
        _, exact_ids = flat.search(np.ascontiguousarray(qv), 10)
        rids = np.asarray([r for (r,) in mem.store.conn.execute("SELECT rid FROM nodes")], dtype=np.int64)
        hits = 0
        if hasattr(mem.store.vectors, "rid_to_id"):
            for row_v, ex in zip(qv, exact_ids):
                got = {nid for nid, _ in mem.store.vectors.search(row_v, 10, None)[0]}
                hits += len(got & {mem.store.vectors.rid_to_id[int(rids[i])] for i in ex})
        dense_recall = hits / (10 * len(qv)) if hasattr(mem.store.vectors, "rid_to_id") else float("nan")
        row = {
            "backend": backend + (f"+ivf(nprobe {measured.ivf_nprobe})" if ivf_min is not None else ""),
            "nodes": len(mem.graph),
            "fill_s": fill_s,
            "add_ms_p50": statistics.median(add_ms),
            "add_cpu_p50": statistics.median(add_cpu),
            "search_cpu_p50": statistics.median(search_cpu),
            "add_ms_p90": float(np.percentile(add_ms, 90)),
            "search_ms_p50": statistics.median(search_ms),
            "search_ms_p90": float(np.percentile(search_ms, 90)),
            "flat_ms_p50": statistics.median(base_ms),
            "dense_recall": dense_recall,
            "top10_agreement": agree,
        }
        rows.append(row)
        print(
            f"{row['backend']:6s} {row['nodes']:>7d} nodes: add+commit p50 {row['add_ms_p50']:.2f} ms "
            f"(p90 {row['add_ms_p90']:.2f}, CPU {row['add_cpu_p50']:.2f}), search p50 {row['search_ms_p50']:.2f} ms "
            f"(CPU {row['search_cpu_p50']:.2f}) "
            f"(p90 {row['search_ms_p90']:.2f}), bare faiss p50 {row['flat_ms_p50']:.2f} ms, "
            f"ratio {row['search_ms_p50'] / row['flat_ms_p50']:.1f}x; dense recall@10 vs exact "
            f"{row['dense_recall']:.3f}; search top-10 shared with exact "
            + (
                "- (measured with --ivf-min only)" if agree != agree else f"{agree:.3f}"
            )  # nan: nothing to compare
            + f"; fill {fill_s:.0f} s",
            flush=True,
        )
    mem.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--qdrant-sizes", type=int, nargs="+", default=[1_000, 10_000])
    ap.add_argument("--backends", nargs="+", default=["faiss", "qdrant"])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--adds", type=int, default=50)
    ap.add_argument("--ivf-min", type=int, default=None, help="measure with FluxMemConfig(ivf_min_nodes=...)")
    ap.add_argument("--nprobe", type=int, default=16, help="FluxMemConfig(ivf_nprobe=...) with --ivf-min")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    for backend in args.backends:
        sizes = args.qdrant_sizes if backend == "qdrant" else args.sizes
        rows = run(backend, sizes, args.queries, args.adds, args.ivf_min, args.nprobe)
        by = {r["nodes"]: r for r in rows}
        ks = sorted(by)
        for a, b in itertools.pairwise(ks):
            print(
                f"{backend}: add growth {a} -> {b}: {by[b]['add_ms_p50'] / by[a]['add_ms_p50']:.2f}x, "
                f"search growth {by[b]['search_ms_p50'] / by[a]['search_ms_p50']:.2f}x"
            )


if __name__ == "__main__":
    main()
