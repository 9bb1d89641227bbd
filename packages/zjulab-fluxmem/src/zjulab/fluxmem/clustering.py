"""Deterministic k-means for grouping successful trajectories (Stage III)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kmeans", "num_clusters"]


def num_clusters(n: int) -> int:
    """The paper's cluster count ``k = max(1, ⌊√(n/2)⌋)`` for ``n`` trajectories."""
    if n <= 0:
        return 1
    return max(1, math.isqrt(n // 2))  # ⌊√(n/2)⌋ == ⌊√⌊n/2⌋⌋ for integer n


def kmeans(x: np.ndarray, k: int, *, iters: int = 50, seed: int = 0) -> np.ndarray:
    """Cluster the rows of ``x`` into ``k`` groups (k-means++ start, Lloyd iterations).

    Args:
        x: ``[n, d]`` data.
        k: Number of clusters (clamped to ``n``).
        iters: Lloyd iterations at most.
        seed: Seed of the k-means++ start.

    Returns:
        ``[n]`` integer labels in ``0..k-1``, renumbered by first appearance so that the
        output does not depend on the order the centres were picked.
    """
    data = np.asarray(x, dtype=np.float64)
    n = len(data)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centers = [data[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = np.min(((data[:, None, :] - np.asarray(centers)[None]) ** 2).sum(-1), axis=1)
        total = float(d2.sum())
        if total <= 0.0:
            centers.append(data[int(rng.integers(n))])
            continue
        centers.append(data[int(rng.choice(n, p=d2 / total))])
    c = np.asarray(centers)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        dist = ((data[:, None, :] - c[None]) ** 2).sum(-1)
        new = dist.argmin(1)
        if it > 0 and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = data[labels == j]
            if len(members):
                c[j] = members.mean(0)
    remap: dict[int, int] = {}
    for lab in labels.tolist():
        remap.setdefault(lab, len(remap))
    return np.asarray([remap[lab] for lab in labels.tolist()], dtype=np.int64)
