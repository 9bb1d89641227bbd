"""Token-level rubric advantages from relevance weights and rubric scores (pure torch).

Shapes: ``B`` responses (``B = N·G``: ``N`` prompts, each with a group of ``G`` consecutive
responses, the layout TRL uses), ``K`` rubrics per prompt (padded, see ``rubric_mask``) and
``T`` response tokens (padded, see ``token_mask``).

* ``weights`` ``w[i, k, t]`` in [0, 1]: how relevant token ``t`` of response ``i`` is to rubric ``k``.
* ``scores`` ``s[i, k]`` in [-1, 1]: whether response ``i`` satisfies rubric ``k``.
* ``x[i, k, t] = w[i, k, t] · s[i, k]``: the signed token credit before normalisation.

Group statistics are taken over a ``[N, G, K, T]`` *view* of the batch (groups are consecutive,
so this view is exact) by reducing over the ``G`` and ``T`` axes; the ``K`` axis is never folded
into another one.

Standard deviations over tokens are population deviations (divide by the number of valid
entries); the deviation of rubric scores across a group (``"softmax_rubrics"``) is the unbiased
one, as GRPO uses for rewards. ``eps`` is added to every deviation. Differences from a mean
that are at the level of float round-off count as exactly 0, so a constant slice (uniform
relevance) gives exactly 0 credit.
"""

from __future__ import annotations

import torch

from zjulab.rtt.config import TOKEN_NORMS, TokenNorm
from zjulab.rtt.errors import RTTConfigError, ShapeError

__all__ = [
    "combine_advantages",
    "group_token_norm",
    "intra_sample_token_norm",
    "rubric_mean_group_token_norm",
    "signed_relevance",
    "softmax_rubrics_norm",
    "token_advantages",
]


def _check(
    weights: torch.Tensor,
    scores: torch.Tensor,
    token_mask: torch.Tensor,
    rubric_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if weights.dim() != 3:
        raise ShapeError(f"weights must be [B, K, T], got shape {tuple(weights.shape)}")
    b, k, t = weights.shape
    if tuple(scores.shape) != (b, k):
        raise ShapeError(f"scores must be [B, K] = [{b}, {k}], got shape {tuple(scores.shape)}")
    if tuple(token_mask.shape) != (b, t):
        raise ShapeError(f"token_mask must be [B, T] = [{b}, {t}], got shape {tuple(token_mask.shape)}")
    if rubric_mask is None:
        rubric_mask = torch.ones(b, k, dtype=weights.dtype, device=weights.device)
    elif tuple(rubric_mask.shape) != (b, k):
        raise ShapeError(f"rubric_mask must be [B, K] = [{b}, {k}], got shape {tuple(rubric_mask.shape)}")
    dtype = weights.dtype if weights.is_floating_point() else torch.float32
    return (
        weights.to(dtype),
        scores.to(dtype),
        token_mask.to(dtype),
        rubric_mask.to(dtype),
    )


def _groups(batch: int, group_size: int | None) -> int:
    if group_size is None or group_size <= 0:
        raise ShapeError(f"group_size must be a positive integer, got {group_size}")
    if batch % group_size != 0:
        raise ShapeError(f"batch of {batch} responses is not a whole number of groups of {group_size}")
    return batch // group_size


def _centre(x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """``x - mu`` with differences at the level of float round-off set to exactly 0.

    The mean of equal values need not equal them in floating point; without this snap a
    constant slice would get a deviation of ~1e-8 and a normalised value of ~1e-2 instead of 0.
    """
    d = x - mu
    tol = 16 * torch.finfo(d.dtype).eps * (mu.abs() + x.abs()).clamp(min=1e-30)
    return torch.where(d.abs() <= tol, torch.zeros_like(d), d)


def _standardise(x: torch.Tensor, m: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    """``(x - μ) / (σ + eps) · m`` with ``μ``, ``σ`` the masked mean and population deviation over ``dims``."""
    n = m.sum(dim=dims, keepdim=True).clamp(min=1.0)
    mu = (x * m).sum(dim=dims, keepdim=True) / n
    d = _centre(x, mu)
    sigma = (((d**2) * m).sum(dim=dims, keepdim=True) / n).sqrt()
    return d / (sigma + eps) * m


def _mean_over_rubrics(z: torch.Tensor, rubric_mask: torch.Tensor) -> torch.Tensor:
    """``[B, K, T] -> [B, T]``: mean over the valid rubrics of each response (0 when it has none)."""
    count = rubric_mask.sum(dim=1).clamp(min=1.0)  # [B]
    return (z * rubric_mask.unsqueeze(-1)).sum(dim=1) / count.unsqueeze(-1)


def signed_relevance(weights: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``x[i, k, t] = w[i, k, t] · s[i, k]``: relevance signed by the rubric outcome.

    Args:
        weights: ``[B, K, T]`` relevance in [0, 1].
        scores: ``[B, K]`` rubric scores in [-1, 1].

    Returns:
        ``[B, K, T]`` signed relevance.
    """
    return weights * scores.unsqueeze(-1)


def intra_sample_token_norm(
    weights: torch.Tensor,
    scores: torch.Tensor,
    token_mask: torch.Tensor,
    rubric_mask: torch.Tensor | None = None,
    *,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Intra-sample Token Group Normalisation (the RTT paper's method).

    ``A_tok[i, t] = mean_k (x[i, k, t] - μ[i, k]) / (σ[i, k] + eps)`` where ``μ`` and ``σ`` are
    the mean and population deviation of ``x[i, k, :]`` over the valid tokens of response ``i``.
    Tokens more relevant than average to a satisfied rubric get positive credit; to a violated
    rubric, negative. A rubric whose relevance is constant over the response contributes 0.

    Args:
        weights: ``[B, K, T]`` relevance in [0, 1].
        scores: ``[B, K]`` rubric scores in [-1, 1].
        token_mask: ``[B, T]``, 1 on response tokens, 0 on padding.
        rubric_mask: ``[B, K]``, 1 on real rubrics, 0 on padding rubrics (default: all real).
        eps: Added to each deviation.

    Returns:
        ``[B, T]`` token advantages, 0 on padding.

    Raises:
        ShapeError: Shapes do not agree.
    """
    w, s, tm, rm = _check(weights, scores, token_mask, rubric_mask)
    x = signed_relevance(w, s)
    z = _standardise(x, tm.unsqueeze(1).expand_as(x), (2,), eps)  # per (response, rubric) over tokens
    return _mean_over_rubrics(z, rm) * tm


def group_token_norm(
    weights: torch.Tensor,
    scores: torch.Tensor,
    token_mask: torch.Tensor,
    rubric_mask: torch.Tensor | None = None,
    *,
    group_size: int,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Group-token normalisation: per rubric, statistics over every token of the whole group.

    ``A_tok[i, t] = mean_k (x[i, k, t] - μ[g, k]) / (σ[g, k] + eps)`` with ``μ``, ``σ`` over the
    valid tokens of all ``G`` responses of group ``g`` for rubric ``k``.

    Args:
        weights: ``[B, K, T]`` relevance.
        scores: ``[B, K]`` rubric scores.
        token_mask: ``[B, T]`` valid-token mask.
        rubric_mask: ``[B, K]`` valid-rubric mask (default: all real).
        group_size: ``G``, responses per prompt (consecutive in the batch).
        eps: Added to each deviation.

    Returns:
        ``[B, T]`` token advantages, 0 on padding.

    Raises:
        ShapeError: Shapes do not agree or ``B`` is not a multiple of ``group_size``.
    """
    w, s, tm, rm = _check(weights, scores, token_mask, rubric_mask)
    b, k, t = w.shape
    n_groups = _groups(b, group_size)
    x = signed_relevance(w, s).view(n_groups, group_size, k, t)
    m = (tm.unsqueeze(1) * rm.unsqueeze(-1)).view(n_groups, group_size, k, t)
    z = _standardise(x, m, (1, 3), eps).view(b, k, t)  # per (group, rubric) over responses and tokens
    return _mean_over_rubrics(z, rm) * tm


def rubric_mean_group_token_norm(
    weights: torch.Tensor,
    scores: torch.Tensor,
    token_mask: torch.Tensor,
    rubric_mask: torch.Tensor | None = None,
    *,
    group_size: int,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Rubric-mean, then group-token normalisation.

    ``x̄[i, t] = mean_k x[i, k, t]`` first; then ``A_tok[i, t] = (x̄[i, t] - μ[g]) / (σ[g] + eps)``
    with ``μ``, ``σ`` over the valid tokens of all responses of group ``g``.

    Args:
        weights: ``[B, K, T]`` relevance.
        scores: ``[B, K]`` rubric scores.
        token_mask: ``[B, T]`` valid-token mask.
        rubric_mask: ``[B, K]`` valid-rubric mask (default: all real).
        group_size: ``G``, responses per prompt.
        eps: Added to the deviation.

    Returns:
        ``[B, T]`` token advantages, 0 on padding.

    Raises:
        ShapeError: Shapes do not agree or ``B`` is not a multiple of ``group_size``.
    """
    w, s, tm, rm = _check(weights, scores, token_mask, rubric_mask)
    b, _, t = w.shape
    n_groups = _groups(b, group_size)
    xbar = _mean_over_rubrics(signed_relevance(w, s), rm).view(n_groups, group_size, t)
    return _standardise(xbar, tm.view(n_groups, group_size, t), (1, 2), eps).view(b, t)


def softmax_rubrics_norm(
    weights: torch.Tensor,
    scores: torch.Tensor,
    token_mask: torch.Tensor,
    rubric_mask: torch.Tensor | None = None,
    *,
    group_size: int,
    eps: float = 1e-6,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Group rubric advantage spread over tokens by a softmax over rubrics.

    Each rubric's score is normalised across the group like a GRPO reward,
    ``Â[i, k] = (s[i, k] - mean_g s[·, k]) / (std_g s[·, k] + eps)`` (unbiased deviation); each
    token splits its attention over the rubrics, ``p[i, k, t] = softmax_k(w[i, k, t] / τ)``; and
    ``A_tok[i, t] = Σ_k p[i, k, t] · Â[i, k]``.

    Args:
        weights: ``[B, K, T]`` relevance.
        scores: ``[B, K]`` rubric scores.
        token_mask: ``[B, T]`` valid-token mask.
        rubric_mask: ``[B, K]`` valid-rubric mask (default: all real); padded rubrics get no
            softmax mass.
        group_size: ``G``, responses per prompt.
        eps: Added to the deviation of the scores.
        temperature: Softmax temperature ``τ``.

    Returns:
        ``[B, T]`` token advantages, 0 on padding.

    Raises:
        ShapeError: Shapes do not agree or ``B`` is not a multiple of ``group_size``.
    """
    w, s, tm, rm = _check(weights, scores, token_mask, rubric_mask)
    b, k, _ = w.shape
    n_groups = _groups(b, group_size)
    sg = s.view(n_groups, group_size, k)
    mg = rm.view(n_groups, group_size, k)
    n = mg.sum(dim=1, keepdim=True)
    mu = (sg * mg).sum(dim=1, keepdim=True) / n.clamp(min=1.0)
    d = _centre(sg, mu)
    var = ((d**2) * mg).sum(dim=1, keepdim=True) / (n - 1.0).clamp(min=1.0)
    adv = (d / (var.sqrt() + eps) * mg).view(b, k)
    logits = (w / temperature).masked_fill(rm.unsqueeze(-1) == 0, float("-inf"))
    p = torch.softmax(logits, dim=1)
    p = torch.nan_to_num(p, nan=0.0)  # a response without any rubric
    return (p * adv.unsqueeze(-1)).sum(dim=1) * tm


def token_advantages(
    weights: torch.Tensor,
    scores: torch.Tensor,
    token_mask: torch.Tensor,
    rubric_mask: torch.Tensor | None = None,
    *,
    method: TokenNorm = "intra_sample",
    group_size: int | None = None,
    eps: float = 1e-6,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Dispatch to one of the four token-advantage normalisations by name.

    Args:
        weights: ``[B, K, T]`` relevance.
        scores: ``[B, K]`` rubric scores.
        token_mask: ``[B, T]`` valid-token mask.
        rubric_mask: ``[B, K]`` valid-rubric mask.
        method: ``"intra_sample"``, ``"group_token"``, ``"rubric_mean_group_token"`` or
            ``"softmax_rubrics"``.
        group_size: ``G``; required by every method but ``"intra_sample"``.
        eps: Added to each deviation.
        temperature: Softmax temperature (``"softmax_rubrics"`` only).

    Returns:
        ``[B, T]`` token advantages.

    Raises:
        RTTConfigError: Unknown method.
        ShapeError: Bad shapes or a missing/invalid ``group_size``.
    """
    if method == "intra_sample":
        return intra_sample_token_norm(weights, scores, token_mask, rubric_mask, eps=eps)
    if method not in TOKEN_NORMS:
        raise RTTConfigError(f"unknown token normalisation {method!r}; choose one of {list(TOKEN_NORMS)}")
    if group_size is None:
        raise ShapeError(f"token normalisation {method!r} needs group_size")
    if method == "group_token":
        return group_token_norm(weights, scores, token_mask, rubric_mask, group_size=group_size, eps=eps)
    if method == "rubric_mean_group_token":
        return rubric_mean_group_token_norm(
            weights, scores, token_mask, rubric_mask, group_size=group_size, eps=eps
        )
    return softmax_rubrics_norm(
        weights, scores, token_mask, rubric_mask, group_size=group_size, eps=eps, temperature=temperature
    )


def combine_advantages(
    response_advantages: torch.Tensor,
    token_advantages: torch.Tensor,
    *,
    lam: float = 0.5,
    mode: str = "add",
) -> torch.Tensor:
    """RTT-GRPO advantage: the response-level GRPO advantage plus the token-level one.

    ``"add"``: ``A[i, t] = A_resp[i] + λ·A_tok[i, t]``; ``"mix"``:
    ``A[i, t] = (1 - λ)·A_resp[i] + λ·A_tok[i, t]``.

    Args:
        response_advantages: ``[B]`` GRPO advantages.
        token_advantages: ``[B, T]`` token advantages.
        lam: ``λ``.
        mode: ``"add"`` or ``"mix"``.

    Returns:
        ``[B, T]`` advantages (``A_resp`` is broadcast over every position, padding included,
        exactly as TRL broadcasts a ``[B]`` advantage).

    Raises:
        ShapeError: Shapes do not agree.
        RTTConfigError: Unknown mode.
    """
    if response_advantages.dim() != 1 or token_advantages.dim() != 2:
        raise ShapeError(
            f"expected [B] and [B, T] advantages, got {tuple(response_advantages.shape)} and "
            f"{tuple(token_advantages.shape)}"
        )
    if response_advantages.shape[0] != token_advantages.shape[0]:
        raise ShapeError(
            f"batch sizes differ: {response_advantages.shape[0]} response vs {token_advantages.shape[0]} token"
        )
    a_resp = response_advantages.unsqueeze(1).to(token_advantages.dtype)
    if mode == "add":
        return a_resp + lam * token_advantages
    if mode == "mix":
        return (1.0 - lam) * a_resp + lam * token_advantages
    raise RTTConfigError(f"mode must be 'add' or 'mix', got {mode!r}")
