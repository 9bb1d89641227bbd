"""Ranking metrics with the SkillRouter evaluation's definitions.

``ranked`` is a list of skill ids, best first; ``relevant`` the set of ground-truth ids;
``grades`` an optional map from skill id to graded relevance (3 = needed, 1 = partial...).

* Hit@k: 1 if any relevant id is in the top ``k``.
* MRR@k: 1 / rank of the first relevant id within the top ``k`` (0 if none).
* Recall@k: share of relevant ids found in the top ``k``.
* FullCoverage@k: 1 if every relevant id is in the top ``k`` (1 when there are none).
* nDCG@k: ``DCG = Σ_i g_i / log2(i + 1)`` over ranks ``i = 1..k`` with graded gains from
  ``grades``, normalised by the DCG of all judged grades sorted descending; with no grades,
  gain 1 for relevant ids.

**Duplicate ids.** A ranking that lists a skill twice would collect its gain twice (nDCG above
1: ``["a", "a", "a"]`` against one relevant ``a`` scored 2.13, and repeating the first relevant id
ten times beat a perfect ranking). Every metric here first de-duplicates the ranking, keeping each
id at its first position (:func:`dedupe`), so a repeated id counts once and pushes nothing down;
:func:`~zjulab.skillrouter.evaluation.evaluate_rankings` logs how many rankings had duplicates.
On rankings without duplicates the values equal the SkillRouter authors' ``compute_all_metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from zjulab.common.errors import InputError

__all__ = [
    "METRIC_NAMES",
    "compute_metrics",
    "dcg_at_k",
    "dedupe",
    "full_coverage_at_k",
    "hit_at_k",
    "mean_metrics",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
]

METRIC_NAMES = (
    "Hit@1",
    "MRR@10",
    "nDCG@1",
    "nDCG@3",
    "nDCG@10",
    "Recall@10",
    "Recall@20",
    "Recall@50",
    "FullCoverage@3",
    "FullCoverage@5",
    "FullCoverage@10",
)
"""The metrics :func:`compute_metrics` returns, in report order."""


def dedupe(ranked: Sequence[str]) -> list[str]:
    """``ranked`` with each id kept at its first position only."""
    return list(dict.fromkeys(ranked))


def _k(k: int) -> int:
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    return k


def hit_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 if a relevant id is among the first ``k``, else 0.0."""
    ranked = dedupe(ranked)
    rel = set(relevant)
    return 1.0 if any(r in rel for r in ranked[: _k(k)]) else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Reciprocal rank of the first relevant id within the first ``k`` (0.0 if none)."""
    ranked = dedupe(ranked)
    rel = set(relevant)
    for i, r in enumerate(ranked[: _k(k)], start=1):
        if r in rel:
            return 1.0 / i
    return 0.0


def recall_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """Share of the relevant ids found in the first ``k`` (0.0 when nothing is relevant)."""
    ranked = dedupe(ranked)
    rel = set(relevant)
    if not rel:
        return 0.0
    return len(set(ranked[: _k(k)]) & rel) / len(rel)


def full_coverage_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float:
    """1.0 if every relevant id is in the first ``k`` (vacuously 1.0 when none are)."""
    ranked = dedupe(ranked)
    rel = set(relevant)
    return 1.0 if rel <= set(ranked[: _k(k)]) else 0.0


def dcg_at_k(gains: Sequence[float], k: int) -> float:
    """``Σ_{i=1..k} gains[i-1] / log2(i + 1)``."""
    return sum(g / math.log2(i + 1) for i, g in enumerate(gains[: _k(k)], start=1))


def ndcg_at_k(
    ranked: Sequence[str], relevant: Iterable[str], k: int, grades: Mapping[str, float] | None = None
) -> float:
    """Graded nDCG@k (binary gains from ``relevant`` when ``grades`` is empty or ``None``)."""
    ranked = dedupe(ranked)
    rel = set(relevant)
    if grades:
        gains = [float(grades.get(r, 0.0)) for r in ranked]
        ideal = sorted((float(g) for g in grades.values()), reverse=True)
    else:
        gains = [1.0 if r in rel else 0.0 for r in ranked]
        ideal = [1.0] * len(rel)
    best = dcg_at_k(ideal, k)
    return dcg_at_k(gains, k) / best if best > 0 else 0.0


def compute_metrics(
    ranked: Sequence[str], relevant: Iterable[str], grades: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one ranking (de-duplicated first)."""
    ranked = dedupe(ranked)
    rel = set(relevant)
    out = {
        "Hit@1": hit_at_k(ranked, rel, 1),
        "MRR@10": mrr_at_k(ranked, rel, 10),
    }
    for k in (1, 3, 10):
        out[f"nDCG@{k}"] = ndcg_at_k(ranked, rel, k, grades)
    for k in (10, 20, 50):
        out[f"Recall@{k}"] = recall_at_k(ranked, rel, k)
    for k in (3, 5, 10):
        out[f"FullCoverage@{k}"] = full_coverage_at_k(ranked, rel, k)
    return out


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Average each metric over tasks (empty input gives an empty dict)."""
    if not rows:
        return {}
    return {name: sum(r[name] for r in rows) / len(rows) for name in rows[0]}
