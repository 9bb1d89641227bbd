from __future__ import annotations

import json

import pytest

from zjulab.common.errors import InputError
from zjulab.common.testing import HashingEncoder
from zjulab.skillrouter import (
    EmptyPoolError,
    RouterConfig,
    SkillRouter,
    evaluate,
    evaluate_rankings,
    format_table,
    load_tasks,
)
from zjulab.skillrouter.demo_pool import load_demo_pool


def test_skillrouter_benchmark_tasks_load_by_path(shared_data):
    root = shared_data / "skillrouter" / "data" / "eval_core"
    tasks = load_tasks(root / "tasks.jsonl", root / "relevance.json")
    assert len(tasks) == 75  # generic_only tasks are not scored
    by_id = {t.id: t for t in tasks}
    t = by_id["3d-scan-calc"]
    assert t.relevant == {"gt/mesh-analysis"}
    assert t.grades["gt/mesh-analysis"] == 3.0 and t.grades["degraded/mesh-analysis_steps-removed_162"] == 1.0
    assert t.query.startswith("You need to calculate the mass of a 3D printed part")
    multi = sum(len(t.relevant) > 1 for t in tasks)
    assert (len(tasks) - multi, multi) == (24, 51)


def test_example_submission_scores(shared_data):
    root = shared_data / "skillrouter"
    tasks = load_tasks(root / "data" / "eval_core" / "tasks.jsonl")
    preds = json.loads((root / "evaluation" / "example_retrieval_submission.json").read_text())
    sub = [t for t in tasks if t.id in preds]
    rep = evaluate_rankings(preds, sub)
    # 3d-scan-calc: gt/mesh-analysis at rank 1 -> hit; the others rank a gt skill first too
    assert rep.per_task["3d-scan-calc"]["Hit@1"] == 1.0
    assert rep.per_task["3d-scan-calc"]["nDCG@1"] == 1.0
    assert rep.n_tasks == 3


def test_pool_restriction_skips_tasks_without_ground_truth(tmp_path):
    tasks_path = tmp_path / "tasks.jsonl"
    rows = [
        {"task_id": "a", "instruction_text": "do a", "relevant": ["s1"], "relevance": {"s1": 3, "s9": 1}},
        {"task_id": "b", "instruction_text": "do b", "relevant": ["s9"], "relevance": {"s9": 3}},
    ]
    tasks_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = load_tasks(tasks_path)
    rep = evaluate_rankings({"a": ["s2", "s1"], "b": ["s1"]}, tasks, pool_ids={"s1", "s2"})
    assert rep.skipped == ["b"] and rep.n_tasks == 1
    assert rep.mean["MRR@10"] == 0.5
    with pytest.raises(InputError, match="no ranking for task 'a'"):
        evaluate_rankings({}, tasks)
    with pytest.raises(EmptyPoolError, match="split='test'"):
        load_tasks(tasks_path, split="test")


def test_demo_pool_shape():
    pool = load_demo_pool()
    assert len(pool.skills) == 200 and len({s.id for s in pool.skills}) == 200
    assert len(pool.tasks) >= 60 and len(pool.test) == 44 and len(pool.train) == 40
    assert {t.id for t in pool.train}.isdisjoint(t.id for t in pool.test)
    groups = {}
    for s in pool.skills:
        groups.setdefault(s.metadata["group"], []).append(s)
    assert len(groups) == 40 and all(len(g) == 5 for g in groups.values())
    for g in groups.values():  # near-identical metadata, different bodies
        assert len({s.description.split(".")[0] for s in g}) == 1
        assert len({s.body.split("\n")[2] for s in g}) == 5
    ids = {s.id for s in pool.skills}
    for t in pool.tasks:
        assert t.relevant <= ids and set(t.grades) <= ids
        assert all(t.grades[r] == 3 for r in t.relevant)
    assert sum(len(t.relevant) > 1 for t in pool.test) == 4


def test_evaluate_router_on_demo_pool_body_matters():
    pool = load_demo_pool()
    full = SkillRouter(None, None, RouterConfig(retriever="bm25", rerank=False)).index(pool.skills)
    nd = SkillRouter(
        None, None, RouterConfig(retriever="bm25", rerank=False, fields="name_description")
    ).index(pool.skills)
    a, b = evaluate(full, pool.test, name="bm25"), evaluate(nd, pool.test, name="bm25-nd")
    assert a.mean["Hit@1"] > b.mean["Hit@1"] + 0.3
    table = format_table([a, b])
    assert table.splitlines()[0].split()[:4] == ["method", "Hit@1", "nDCG@10", "Recall@10"]
    dense = SkillRouter(HashingEncoder(512), None, RouterConfig(rerank=False)).index(pool.skills)
    assert evaluate(dense, pool.test[:5]).n_tasks == 5
