"""The hybrid relevance score of Stage I.

Each signal is min-max normalised over the candidate set, then the three are mixed::

    score(v, q) = w_cos · N(cos(v, q)) + w_bm25 · N(BM25(v, q)) + w_llm · N(LLM_ver(v, q))

with ``N(x) = (x - min) / (max - min)`` over the candidates, and ``N(x) = 0`` for every candidate
when a signal is constant (it then carries no ranking information). Default weights 1.0 / 0.5 /
0.3 follow the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hybrid_scores", "minmax"]


def minmax(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant (or empty) input maps to zeros."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-8:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def hybrid_scores(
    dense: Sequence[float] | np.ndarray,
    bm25: Sequence[float] | np.ndarray,
    llm: Sequence[float] | np.ndarray | None = None,
    *,
    dense_weight: float = 1.0,
    bm25_weight: float = 0.5,
    llm_weight: float = 0.3,
) -> np.ndarray:
    """Weighted sum of the min-max normalised signals (see the module docstring).

    Args:
        dense: Cosine similarities of the candidates to the query.
        bm25: BM25 scores of the candidates.
        llm: Verification scores in [0, 1], or None when no chat model verified (the term is
            then dropped, which is what a constant signal gives anyway).
        dense_weight: Weight of the cosine term.
        bm25_weight: Weight of the BM25 term.
        llm_weight: Weight of the verification term.

    Returns:
        One score per candidate.
    """
    out = dense_weight * minmax(dense) + bm25_weight * minmax(bm25)
    if llm is not None:
        out = out + llm_weight * minmax(llm)
    return out
