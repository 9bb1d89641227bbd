"""Figures for BENCHMARKS.md: first-stage quality after the ranking fixes, reranker ms/pair
(last-position logits vs the full logits tensor), incremental update vs full rebuild, and warm
server latency vs a cold CLI call. Every ratio is measured in one process against its baseline.

Usage: python benchmarks/bench_trust.py [--out results.json] [--pairs 24] [--pool 1000]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def quality(out: dict) -> None:
    from zjulab.skillrouter import RouterConfig, SkillRouter, evaluate
    from zjulab.skillrouter.demo_pool import load_demo_pool
    from zjulab.skillrouter.models import embedded_encoder

    pool = load_demo_pool()
    enc = embedded_encoder(device="cpu")
    rows = {}
    for kind in ("bm25", "dense", "hybrid"):
        r = SkillRouter(enc, None, RouterConfig(profile="embedded", retriever=kind, rerank=False)).index(
            pool.skills
        )
        rep = evaluate(r, pool.test, depth=50)
        rows[kind] = {m: round(100 * rep.mean[m], 1) for m in ("Hit@1", "MRR@10", "Recall@10")} | {
            "tasks": rep.n_tasks
        }
        if kind == "bm25":
            got = r.route_many([t.query for t in pool.test], 10)
            rows[kind]["tasks_with_<10_matches"] = sum(len(g) < 10 for g in got)
        q = "把扫描的PDF变成可搜索的文本"
        rows[kind]["zh_query_top1"] = (r.route(q, k=3) or [None])[0] and r.route(q, k=3)[0].skill.id
    out["quality_demo"] = rows
    print(json.dumps(rows, indent=1, ensure_ascii=False), flush=True)


def reranker_speed(out: dict, n_pairs: int) -> None:
    from zjulab.common.defaults import default_chat_model
    from zjulab.common.scorers import YesNoScorer
    from zjulab.skillrouter.demo_pool import load_demo_pool
    from zjulab.skillrouter.formatting import format_skill
    from zjulab.skillrouter.profiles import PROFILES
    from zjulab.skillrouter.scoring import ProfileYesNoScorer

    chat = default_chat_model(device="cpu")
    prof = PROFILES["embedded"]
    base = YesNoScorer(
        chat.model, chat.tokenizer, instruction=prof.rerank_instruction, max_length=256, device="cpu"
    )
    base._keep_last = False  # common's fallback path: the full [batch, length, vocab] logits
    ours = ProfileYesNoScorer(chat.model, chat.tokenizer, profile=prof, max_length=256, device="cpu")
    pool = load_demo_pool()
    pairs = [
        (t.query, format_skill(s, desc_max=500, body_max=2000))
        for t, s in zip(pool.test, pool.skills[:n_pairs])
    ]
    assert [base.fit_prompt(*p) for p in pairs] == [ours.fit_prompt(*p) for p in pairs]
    times = {"full_logits": [], "last_position": []}
    for _ in range(3):
        for name, sc in (("full_logits", base), ("last_position", ours)):
            t = time.perf_counter()
            s = sc.score(pairs, batch_size=8)
            times[name].append(1000 * (time.perf_counter() - t) / len(pairs))
            out.setdefault("_scores", {})[name] = s.tolist()
    a, b = np.asarray(out["_scores"]["full_logits"]), np.asarray(out["_scores"]["last_position"])
    res = {k: round(min(v), 1) for k, v in times.items()}
    res["ratio"] = round(res["full_logits"] / res["last_position"], 2)
    res["max_abs_score_diff"] = float(np.abs(a - b).max())
    res["pairs"] = len(pairs)
    out.pop("_scores")
    out["reranker_ms_per_pair"] = res
    print(res, flush=True)


def incremental(out: dict, n: int) -> None:
    from zjulab.skillrouter import RouterConfig, Skill, SkillRouter
    from zjulab.skillrouter.demo_pool import load_demo_pool
    from zjulab.skillrouter.models import embedded_encoder

    demo = load_demo_pool().skills
    skills = [replace(demo[i % len(demo)], id=f"{demo[i % len(demo)].id}#{i}") for i in range(n)]
    enc = embedded_encoder(device="cpu")
    cfg = RouterConfig(profile="embedded", retriever="hybrid", rerank=False)
    t = time.perf_counter()
    r = SkillRouter(enc, None, cfg).index(skills)
    full = time.perf_counter() - t
    changed = [Skill(**{**s.__dict__, "body": s.body + "\nUpdated step."}) for s in skills[:10]]
    t = time.perf_counter()
    counts = r.upsert(changed)
    up = time.perf_counter() - t
    out["incremental"] = {
        "skills": n,
        "full_build_s": round(full, 2),
        "upsert_10_s": round(up, 2),
        "ratio": round(full / up, 1),
        "re_encoded": r.encoded_texts - n,
        "counts": counts,
    }
    print(out["incremental"], flush=True)


def server(out: dict, n_requests: int) -> None:
    import os

    import httpx

    from zjulab.skillrouter import RouterConfig, SkillRouter
    from zjulab.skillrouter.demo_pool import load_demo_pool
    from zjulab.skillrouter.formatting import format_query
    from zjulab.skillrouter.models import embedded_encoder

    pool = load_demo_pool()
    tmp = Path(tempfile.mkdtemp())
    idx = SkillRouter(embedded_encoder(device="cpu"), None, RouterConfig(profile="embedded", rerank=False))
    idx.index(pool.skills).save(tmp / "idx")
    # the same requests in-process: what the query encoder alone and a whole route cost, so the
    # served figure splits into encoder, the library's own work, and HTTP
    queries = [pool.test[i % len(pool.test)].query for i in range(n_requests)]
    enc_lat, route_lat = [], []
    idx.route(queries[0], k=5)
    for q in queries:
        text = format_query(q, prompt=idx._query_prompt, max_chars=idx.config.query_max_chars)
        t = time.perf_counter()
        idx.encoder.encode([text])
        enc_lat.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        idx.route(q, k=5)
        route_lat.append(1000 * (time.perf_counter() - t))
    load_before = os.getloadavg()[0]
    # the library's own work per route: the same index with a near-free hashing encoder
    from zjulab.common.testing import HashingEncoder
    from zjulab.skillrouter.serve import route_records

    cheap_enc = HashingEncoder(384)
    cheap = SkillRouter(cheap_enc, None, RouterConfig(profile="embedded", rerank=False)).index(pool.skills)
    own = []
    for q in queries * 4:
        text = format_query(q, prompt=cheap._query_prompt, max_chars=cheap.config.query_max_chars)
        t = time.perf_counter()
        cheap_enc.encode([text])
        e = time.perf_counter()
        route_records(cheap, q, 5)
        own.append(1000 * ((time.perf_counter() - e) - (e - t)))
    q = pool.test[0].query
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "zjulab.skillrouter.cli", "route", str(tmp / "idx"), q, "-k", "5", "--json"],
        check=True,
        capture_output=True,
    )
    cold = time.perf_counter() - t
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zjulab.skillrouter.cli", "serve", str(tmp / "idx"), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        lat = []
        with httpx.Client() as c:
            c.post(base + "/route", json={"query": q, "k": 5})  # warm-up
            for i in range(n_requests):
                t = time.perf_counter()
                r = c.post(base + "/route", json={"query": pool.test[i % len(pool.test)].query, "k": 5})
                lat.append(1000 * (time.perf_counter() - t))
                assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    out["server"] = {
        "skills": len(pool.skills),
        "warm_p50_ms": round(statistics.median(lat), 1),
        "in_process_encode_p50_ms": round(statistics.median(enc_lat), 2),
        "in_process_route_p50_ms": round(statistics.median(route_lat), 2),
        "library_own_ms_per_route_p50": round(statistics.median(own), 3),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "warm_p95_ms": round(sorted(lat)[int(0.95 * len(lat)) - 1], 1),
        "cold_cli_route_s": round(cold, 2),
        "requests": n_requests,
    }
    print(out["server"], flush=True)


def negatives(out: dict) -> None:
    """False negatives in mined negatives and in shuffled batches of 16, before/after the fixes."""
    import random

    from zjulab.common.testing import HashingEncoder
    from zjulab.skillrouter import MiningConfig, mine_hard_negatives
    from zjulab.skillrouter.demo_pool import load_demo_pool
    from zjulab.skillrouter.encoder_training import batch_conflicts, relevance_aware_batches

    demo = load_demo_pool()
    enc = HashingEncoder(256)  # a deterministic lexical miner; the counts are about the rules
    ids = {s.id for s in demo.skills}
    graded = {t.query: {k for k, g in t.grades.items() if g > 0} for t in demo.train}

    def count(ex: list) -> int:
        return sum(n.id in graded[e.query] for e in ex for n in e.negatives)

    pos_only = [(t.query, sorted(t.relevant & ids)) for t in demo.train]
    with_grades = [
        (t.query, sorted(t.relevant & ids), sorted(k for k, g in t.grades.items() if g > 0 and k in ids))
        for t in demo.train
    ]
    before = count(mine_hard_negatives(pos_only, demo.skills, enc, MiningConfig()))
    ex = mine_hard_negatives(with_grades, demo.skills, enc, MiningConfig())
    order = list(range(len(ex)))
    random.Random(0).shuffle(order)
    shuffled = [order[i : i + 16] for i in range(0, len(order), 16)]
    out["false_negatives"] = {
        "mined_before": before,
        "mined_after": count(ex),
        "in_batch_default_sampler": batch_conflicts(ex, shuffled),
        "in_batch_relevance_aware": batch_conflicts(ex, relevance_aware_batches(ex, 16, order)),
        "examples": len(ex),
    }
    print(out["false_negatives"], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_trust.json")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--pool", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument(
        "--only", nargs="*", default=["quality", "reranker", "incremental", "server", "negatives"]
    )
    args = ap.parse_args()
    out: dict = {}
    if "quality" in args.only:
        quality(out)
    if "reranker" in args.only:
        reranker_speed(out, args.pairs)
    if "incremental" in args.only:
        incremental(out, args.pool)
    if "server" in args.only:
        server(out, args.requests)
    if "negatives" in args.only:
        negatives(out)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
