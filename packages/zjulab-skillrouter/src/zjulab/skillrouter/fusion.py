"""Reciprocal-rank fusion of several rankings."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

from zjulab.common.errors import ConfigError

__all__ = ["reciprocal_rank_fusion"]

K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[K]], *, k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[K, float]]:
    """Fuse rankings by ``score(d) = Σ_r w_r / (k + rank_r(d))`` with 1-based ranks.

    A document absent from a ranking gets nothing from it; a document listed twice in one
    ranking counts once, at its first rank (a repeated id must not collect extra weight). Ties
    keep the order in which the documents were first seen (first ranking first), so the result
    is deterministic.

    Args:
        rankings: Each a list of document keys, best first.
        k: The fusion constant (60 in Cormack, Clarke and Büttcher, SIGIR 2009).
        weights: One weight per ranking (default all 1).

    Returns:
        ``(key, fused score)`` pairs, best first.
    """
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")
    w = [1.0] * len(rankings) if weights is None else list(weights)
    if len(w) != len(rankings):
        raise ConfigError(f"{len(w)} weights for {len(rankings)} rankings")
    scores: dict[K, float] = {}
    for ranking, weight in zip(rankings, w):
        for rank, key in enumerate(dict.fromkeys(ranking), start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    order = {key: i for i, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))
