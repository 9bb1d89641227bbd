"""Rankings, scores and metrics that are right, not just plausible (zero-score hits, ties,
monotone scores, duplicate ids, eval modes and strata, concurrency, false negatives)."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import (
    BM25Index,
    MiningConfig,
    RouterConfig,
    Skill,
    SkillRouter,
    VectorIndex,
    brute_force_search,
    compute_metrics,
    evaluate_rankings,
    load_tasks,
    mine_hard_negatives,
    ndcg_at_k,
)
from zjulab.skillrouter.demo_pool import load_demo_pool


# ---------------------------------------------------------------- a retriever returns only what matched
def test_bm25_returns_only_skills_sharing_a_term(pool):
    r = SkillRouter(None, None, RouterConfig(retriever="bm25", rerank=False)).index(pool)
    got = r.route("把扫描的PDF变成可搜索的文本", k=5)
    assert got == []  # no query term occurs in the pool
    got = r.route("tesseract", k=5)
    assert [g.skill.id for g in got] == ["pdf-ocr"]
    assert all(g.retrieval_score > 0 for g in got)
    # reversing the pool changes nothing about what is returned
    back = SkillRouter(None, None, RouterConfig(retriever="bm25", rerank=False)).index(pool[::-1])
    assert [g.skill.id for g in back.route("tesseract", k=5)] == ["pdf-ocr"]


def test_hybrid_with_an_empty_lexical_side_equals_dense(pool):
    dense = SkillRouter(HashingEncoder(128), None, RouterConfig(rerank=False)).index(pool)
    hybrid = SkillRouter(HashingEncoder(128), None, RouterConfig(retriever="hybrid", rerank=False)).index(
        pool
    )
    q = "把扫描的PDF变成可搜索的文本"
    assert [g.skill.id for g in hybrid.route(q, k=5)] == [g.skill.id for g in dense.route(q, k=5)]
    fused = hybrid.route(q, k=3)
    assert [g.retrieval_score for g in fused] == pytest.approx([1 / 61, 1 / 62, 1 / 63])


def test_demo_pool_chinese_query_hybrid_agrees_with_dense():
    demo = load_demo_pool()
    enc = HashingEncoder(256)
    q = "把扫描的PDF变成可搜索的文本"
    d = SkillRouter(enc, None, RouterConfig(rerank=False)).index(demo.skills).route(q, k=5)
    h = (
        SkillRouter(enc, None, RouterConfig(retriever="hybrid", rerank=False))
        .index(demo.skills)
        .route(q, k=5)
    )
    assert [x.skill.id for x in h] == [x.skill.id for x in d]


# ---------------------------------------------------------------- one tie rule on every backend
def _tied_vectors():
    # eight copies of one vector among distinct ones: the top-k cut falls inside the tie
    rng = np.random.default_rng(3)
    v = rng.standard_normal((200, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    dup_pos = [150, 7, 99, 120, 3, 180, 42, 61]
    v[dup_pos] = v[0]
    return v, sorted([0, *dup_pos])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_ties_are_ordered_by_position_on_every_faiss_backend(kind):
    v, tied = _tied_vectors()
    q = v[:1].copy()
    _, bi = brute_force_search(v, q, 5)
    assert bi[0].tolist() == tied[:5]  # numpy: lowest positions first, also at the cut
    idx = VectorIndex(16, kind, ivf_nlist=4, ivf_nprobe=4).build(v)
    _, ii = idx.search(q, 5)
    assert ii[0].tolist() == tied[:5]


def test_bm25_ties_follow_position():
    texts = ["alpha beta", "gamma", "alpha beta", "delta", "alpha beta", "alpha beta"]
    scores, ids = BM25Index().build(texts).search(["alpha"], 3)
    assert ids[0].tolist() == [0, 2, 4]
    assert scores[0][0] == scores[0][1] == scores[0][2] > 0


# ---------------------------------------------------------------- one score field, monotone in rank
class NegativeScorer:
    model_id = "negative-scorer"

    def score(self, pairs, batch_size=8):
        return np.array([-0.01 * len(d) for _, d in pairs], dtype=np.float32)


def test_score_is_monotone_in_rank_and_stage_scores_stay(pool):
    cfg = RouterConfig(retrieve_k=8, rerank_k=3)
    r = SkillRouter(HashingEncoder(128), NegativeScorer(), cfg).index(pool)
    got = r.route("pdf files with ocr", k=8)
    scores = [g.score for g in got]
    assert scores == sorted(scores, reverse=True)
    assert all(g.rerank_score is not None and g.score == g.rerank_score for g in got[:3])
    assert all(g.rerank_score is None and g.score == got[2].rerank_score for g in got[3:])
    assert all(g.retrieval_score is not None for g in got)
    no_rr = r.route("pdf files with ocr", k=8, rerank=False)
    assert [g.score for g in no_rr] == [g.retrieval_score for g in no_rr]


# ---------------------------------------------------------------- metrics cannot be gamed
def test_duplicate_ids_count_once():
    assert ndcg_at_k(["a", "a", "a"], {"a"}, 3, {"a": 3}) == pytest.approx(1.0)
    perfect = ["a", "b", *[f"x{i}" for i in range(8)]]
    spam = ["a"] * 10
    grades = {"a": 3, "b": 1}
    assert (
        compute_metrics(spam, {"a", "b"}, grades)["nDCG@10"]
        < compute_metrics(perfect, {"a", "b"}, grades)["nDCG@10"]
    )
    # hand-worked: de-duplicated spam is ["a"]: DCG 3, IDCG 3 + 1/log2(3)
    assert compute_metrics(spam, {"a", "b"}, grades)["nDCG@10"] == pytest.approx(3 / (3 + 1 / math.log2(3)))
    # a repeat does not push the next id down: ["a", "a", "b"] scores as ["a", "b"]
    assert compute_metrics(["a", "a", "b"], {"a", "b"}, grades) == compute_metrics(
        ["a", "b"], {"a", "b"}, grades
    )


def _bench(tmp_path):
    rel = {
        "t1": {
            "gt_skill_ids": ["s1"],
            "core_gt_ids": ["s1"],
            "relevance": {"s1": 3, "s2": 1},
            "task_type": "clean",
        },
        "t2": {
            "gt_skill_ids": ["s2", "s3"],
            "core_gt_ids": ["s2"],
            "relevance": {"s2": 3, "s3": 3},
            "task_type": "mixed",
        },
        "t3": {"gt_skill_ids": ["s4"], "relevance": {"s4": 3}, "task_type": "generic_only"},
    }
    (tmp_path / "relevance.json").write_text(json.dumps(rel))
    (tmp_path / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_id": t, "instruction_text": f"do {t}"}) + "\n" for t in rel)
    )
    return tmp_path / "tasks.jsonl"


def test_modes_and_strata_follow_the_authors_scorer(tmp_path):
    path = _bench(tmp_path)
    preds = {"t1": ["s2", "s1"], "t2": ["s3", "s9", "s2"], "t3": ["s4"]}
    core = evaluate_rankings(preds, load_tasks(path, mode="core"))
    assert sorted(core.per_task) == ["t1", "t2"]  # generic_only dropped
    # core: t1 has one gt (single stratum), t2's core gt is one id too -> both "single"
    assert core.strata["counts"] == {"single": 2.0, "multi": 0.0}
    assert core.mean["MRR@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    every = evaluate_rankings(preds, load_tasks(path, mode="all"))
    assert sorted(every.per_task) == ["t1", "t2", "t3"]  # generic_only kept, as the authors do
    assert every.strata["counts"] == {"single": 2.0, "multi": 1.0}
    assert every.strata["multi"]["Hit@1"] == 1.0 and every.strata["single"]["Hit@1"] == 0.5
    assert every.mean["Recall@10"] == pytest.approx(1.0)
    single = evaluate_rankings(preds, load_tasks(path, mode="single"))
    assert sorted(single.per_task) == ["t1", "t3"]
    # hand-worked nDCG@3 of t1 (gains 1, 3; ideal 3, 1)
    idcg = 3 + 1 / math.log2(3)
    assert single.per_task["t1"]["nDCG@3"] == pytest.approx((1 + 3 / math.log2(3)) / idcg)


def test_benchmark_all_mode_keeps_the_87_tasks(shared_data):
    root = shared_data / "skillrouter" / "data" / "eval_core"
    assert len(load_tasks(root / "tasks.jsonl", mode="all")) == 87
    assert len(load_tasks(root / "tasks.jsonl", mode="single")) == 24


def test_duplicate_rankings_are_reported(tmp_path):
    rep = evaluate_rankings({"t1": ["s1", "s1"], "t2": ["s2"]}, load_tasks(_bench(tmp_path)))
    assert rep.duplicates == 1
    assert rep.per_task["t1"]["nDCG@10"] <= 1.0


# ---------------------------------------------------------------- concurrent routing is safe
def test_threads_route_exactly_as_sequential(pool, tiny_causal_lm):
    from zjulab.common.scorers import YesNoScorer

    model, tok = tiny_causal_lm
    tok.padding_side = "right"
    scorer = YesNoScorer(model, tok, device="cpu", batch_size=3)
    r = SkillRouter(HashingEncoder(64), scorer, RouterConfig(retrieve_k=8, rerank_k=8)).index(pool)
    queries = ["merge pdf", "resize photos", "nginx latency", "send mail", "exif gps", "rotate logs"] * 3
    seq = [[(x.skill.id, x.score) for x in r.route(q, k=8)] for q in queries]
    barrier = threading.Barrier(6)

    def go(q):
        barrier.wait(timeout=30)  # start together so the scoring calls overlap
        return [(x.skill.id, x.score) for x in r.route(q, k=8)]

    par = []
    for chunk in (queries[:6], queries[6:12], queries[12:]):
        with ThreadPoolExecutor(6) as ex:
            par += list(ex.map(go, chunk))
    assert par == seq
    assert tok.padding_side == "right"


# ---------------------------------------------------------------- training data has no false negatives
def test_mining_excludes_every_graded_relevant_skill():
    demo = load_demo_pool()
    enc = HashingEncoder(256)
    ids = {s.id for s in demo.skills}
    pairs_pos_only = [(t.query, sorted(t.relevant & ids)) for t in demo.train]
    pairs_graded = [
        (t.query, sorted(t.relevant & ids), sorted(k for k, g in t.grades.items() if g > 0 and k in ids))
        for t in demo.train
    ]

    def false_negatives(examples, tasks):
        graded = {t.query: {k for k, g in t.grades.items() if g > 0} for t in tasks}
        return sum(n.id in graded[e.query] for e in examples for n in e.negatives)

    before = false_negatives(
        mine_hard_negatives(pairs_pos_only, demo.skills, enc, MiningConfig()), demo.train
    )
    ex = mine_hard_negatives(pairs_graded, demo.skills, enc, MiningConfig())
    after = false_negatives(ex, demo.train)
    assert before > 0 and after == 0
    assert sum(e.excluded_relevant for e in ex) >= before


def test_rrf_counts_a_repeated_id_once():
    from zjulab.skillrouter import reciprocal_rank_fusion

    fused = dict(reciprocal_rank_fusion([["a", "a", "b"], ["b"]], k=60))
    # a: 1/61 once (not 1/61 + 1/62); b: its first rank in ranking 1 is 2 -> 1/62, plus 1/61
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)


def test_routing_during_upsert_sees_one_consistent_pool(pool):
    r = SkillRouter(HashingEncoder(64), None, RouterConfig(rerank=False, profile="embedded")).index(pool)
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        try:
            while not stop.is_set():
                r.upsert([Skill(name=f"extra{i}", description="d", body=f"extra body {i} pdf", id=f"x{i}")])
                r.remove([f"x{i}"])
                i += 1
        except Exception as exc:  # surfaced below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(50):
            got = r.route("merge several PDF documents", k=3)
            if got[0].skill.id != "pdf-merge":
                errors.append([g.skill.id for g in got])
    finally:
        stop.set()
        t.join()
    assert errors == []


def test_duplicate_task_ids_are_refused_with_file_and_line(tmp_path):
    from zjulab.skillrouter import SkillParseError

    path = tmp_path / "tasks.jsonl"
    row = {"task_id": "t1", "instruction_text": "x", "relevant": ["a"]}
    path.write_text(
        json.dumps(row) + "\n" + json.dumps({**row, "task_id": "t2"}) + "\n" + json.dumps(row) + "\n"
    )
    with pytest.raises(SkillParseError, match=r"tasks\.jsonl:3: task id 't1' already on line 1"):
        load_tasks(path)


def test_cli_eval_json_reports_strata(capsys):
    from zjulab.skillrouter.cli import main

    assert main(["eval", "--demo", "--retriever", "bm25", "--no-rerank", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_tasks"] == 44 and rep["strata"]["counts"] == {"single": 40.0, "multi": 4.0}
    assert rep["mean"]["Hit@1"] == pytest.approx(32 / 44)
