r"""SERL's rewards, as pure functions of a group's verdicts.

Notation for one group (one prompt): N responses, K judgments per unordered pair, so every
response takes part in ``M = (N - 1) * K`` judgments. A judgment is a
:class:`~zjulab.serl.pairs.JudgmentSlot` (who was shown first and second) and a verdict
(1, 2 or ``None`` for an unreadable answer).

Actor reward, length controlled (the paper's; the authors' ``rewards_actor``)::

    R_A(i) = (1 / M) * sum over judgments won by i against j of  len(j) / len(i),
             counted only when  low * len(j) < len(i) < high * len(j)

that is, the winner's length must lie within the band around the loser's length
(``band_reference="loser"``, the default). ``band_reference="winner"`` puts the band around the
winner's length instead (``low * len(i) < len(j) < high * len(i)``). Lost and invalid judgments
add nothing. Lengths are in words.

Actor reward, plain Copeland (pairwise majority)::

    R_A(i) = (pairs where i got more valid votes than j - pairs where it got fewer) / (N - 1)

Judge reward (self-consistency) of a judgment that picks w over l::

    R_J = +1 if R_A(w) > R_A(l),  -1 if R_A(w) < R_A(l),  0 if equal,  -1 for an invalid verdict

Advantages are GRPO's group normalisation, ``(r - mean) / (std + eps)`` with the unbiased std:
over the N responses of a prompt for the Actor and over the K judgments of a pair for the Judge.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from zjulab.serl.config import check_band, check_band_reference
from zjulab.serl.errors import SERLInputError
from zjulab.serl.pairs import JudgmentSlot

__all__ = [
    "JudgeDiagnostics",
    "actor_rewards",
    "copeland_rewards",
    "group_advantages",
    "judge_diagnostics",
    "judge_rewards",
    "length_controlled_rewards",
    "verdict_matrix",
]

logger = logging.getLogger(__name__)

Verdict = int | None
Floats = Sequence[float] | np.ndarray


def _check(num_responses: int, slots: Sequence[JudgmentSlot], verdicts: Sequence[Verdict]) -> None:
    if len(slots) != len(verdicts):
        raise SERLInputError(f"{len(verdicts)} verdicts for {len(slots)} judgment slots")
    for k, (s, v) in enumerate(zip(slots, verdicts)):
        if not (0 <= s.first < num_responses and 0 <= s.second < num_responses) or s.first == s.second:
            raise SERLInputError(
                f"slot {k} compares {s.first} and {s.second}, outside 0..{num_responses - 1}"
            )
        if v not in (1, 2, None):
            raise SERLInputError(f"verdict {k} is {v!r}; a verdict is 1, 2 or None")


def verdict_matrix(
    num_responses: int, slots: Sequence[JudgmentSlot], verdicts: Sequence[Verdict]
) -> np.ndarray:
    """``W[i, j]``: how many judgments preferred response i over response j (invalid ones skipped).

    Raises:
        SERLInputError: Lengths differ, an index is out of range or a verdict is not 1/2/None.
    """
    _check(num_responses, slots, verdicts)
    w = np.zeros((num_responses, num_responses), dtype=np.int64)
    for s, v in zip(slots, verdicts):
        win, lose = s.winner(v), s.loser(v)
        if win is not None and lose is not None:
            w[win, lose] += 1
    return w


def _judgments_per_response(num_responses: int, slots: Sequence[JudgmentSlot]) -> np.ndarray:
    m = np.zeros(num_responses, dtype=np.int64)
    for s in slots:
        m[s.first] += 1
        m[s.second] += 1
    return m


def length_controlled_rewards(
    lengths: Sequence[int],
    slots: Sequence[JudgmentSlot],
    verdicts: Sequence[Verdict],
    band: tuple[float, float] = (0.8, 1.2),
    band_reference: Literal["loser", "winner"] = "loser",
) -> np.ndarray:
    """The paper's Actor reward (see the module docstring for the formula).

    ``M`` is the number of judgments response i takes part in (``(N - 1) * K`` for a full set of
    slots from :func:`~zjulab.serl.pairs.build_pairs`). A response with zero words earns nothing.

    Args:
        lengths: Word count of each response.
        slots: The judgment slots of the group.
        verdicts: One verdict per slot (1, 2 or None).
        band: ``(low, high)``: with ``band_reference="loser"`` a win counts when
            ``low * len(loser) < len(winner) < high * len(loser)`` (the authors' rule); with
            ``"winner"`` when ``low * len(winner) < len(loser) < high * len(winner)``.
        band_reference: Whose length the band is drawn around (see ``band``).

    Returns:
        float64 array of length N with values in ``[0, high]``.

    Raises:
        SERLInputError: Mismatched inputs or negative lengths.
        SERLConfigError: An invalid band or band reference.
    """
    low, high = check_band(band, "band")
    check_band_reference(band_reference)
    n = len(lengths)
    _check(n, slots, verdicts)
    if any((not isinstance(x, (int, np.integer))) or x < 0 for x in lengths):
        raise SERLInputError(f"lengths must be non-negative integers, got {list(lengths)!r}")
    m = _judgments_per_response(n, slots)
    total = np.zeros(n, dtype=np.float64)
    for s, v in zip(slots, verdicts):
        win, lose = s.winner(v), s.loser(v)
        if win is None or lose is None or lengths[win] == 0:
            continue
        lw, ll = float(lengths[win]), float(lengths[lose])
        inside = low * ll < lw < high * ll if band_reference == "loser" else low * lw < ll < high * lw
        if inside:
            total[win] += ll / lw
    return np.divide(total, m, out=np.zeros(n), where=m > 0)


def copeland_rewards(
    num_responses: int, slots: Sequence[JudgmentSlot], verdicts: Sequence[Verdict]
) -> np.ndarray:
    """Plain Copeland score: ``(pairs won - pairs lost) / (N - 1)`` by majority of valid votes.

    A pair whose valid votes split evenly (or that has none) is a tie and counts for neither.

    Returns:
        float64 array of length N with values in ``[-1, 1]``.
    """
    w = verdict_matrix(num_responses, slots, verdicts)
    won = (w > w.T).sum(axis=1)
    lost = (w < w.T).sum(axis=1)
    return (won - lost).astype(np.float64) / max(num_responses - 1, 1)


def actor_rewards(
    responses_or_lengths: Sequence[str] | Sequence[int],
    slots: Sequence[JudgmentSlot],
    verdicts: Sequence[Verdict],
    *,
    mode: Literal["length_controlled", "copeland"] = "length_controlled",
    band: tuple[float, float] = (0.8, 1.2),
    band_reference: Literal["loser", "winner"] = "loser",
) -> np.ndarray:
    """Actor rewards of one group, by either rule.

    Args:
        responses_or_lengths: The responses (their words are counted) or their word counts.
        slots: Judgment slots of the group.
        verdicts: One verdict per slot.
        mode: ``"length_controlled"`` or ``"copeland"``.
        band: Length band of the length-controlled rule.
        band_reference: Whose length the band is drawn around (see :func:`length_controlled_rewards`).

    Raises:
        SERLInputError: Mismatched inputs or an unknown mode.
    """
    from zjulab.serl.pairs import word_count

    items = list(responses_or_lengths)
    lengths = [word_count(x) if isinstance(x, str) else x for x in items]
    if mode == "length_controlled":
        return length_controlled_rewards(lengths, slots, verdicts, band, band_reference)  # type: ignore[arg-type]
    if mode == "copeland":
        return copeland_rewards(len(items), slots, verdicts)
    raise SERLInputError(f"mode must be 'length_controlled' or 'copeland', got {mode!r}")


def judge_rewards(
    slots: Sequence[JudgmentSlot], verdicts: Sequence[Verdict], actor: Floats, *, tol: float = 1e-9
) -> np.ndarray:
    """Self-consistency reward of each judgment (see the module docstring).

    Args:
        slots: Judgment slots.
        verdicts: One verdict per slot.
        actor: Actor rewards of the group's responses.
        tol: Rewards closer than this are a tie.

    Returns:
        float64 array with values in ``{-1, 0, 1}``.
    """
    r = np.asarray(actor, dtype=np.float64)
    _check(len(r), slots, verdicts)
    out = np.empty(len(slots), dtype=np.float64)
    for k, (s, v) in enumerate(zip(slots, verdicts)):
        win, lose = s.winner(v), s.loser(v)
        if win is None or lose is None:
            out[k] = -1.0
        elif r[win] > r[lose] + tol:
            out[k] = 1.0
        elif r[win] < r[lose] - tol:
            out[k] = -1.0
        else:
            out[k] = 0.0
    return out


def group_advantages(
    rewards: Floats, group_size: int, *, scale: bool = True, eps: float = 1e-4
) -> np.ndarray:
    """GRPO advantages: ``(r - group mean) / (group std + eps)`` over consecutive groups.

    The std is the unbiased one (as in TRL); a group whose rewards are all equal gets zeros.

    Args:
        rewards: Flat rewards, groups consecutive.
        group_size: Rewards per group (N for the Actor, K for the Judge).
        scale: Divide by the std (``False``: only centre, as TRL's ``scale_rewards="none"``).
        eps: Added to the std.

    Raises:
        SERLInputError: The length is not a multiple of ``group_size``.
    """
    r = np.asarray(rewards, dtype=np.float64)
    if group_size <= 0 or r.size % group_size:
        raise SERLInputError(f"{r.size} rewards do not split into groups of {group_size}")
    g = r.reshape(-1, group_size)
    centred = g - g.mean(axis=1, keepdims=True)
    if scale:
        std = g.std(axis=1, ddof=1, keepdims=True) if group_size > 1 else np.zeros_like(g[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1)


@dataclass
class JudgeDiagnostics:
    """Counts describing a judge's behaviour; add two with ``+``.

    Attributes:
        judgments: Judgments seen.
        invalid: Judgments without a valid verdict.
        first_picks: Valid verdicts that picked Answer 1.
        order_pairs: Couples (one judgment in each order of the same pair) with both verdicts valid.
        consistent_pairs: Of those, couples that picked the same response.
        agree: Judgments whose judge reward is +1.
        disagree: Judgments whose judge reward is -1 with a valid verdict.
        spread_sum: Sum over groups of the std of the Actor rewards.
        groups: Groups seen.
    """

    judgments: int = 0
    invalid: int = 0
    first_picks: int = 0
    order_pairs: int = 0
    consistent_pairs: int = 0
    agree: int = 0
    disagree: int = 0
    spread_sum: float = 0.0
    groups: int = 0

    def __add__(self, other: JudgeDiagnostics) -> JudgeDiagnostics:
        return JudgeDiagnostics(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @staticmethod
    def _rate(num: float, den: float) -> float:
        return num / den if den else math.nan

    @property
    def invalid_rate(self) -> float:
        """Share of judgments without a valid verdict."""
        return self._rate(self.invalid, self.judgments)

    @property
    def consistency_rate(self) -> float:
        """Share of both-order couples where the judge picked the same response (NaN if none)."""
        return self._rate(self.consistent_pairs, self.order_pairs)

    @property
    def position_bias(self) -> float:
        """Share of valid verdicts that picked Answer 1, minus 0.5 (0: no bias; +0.5: always first)."""
        valid = self.judgments - self.invalid
        return self._rate(self.first_picks, valid) - 0.5 if valid else math.nan

    @property
    def reward_spread(self) -> float:
        """Mean over groups of the (population) std of the Actor rewards."""
        return self._rate(self.spread_sum, self.groups)

    def as_dict(self) -> dict[str, float]:
        """The rates, keyed for logging."""
        return {
            "invalid_rate": self.invalid_rate,
            "consistency_rate": self.consistency_rate,
            "position_bias": self.position_bias,
            "reward_spread": self.reward_spread,
            "judge_agree_rate": self._rate(self.agree, self.judgments),
            "judge_disagree_rate": self._rate(self.disagree, self.judgments),
        }


def judge_diagnostics(
    slots: Sequence[JudgmentSlot], verdicts: Sequence[Verdict], actor: Floats
) -> JudgeDiagnostics:
    """Diagnostics of one group's judgments.

    Self-consistency pairs every judgment shown in one order with every judgment of the same pair
    shown in the other order; a couple is consistent when both name the same response.
    """
    r = np.asarray(actor, dtype=np.float64)
    jr = judge_rewards(slots, verdicts, r)
    d = JudgeDiagnostics(judgments=len(slots), groups=1, spread_sum=float(r.std()) if r.size else 0.0)
    by_pair: dict[int, tuple[list[int | None], list[int | None]]] = {}
    for s, v, reward in zip(slots, verdicts, jr):
        if v is None:
            d.invalid += 1
        else:
            d.first_picks += int(v == 1)
            d.agree += int(reward > 0)
            d.disagree += int(reward < 0)
        fwd, bwd = by_pair.setdefault(s.pair, ([], []))
        (fwd if s.first < s.second else bwd).append(s.winner(v))
    for fwd, bwd in by_pair.values():
        for a in fwd:
            for b in bwd:
                if a is not None and b is not None:
                    d.order_pairs += 1
                    d.consistent_pairs += int(a == b)
    return d
