"""The one tie rule every retriever follows, and exact top-k selection under it.

**Tie rule.** Results are ordered by score, highest first; skills with equal scores are ordered
by their position in the indexed pool (the order of ``router.skills``), lowest first. The rule
holds for numpy brute force, the faiss flat index (the search window is widened until a tie no
longer straddles the cut), HNSW and IVF (over the candidates they return), BM25 and the hybrid
fusion, so the same pool and query give the same list on every backend that finds the same
candidates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["order_hits", "top_k_row"]


def top_k_row(scores: np.ndarray, k: int, *, above: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of one score row under the tie rule.

    Args:
        scores: ``[n]`` scores, one per pool position.
        k: How many to keep.
        above: Keep only scores strictly greater than this (BM25 passes ``0.0``: a skill that
            matched no query term is not a result).

    Returns:
        ``(scores, ids)`` best first; fewer than ``k`` when ``above`` leaves fewer.
    """
    row = np.asarray(scores)
    cand = np.arange(row.shape[0]) if above is None else np.flatnonzero(row > above)
    if cand.size > k:
        sub = row[cand]
        part = np.argpartition(-sub, k - 1)[:k]
        kth = sub[part].min()
        greater = cand[sub > kth]
        equal = cand[sub == kth][: k - greater.size]  # cand is sorted: lowest positions first
        cand = np.concatenate([greater, equal])
    order = np.lexsort((cand, -row[cand]))
    sel = cand[order]
    return row[sel], sel


def order_hits(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-order each row of a ``(scores, ids)`` search result under the tie rule.

    ``-1`` ids (an approximate index found fewer vectors) go last.
    """
    s = np.asarray(scores)
    i = np.asarray(ids)
    out_s, out_i = np.empty_like(s), np.empty_like(i)
    for r in range(s.shape[0]):
        missing = i[r] < 0
        key_s = np.where(missing, np.inf, -s[r].astype(np.float64))
        key_i = np.where(missing, np.iinfo(np.int64).max, i[r])
        order = np.lexsort((key_i, key_s))
        out_s[r], out_i[r] = s[r][order], i[r][order]
    return out_s, out_i
