from __future__ import annotations

import math

import pytest

from zjulab.common.errors import InputError
from zjulab.skillrouter import (
    compute_metrics,
    full_coverage_at_k,
    hit_at_k,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank_fusion,
)

RANKED = ["a", "b", "c", "d"]
REL = {"b", "d"}


def test_hit_mrr_recall_coverage_hand_worked():
    assert hit_at_k(RANKED, REL, 1) == 0.0
    assert hit_at_k(RANKED, REL, 2) == 1.0
    assert mrr_at_k(RANKED, REL, 10) == 0.5
    assert mrr_at_k(RANKED, REL, 1) == 0.0
    assert recall_at_k(RANKED, REL, 2) == 0.5
    assert recall_at_k(RANKED, REL, 10) == 1.0
    assert recall_at_k(RANKED, set(), 10) == 0.0
    assert full_coverage_at_k(RANKED, REL, 3) == 0.0
    assert full_coverage_at_k(RANKED, REL, 4) == 1.0
    assert full_coverage_at_k(RANKED, set(), 1) == 1.0


def test_graded_ndcg_hand_worked():
    # gains by rank: 0, 3, 0, 1; judged grades 3, 1, 1 (x is judged but not retrieved)
    grades = {"b": 3, "d": 1, "x": 1}
    idcg3 = 3 + 1 / math.log2(3) + 1 / 2  # 4.130930
    assert ndcg_at_k(RANKED, REL, 1, grades) == 0.0
    assert ndcg_at_k(RANKED, REL, 3, grades) == pytest.approx(0.458199, abs=1e-6)
    assert ndcg_at_k(RANKED, REL, 3, grades) == pytest.approx((3 / math.log2(3)) / idcg3)
    assert ndcg_at_k(RANKED, REL, 10, grades) == pytest.approx(0.562456, abs=1e-6)


def test_binary_ndcg_without_grades():
    # DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(RANKED, REL, 10) == pytest.approx(0.650921, abs=1e-6)
    assert ndcg_at_k(["b", "d"], REL, 10) == pytest.approx(1.0)


def test_compute_metrics_keys_and_mean():
    m = compute_metrics(RANKED, REL, {"b": 3, "d": 1})
    assert m["MRR@10"] == 0.5 and m["FullCoverage@5"] == 1.0 and m["FullCoverage@3"] == 0.0
    perfect = compute_metrics(["b", "d", "a"], REL)
    assert perfect["Hit@1"] == 1.0 and perfect["nDCG@10"] == pytest.approx(1.0)
    avg = mean_metrics([m, perfect])
    assert avg["Hit@1"] == 0.5
    assert mean_metrics([]) == {}


def test_bad_k():
    with pytest.raises(InputError, match="k must be positive"):
        hit_at_k(RANKED, REL, 0)


def test_reciprocal_rank_fusion_hand_worked():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "d"]], k=60)
    assert [key for key, _ in fused] == ["b", "c", "a", "d"]
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    weighted = dict(reciprocal_rank_fusion([["a"], ["b"]], k=1, weights=[2.0, 1.0]))
    assert weighted == {"a": 1.0, "b": 0.5}


def _authors_definitions(ranked, gt, rel_map):
    """The SkillRouter authors' metric definitions (their src/metrics.py), restated independently:
    nDCG over log2(i + 2) with 0-based i and the ideal from every judged grade; no de-duplication."""

    def dcg(gains, k):
        return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))

    gains = (
        [float(rel_map.get(r, 0)) for r in ranked] if rel_map else [1.0 if r in gt else 0.0 for r in ranked]
    )
    ideal = sorted(rel_map.values(), reverse=True) if rel_map else [1.0] * len(gt)
    out = {f"nDCG@{k}": dcg(gains, k) / dcg(ideal, k) for k in (1, 3, 10)}
    out["MRR@10"] = next((1 / (i + 1) for i, r in enumerate(ranked[:10]) if r in gt), 0.0)
    out["Hit@1"] = float(bool(ranked[:1]) and ranked[0] in gt)
    for k in (10, 20, 50):
        out[f"Recall@{k}"] = len(set(ranked[:k]) & gt) / len(gt)
    for k in (3, 5, 10):
        out[f"FullCoverage@{k}"] = float(gt <= set(ranked[:k]))
    return out


@pytest.mark.parametrize(
    ("ranked", "gt", "grades"),
    [
        (["a", "b", "c", "d"], {"b", "d"}, {"b": 3, "d": 1, "x": 1}),
        (["x", "y", "a"], {"a"}, {"a": 3, "y": 1}),
        (["b", "a"] + [f"n{i}" for i in range(60)], {"a", "b"}, {}),
        (["n1", "n2", "n3"], {"a"}, {"a": 3}),
    ],
)
def test_equal_to_the_authors_definitions_without_duplicates(ranked, gt, grades):
    ours = compute_metrics(ranked, gt, grades or None)
    ref = _authors_definitions(ranked, gt, grades)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value), name


def test_duplicates_are_scored_as_the_authors_score_the_deduplicated_ranking():
    spam = ["a"] * 10
    grades = {"a": 3, "b": 1}
    ref_raw = _authors_definitions(spam, {"a", "b"}, grades)
    assert ref_raw["nDCG@10"] > 1.5  # without de-duplication the repeats collect gain ten times
    ours = compute_metrics(spam, {"a", "b"}, grades)
    assert ours == pytest.approx(
        {k: v for k, v in _authors_definitions(["a"], {"a", "b"}, grades).items() if k in ours}
    )
    assert ours["nDCG@10"] <= 1.0
