"""Add and search throughput of FluxMemory at 1K / 10K / 100K nodes, with growth ratios.

The memory is pre-filled to each size with synthetic Zipf-distributed messages (formation links
off for the pre-fill, so building 100K nodes takes seconds, not an hour), then measured with the
default configuration: add latency per message (hybrid candidate search, BM25, linking, next
links) and search latency (dense + BM25 candidates, graph expansion, hybrid score, propagation).
The baseline in the same process is a bare faiss IndexFlatIP search over the same vectors.

Texts are embedded with the deterministic HashingEncoder at 384 dimensions (MiniLM's size) so that
the figures measure the memory, not the encoder; the MiniLM query-encoding time is measured
separately when the embedded encoder is installed (add it to every search for an end-to-end figure).

    python benchmarks/bench_throughput.py            # 1K, 10K, 100K
    python benchmarks/bench_throughput.py --quick    # 1K, 10K
"""

from __future__ import annotations

import argparse
import statistics
import time

import faiss
import numpy as np

from zjulab.common.testing import HashingEncoder
from zjulab.fluxmem import FluxMemConfig, FluxMemory


def texts(rng: np.random.Generator, n: int, vocab: list[str]) -> list[str]:
    ranks = np.minimum(rng.zipf(1.3, size=(n, 12)) - 1, len(vocab) - 1)
    return [" ".join(vocab[r] for r in row) for row in ranks]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    rng = np.random.default_rng(0)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe"]
    vocab = sorted({"".join(rng.choice(syll, size=3)) for _ in range(20000)})
    enc = HashingEncoder(384)
    mem = FluxMemory(enc, config=FluxMemConfig(max_links=0, link_adjacent=False))
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        while len(mem.graph) < n:
            batch = texts(rng, min(1000, n - len(mem.graph)), vocab)
            mem.add(batch, user_id="bench")
        fill = time.perf_counter() - t0
        mem.config = FluxMemConfig()  # measured operations use the defaults
        add_ms = []
        for _ in range(10):
            batch = texts(rng, 20, vocab)
            t0 = time.perf_counter()
            mem.add(batch, user_id="bench", run_id="measure")
            add_ms.append(1000 * (time.perf_counter() - t0) / len(batch))
        queries = texts(rng, args.queries, vocab)
        qv = enc.encode(queries)
        search_ms, search_cpu = [], []
        for q in queries:
            t0, c0 = time.perf_counter(), time.process_time()
            mem.search(q, user_id="bench", top_k=10)
            search_ms.append(1000 * (time.perf_counter() - t0))
            search_cpu.append(1000 * (time.process_time() - c0))
        sc = mem._scopes["user:bench"]
        ids = sc.index.ids()
        flat = faiss.IndexFlatIP(384)
        flat.add(sc.index.vectors(ids))
        flat_ms, flat_cpu = [], []
        for v in qv:
            t0, c0 = time.perf_counter(), time.process_time()
            flat.search(v[None], 10)
            flat_ms.append(1000 * (time.perf_counter() - t0))
            flat_cpu.append(1000 * (time.process_time() - c0))
        mem.config = FluxMemConfig(max_links=0, link_adjacent=False)
        rows.append(
            (
                len(mem.graph),
                statistics.mean(add_ms),
                pct(search_ms, 50),
                pct(search_ms, 95),
                pct(flat_ms, 50),
                pct(search_cpu, 50),
                pct(flat_cpu, 50),
            )
        )
        print(f"  {len(mem.graph)} nodes: filled in {fill:.1f}s", flush=True)
    base = rows[0]
    print(
        "\n| nodes | add ms/msg | add growth | search p50 ms (wall) | search p95 ms | search growth "
        "| search p50 ms (CPU time) | faiss flat p50 ms (wall / CPU) | search / faiss (CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, add, p50, p95, fl, cpu, fcpu in rows:
        print(
            f"| {n} | {add:.2f} | {add / base[1]:.2f}x | {p50:.2f} | {p95:.2f} | {p50 / base[2]:.2f}x "
            f"| {cpu:.2f} | {fl:.2f} / {fcpu:.2f} | {cpu / max(fcpu, 1e-3):.1f}x |"
        )
    print("\n(CPU time counts only the time this single-threaded process ran; wall time also counts")
    print(" waiting for a core on a shared machine.)")
    try:
        from zjulab.common.defaults import default_encoder

        mini = default_encoder(device="cpu")
        qs = texts(rng, 50, vocab)
        mini.encode(qs[:2])
        enc_ms, enc_cpu = [], []
        for q in qs:
            t0, c0 = time.perf_counter(), time.process_time()
            mini.encode([q])
            enc_ms.append(1000 * (time.perf_counter() - t0))
            enc_cpu.append(1000 * (time.process_time() - c0))
        print(
            f"\nMiniLM-L6 query encoding on CPU: p50 {pct(enc_ms, 50):.2f} ms wall, "
            f"{pct(enc_cpu, 50):.2f} ms CPU time (add to search for end-to-end)"
        )
    except Exception as exc:  # the embedded encoder is optional here
        print(f"\n(MiniLM not measured: {exc})")


if __name__ == "__main__":
    main()
