"""PEMS, the procedural evolution maturity score that guides Stage III.

For a skill at refinement round ``k``::

    PEMS(k) = η(k) / (|V_proc| · ln ℓ(k)) · (1 − δ(k))
    δ(k)    = 1 − cos(e(k), e(k−1))        (δ = 0 at the first round)

``η`` is the success rate of the skill's source trajectories when replayed with it, ``|V_proc|``
the number of procedural skills in the scope, ``ℓ`` the skill's length in whitespace tokens and
``e`` its embedding. High PEMS means a skill that works, is concise, shared by few rivals and no
longer moving. Refinement stops when ``|PEMS(k) − PEMS(k−1)| < ε``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PEMSTracker", "pems", "skill_delta"]


def skill_delta(current: np.ndarray, previous: np.ndarray | None) -> float:
    """``1 − cos(current, previous)``; 0 without a previous version, 1 for a zero vector."""
    if previous is None:
        return 0.0
    a = np.asarray(current, dtype=np.float64)
    b = np.asarray(previous, dtype=np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0
    cos = max(-1.0, min(1.0, float(a @ b) / (na * nb)))
    return 1.0 - cos


def pems(success_rate: float, num_procedural: int, token_length: int, delta: float) -> float:
    """``η / (|V_proc| · ln ℓ) · (1 − δ)``.

    ``num_procedural`` and ``token_length`` are clamped to at least 1; a one-token skill
    (``ln 1 = 0``) scores 0 rather than dividing by zero.
    """
    n = max(int(num_procedural), 1)
    length = max(int(token_length), 1)
    denom = n * math.log(length)
    if denom == 0.0:
        return 0.0
    return success_rate / denom * (1.0 - delta)


class PEMSTracker:
    """Records the PEMS of successive versions of one skill and decides when to stop.

    Args:
        epsilon: Convergence threshold on ``|ΔPEMS|``.
    """

    def __init__(self, epsilon: float = 0.01) -> None:
        self.epsilon = epsilon
        self.history: list[float] = []

    def update(self, success_rate: float, num_procedural: int, token_length: int, delta: float) -> float:
        """Compute, record and return the PEMS of the newest version."""
        value = pems(success_rate, num_procedural, token_length, delta)
        self.history.append(value)
        return value

    @property
    def converged(self) -> bool:
        """True once two versions exist and the last change is below ``epsilon``."""
        return len(self.history) >= 2 and abs(self.history[-1] - self.history[-2]) < self.epsilon
