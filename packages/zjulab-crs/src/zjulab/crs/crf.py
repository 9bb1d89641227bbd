r"""A linear-chain conditional random field in torch: forward algorithm and Viterbi decoding.

For emissions :math:`E \in \mathbb{R}^{L \times T}` and a tag path :math:`y_1..y_L` the CRF
scores

.. math::  s(y) = a_{y_1} + \sum_{i=1}^{L} E_{i,y_i} + \sum_{i=2}^{L} A_{y_{i-1},y_i} + b_{y_L}

with start scores :math:`a`, transition scores :math:`A` and end scores :math:`b`. Training
minimises :math:`\log Z - s(y^*)`, where :math:`\log Z = \log\sum_y e^{s(y)}` comes from the
forward algorithm in :math:`O(L T^2)`; decoding takes the best path with Viterbi. Transitions
that a tagging scheme forbids (``O -> I-x`` in BIO) can be masked with a large negative score.
(Lafferty et al., 2001; the BERT+BiLSTM+CRF tagger of U-NEED's task 1 uses this layer.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from zjulab.crs.errors import CrsConfigError, MetricInputError

__all__ = ["LinearChainCRF", "bio_constraints"]

_FORBIDDEN = -1.0e4


def bio_constraints(tags: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed starts and transitions of a BIO tag set.

    ``I-x`` may follow only ``B-x`` or ``I-x`` and may not start a sequence; everything else is
    allowed.

    Args:
        tags: Tag names such as ``["O", "B-color", "I-color"]``.

    Returns:
        ``(start_allowed [T], transition_allowed [T, T])`` boolean tensors; ``[i, j]`` is the
        move from tag ``i`` to tag ``j``.
    """
    n = len(tags)
    start = torch.ones(n, dtype=torch.bool)
    trans = torch.ones(n, n, dtype=torch.bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            start[j] = False
            label = tag[2:]
            for i, prev in enumerate(tags):
                trans[i, j] = prev in (f"B-{label}", f"I-{label}")
    return start, trans


class LinearChainCRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    Args:
        num_tags: Number of tags.
        start_allowed: Optional boolean ``[T]`` mask of tags a sequence may start with.
        transition_allowed: Optional boolean ``[T, T]`` mask of allowed moves ``i -> j``.

    Shapes: emissions ``[B, L, T]``, tags ``[B, L]`` (long), mask ``[B, L]`` (bool; each row a
    prefix of ones, the first position always on).
    """

    def __init__(
        self,
        num_tags: int,
        *,
        start_allowed: torch.Tensor | None = None,
        transition_allowed: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 1:
            raise CrsConfigError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)
        nn.init.uniform_(self.transitions, -0.1, 0.1)
        sa = torch.ones(num_tags, dtype=torch.bool) if start_allowed is None else start_allowed.bool()
        ta = (
            torch.ones(num_tags, num_tags, dtype=torch.bool)
            if transition_allowed is None
            else transition_allowed.bool()
        )
        if sa.shape != (num_tags,) or ta.shape != (num_tags, num_tags):
            raise CrsConfigError(
                f"constraint shapes {tuple(sa.shape)} / {tuple(ta.shape)} do not match num_tags={num_tags}"
            )
        self.register_buffer("start_allowed", sa, persistent=False)
        self.register_buffer("transition_allowed", ta, persistent=False)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zero = torch.zeros((), device=self.transitions.device)
        start_ok: torch.Tensor = self.start_allowed  # type: ignore[assignment]
        trans_ok: torch.Tensor = self.transition_allowed  # type: ignore[assignment]
        start = self.start_transitions + torch.where(start_ok, zero, zero + _FORBIDDEN)
        trans = self.transitions + torch.where(trans_ok, zero, zero + _FORBIDDEN)
        return start, trans, self.end_transitions

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if emissions.dim() != 3 or emissions.size(-1) != self.num_tags:
            raise MetricInputError(
                f"emissions must be [batch, length, {self.num_tags}], got {tuple(emissions.shape)}"
            )
        if mask is None:
            mask = torch.ones(emissions.shape[:2], dtype=torch.bool, device=emissions.device)
        mask = mask.bool()
        if mask.shape != emissions.shape[:2]:
            raise MetricInputError(
                f"mask shape {tuple(mask.shape)} != emissions {tuple(emissions.shape[:2])}"
            )
        if emissions.size(1) == 0 or not bool(mask[:, 0].all()):
            raise MetricInputError("every sequence needs at least one position: mask[:, 0] must be on")
        return mask

    def path_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unnormalised score :math:`s(y)` of each tag path, ``[B]``."""
        mask = self._check(emissions, mask)
        start, trans, end = self._scores()
        em = emissions.float()
        bsz, length, _ = em.shape
        idx = torch.arange(bsz, device=em.device)
        score = start[tags[:, 0]] + em[idx, 0, tags[:, 0]]
        for i in range(1, length):
            step = trans[tags[:, i - 1], tags[:, i]] + em[idx, i, tags[:, i]]
            score = score + step * mask[:, i]
        last = mask.long().sum(1) - 1
        return score + end[tags[idx, last]]

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        r""":math:`\log Z` of each sequence by the forward algorithm, ``[B]``."""
        mask = self._check(emissions, mask)
        start, trans, end = self._scores()
        em = emissions.float()
        alpha = start + em[:, 0]
        for i in range(1, em.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0) + em[:, i].unsqueeze(1), dim=1)
            alpha = torch.where(mask[:, i : i + 1], nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def forward(
        self,
        emissions: torch.Tensor,
        tags: torch.Tensor,
        mask: torch.Tensor | None = None,
        reduction: Literal["mean", "sum", "none"] = "mean",
    ) -> torch.Tensor:
        r"""Negative log-likelihood :math:`\log Z - s(y)` of the gold tags."""
        if tags.shape != emissions.shape[:2]:
            raise MetricInputError(
                f"tags shape {tuple(tags.shape)} != emissions {tuple(emissions.shape[:2])}"
            )
        nll = self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)
        if reduction == "mean":
            return nll.mean()
        if reduction == "sum":
            return nll.sum()
        return nll

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """Best tag path of each sequence (Viterbi), trimmed to its length."""
        mask = self._check(emissions, mask)
        start, trans, end = self._scores()
        em = emissions.float()
        bsz, length, _ = em.shape
        score = start + em[:, 0]
        history = []
        for i in range(1, length):
            total = score.unsqueeze(2) + trans.unsqueeze(0)
            best, arg = total.max(dim=1)
            nxt = best + em[:, i]
            history.append(arg)
            score = torch.where(mask[:, i : i + 1], nxt, score)
        score = score + end
        lengths = mask.long().sum(1).tolist()
        paths = []
        for b in range(bsz):
            tag = int(score[b].argmax())
            path = [tag]
            for i in range(lengths[b] - 1, 0, -1):
                tag = int(history[i - 1][b, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths
