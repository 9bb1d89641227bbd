"""Quality benchmark on the demo pool's held-out tasks: BM25, dense, hybrid and two-stage,
each with the full skill text and with name+description only (the body ablation).

Default models are the embedded offline pair (MiniLM-L6 encoder, SmolLM2-135M-Instruct as a
zero-shot yes/no reranker). Real models by hub id on a GPU:

    python benchmarks/bench_quality.py --device cuda \
        --encoder pipizhao/SkillRouter-Embedding-0.6B --reranker pipizhao/SkillRouter-Reranker-0.6B \
        --rerank-k 20 --max-length 2048

Usage: python benchmarks/bench_quality.py [--quick] [--rerank-k 5] [--max-length 256]
"""

from __future__ import annotations

import argparse
import time

from zjulab.skillrouter import RouterConfig, SkillRouter, evaluate, format_table
from zjulab.skillrouter.demo_pool import load_demo_pool
from zjulab.skillrouter.models import (
    embedded_encoder,
    embedded_reranker,
    load_skill_encoder,
    load_skill_reranker,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="8 held-out tasks")
    ap.add_argument("--encoder", default="embedded")
    ap.add_argument("--reranker", default="embedded")
    ap.add_argument("--rerank-k", type=int, default=5)
    ap.add_argument("--max-length", type=int, default=256, help="reranker prompt tokens")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--rerank-tasks", type=int, default=0, help="score two-stage on the first N held-out tasks (0: all)"
    )
    args = ap.parse_args()
    pool = load_demo_pool()
    tasks = pool.test[:8] if args.quick else pool.test
    if args.encoder == "embedded":
        enc = embedded_encoder(device=args.device)
    else:
        enc = load_skill_encoder(args.encoder, device=args.device)
    if args.reranker == "embedded":
        rr = embedded_reranker(device=args.device, max_length=args.max_length)
    else:
        rr = load_skill_reranker(args.reranker, device=args.device, max_length=args.max_length)
    profile = "embedded" if args.encoder == "embedded" else "skillrouter"
    print(
        f"demo pool: {len(pool.skills)} skills, {len(tasks)} held-out tasks; encoder {enc.model_id}, reranker {rr.model_id}"
    )
    print(f"rerank top-{args.rerank_k} of 50, reranker prompt <= {args.max_length} tokens")
    reports = []
    for fields in ("full", "name_description"):
        tag = "" if fields == "full" else " (no body)"
        t = time.perf_counter()
        bm25 = SkillRouter(
            None, None, RouterConfig(profile=profile, retriever="bm25", rerank=False, fields=fields)
        ).index(pool.skills)
        reports.append(evaluate(bm25, tasks, name="BM25" + tag))
        for retriever in ("dense", "hybrid"):
            cfg = RouterConfig(profile=profile, retriever=retriever, fields=fields, rerank_k=args.rerank_k)
            router = SkillRouter(enc, rr, cfg).index(pool.skills)
            reports.append(evaluate(router, tasks, rerank=False, name=retriever + tag))
            if retriever == "dense":
                sub = tasks[: args.rerank_tasks] if args.rerank_tasks else tasks
                if len(sub) < len(tasks):
                    reports.append(evaluate(router, sub, rerank=False, name=f"dense{tag} [{len(sub)} tasks]"))
                    reports.append(evaluate(bm25, sub, name=f"BM25{tag} [{len(sub)} tasks]"))
                reports.append(evaluate(router, sub, name="two-stage" + tag))
        print(f"[{fields}] {time.perf_counter() - t:.0f}s")
        print(format_table(reports, ("Hit@1", "nDCG@10", "Recall@10", "MRR@10")), flush=True)
    print()
    print(format_table(reports, ("Hit@1", "nDCG@10", "Recall@10", "MRR@10")))
    full = {r.name: r.mean["Hit@1"] for r in reports}
    bm = [k for k in full if k.startswith("BM25 [")]
    base = full[bm[0]] if bm else full["BM25"]
    print(f"\ntwo-stage - BM25 Hit@1 (same tasks): {100 * (full['two-stage'] - base):+.1f} points")
    for m in ("BM25", "dense", "hybrid", "two-stage"):
        print(f"removing the body, {m}: Hit@1 {100 * (full[m + ' (no body)'] - full[m]):+.1f} points")


if __name__ == "__main__":
    main()
