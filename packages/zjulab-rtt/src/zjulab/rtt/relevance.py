"""Where token relevance comes from: the protocol the trainer calls, and rule-based sources.

The trainer asks a :class:`RelevanceModel` for ``w[i, k, t]``, one weight in [0, 1] per
policy token of response ``i`` and rubric ``k``. :class:`~zjulab.rtt.discriminator.RelevanceDiscriminator`
is the learned source; :class:`SpanRelevance` reads the spans of verifiable checkers (exact for
the constraints they cover, and free); :class:`UniformRelevance` gives every token the same
weight: with ``token_norm="intra_sample"`` (the default) every token advantage is then 0 and
RTT-GRPO equals GRPO; the group normalisations turn it into a per-response term instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from zjulab.rtt.labels import labels_from_offsets
from zjulab.rtt.rubrics import Rubric

__all__ = [
    "RelevanceModel",
    "RelevanceQuery",
    "RoutedRelevance",
    "ScoredText",
    "SpanRelevance",
    "UniformRelevance",
    "project_weights",
    "token_char_offsets",
    "token_char_offsets_slow",
]

logger = logging.getLogger(__name__)


@dataclass
class ScoredText:
    """The text a reward scored, placed in the decoded completion it was parsed from.

    TRL hands a reward function the completion as it parsed it: with tool calls, the content of
    each assistant message (the tool-call markup, the tool results and a parsed reasoning block
    are not in it). Each piece of that text is a stretch of the decoded completion; ``segments``
    say where, so spans found on the scored text can be carried to the decoded one.

    Attributes:
        text: The scored text (the pieces joined).
        segments: ``(start, end, decoded_start)`` per piece: ``text[start:end]`` equals
            ``decoded[decoded_start:decoded_start + end - start]``.
    """

    text: str
    segments: list[tuple[int, int, int]]

    @classmethod
    def locate(cls, pieces: Sequence[str], decoded: str) -> ScoredText | None:
        """Find the pieces in ``decoded``, in order (``None`` when one is not there)."""
        segments: list[tuple[int, int, int]] = []
        pos = cursor = 0
        for piece in pieces:
            if not piece:
                continue
            at = decoded.find(piece, cursor)
            if at < 0:
                return None
            segments.append((pos, pos + len(piece), at))
            pos += len(piece)
            cursor = at + len(piece)
        return cls("".join(pieces), segments)

    def to_decoded(self, spans: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
        """Spans of :attr:`text` as spans of the decoded completion (split where pieces part)."""
        out: list[tuple[int, int]] = []
        for a, b in spans:
            for s, e, d in self.segments:
                lo, hi = max(a, s), min(b, e)
                if lo < hi:
                    out.append((d + lo - s, d + hi - s))
        return tuple(out)

    def covered(self) -> tuple[tuple[int, int], ...]:
        """The stretches of the decoded completion the scored text comes from."""
        return tuple((d, d + e - s) for s, e, d in self.segments)


@dataclass
class RelevanceQuery:
    """One (response, rubric) pair whose token relevance is wanted.

    Attributes:
        rubric: The rubric.
        completion_ids: The policy's token ids of the response (no padding).
        text: The decoded response text.
        scored: The text the reward scored and where it sits in ``text``, when it is not
            ``text`` itself (TRL's parsed tool-call completions); checkers then run on it.
    """

    rubric: Rubric
    completion_ids: list[int]
    text: str
    scored: ScoredText | None = None


@runtime_checkable
class RelevanceModel(Protocol):
    """Anything that gives a relevance weight per policy token of each (response, rubric) pair."""

    def token_relevance(self, queries: Sequence[RelevanceQuery], tokenizer: Any) -> list[torch.Tensor]:
        """One float tensor ``[len(q.completion_ids)]`` in [0, 1] per query.

        Args:
            queries: The (response, rubric) pairs.
            tokenizer: The policy's tokenizer (decodes ``completion_ids``).
        """
        ...


def token_char_offsets(ids: Sequence[int], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """Decode ``ids`` and give each token its character range in the decoded text.

    The range of token ``j`` runs from the length of the decoded prefix ``ids[:j]`` to that of
    ``ids[:j+1]`` (special tokens decode to nothing; a byte-level token that ends inside a
    character gets an empty range and the token completing the character covers it), so the
    ranges tile the text.

    With a fast tokenizer this is computed in one pass from its offset mapping (the text is
    decoded once and re-encoded with ``return_offsets_mapping``). When re-encoding does not give
    back the same ids (a sampled, non-canonical split, common with small or random models) or
    the text holds bytes that are not characters, each token's share is read from two decodes of
    a short window ending at it (one batched decode call, O(T)), checked against the decoded
    whole; only if that check fails are all prefixes decoded (:func:`token_char_offsets_slow`,
    O(T²)).

    Args:
        ids: Token ids.
        tokenizer: The tokenizer that produced them.

    Returns:
        ``(text, offsets)``.
    """
    ids = [int(i) for i in ids]
    fast = _fast_offsets(ids, tokenizer)
    if fast is None:
        fast = _window_offsets(ids, tokenizer)
    return fast if fast is not None else token_char_offsets_slow(ids, tokenizer)


def token_char_offsets_slow(ids: Sequence[int], tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """:func:`token_char_offsets` by decoding every prefix (any tokenizer; O(T²))."""
    ids = list(ids)
    offsets: list[tuple[int, int]] = []
    prev = 0
    text = ""
    for j in range(len(ids)):
        text = tokenizer.decode(ids[: j + 1], skip_special_tokens=True)
        cur = len(text)
        # a byte-level token that ends inside a character decodes to U+FFFD; attribute it later
        if text.endswith("\ufffd") and j + 1 < len(ids):
            offsets.append((prev, prev))
            continue
        offsets.append((min(prev, cur), cur))
        prev = cur
    return text, offsets


_WINDOW = 8


def _window_offsets(ids: list[int], tokenizer: Any) -> tuple[str, list[tuple[int, int]]] | None:
    """Offsets from decodes of the ``_WINDOW`` tokens before each token, with and without it.

    Decoding is local for the tokenizers in use (byte-level and SentencePiece BPE, WordPiece):
    the length a token adds to a decoded prefix depends only on the few tokens before it (a
    character split over bytes, a leading-space rule, clean-up of spaces before punctuation).
    Returns ``None`` when the pieces do not add up to the decoded text.
    """
    if not ids:
        return None
    windows: list[list[int]] = []
    for j in range(len(ids)):
        a = max(0, j - _WINDOW)
        windows.append(ids[a:j])
        windows.append(ids[a : j + 1])
    try:
        if hasattr(tokenizer, "batch_decode"):
            texts = tokenizer.batch_decode(windows, skip_special_tokens=True)
        else:  # a minimal tokenizer object: decode the windows one by one
            texts = [tokenizer.decode(w, skip_special_tokens=True) for w in windows]
    except (TypeError, ValueError):
        return None
    full = tokenizer.decode(ids, skip_special_tokens=True)
    offsets: list[tuple[int, int]] = []
    prev = 0  # length of the decoded prefix up to the last token that closed its characters
    for j in range(len(ids)):
        without, with_token = texts[2 * j], texts[2 * j + 1]
        if j + 1 < len(ids) and with_token.endswith("\ufffd"):
            offsets.append((prev, prev))  # ends inside a character: the token completing it covers it
            continue
        if offsets and offsets[-1][0] == offsets[-1][1]:
            # the window without token j ends in the replacement character of the open one
            without = without.rstrip("\ufffd")
        cur = prev + len(with_token) - len(without)
        if cur < prev:
            return None
        offsets.append((prev, cur))
        prev = cur
    if prev != len(full):
        return None
    return full, offsets


def _fast_offsets(ids: list[int], tokenizer: Any) -> tuple[str, list[tuple[int, int]]] | None:
    """The offsets from a fast tokenizer's offset mapping, or ``None`` when they cannot be trusted."""
    if not getattr(tokenizer, "is_fast", False) or not ids:
        return None
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    keep = [j for j, i in enumerate(ids) if i not in special]
    plain = [ids[j] for j in keep]
    text = tokenizer.decode(plain, skip_special_tokens=True)
    if "\ufffd" in text:  # bytes that do not form characters: leave them to the exact path
        return None
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        return None
    if list(enc["input_ids"]) != plain:
        return None
    raw = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    # ends tile the text: token j covers (end of j-1, end of j]; a token whose character is
    # completed by the next one (same character range) gets an empty range
    ends = []
    prev = 0
    for j, (_, b) in enumerate(raw):
        nxt = raw[j + 1] if j + 1 < len(raw) else None
        if nxt is not None and nxt[0] < b:  # the next token shares this token's last character
            ends.append(prev)
            continue
        prev = max(prev, b)
        ends.append(prev)
    if not ends or ends[-1] != len(text):  # the mapping does not cover the decoded text
        return None
    offsets_plain: list[tuple[int, int]] = []
    start = 0
    for e in ends:
        offsets_plain.append((start, e))
        start = e
    offsets: list[tuple[int, int]] = []
    it = iter(offsets_plain)
    last = 0
    for i in ids:
        if i in special:
            offsets.append((last, last))
        else:
            off = next(it)
            offsets.append(off)
            last = off[1]
    return text, offsets


def project_weights(
    source_offsets: Sequence[tuple[int, int]],
    source_weights: Sequence[float],
    target_offsets: Sequence[tuple[int, int]],
) -> torch.Tensor:
    """Carry per-token weights from one tokenisation of a text to another through characters.

    Each target token takes the largest weight of the source tokens its character range
    overlaps (0 when it overlaps none).

    Args:
        source_offsets: Character ranges of the source tokens.
        source_weights: Their weights.
        target_offsets: Character ranges of the target tokens.

    Returns:
        ``[len(target_offsets)]`` weights.
    """
    out = torch.zeros(len(target_offsets))
    for j, (a, b) in enumerate(target_offsets):
        if b <= a:
            continue
        best = 0.0
        for (s, e), w in zip(source_offsets, source_weights):
            if e > s and s < b and e > a:
                best = max(best, float(w))
        out[j] = best
    return out


class SpanRelevance:
    """Relevance from the character spans reported by verifiable checkers.

    On a passing response a token gets ``on`` when it overlaps a span the checker reports (the
    keywords of "include X", the bullets of "use 3 bullets"...). On a failing response it gets
    ``on`` only when it overlaps a span the failure is attributed to
    (:attr:`~zjulab.rtt.rubrics.CheckResult.failure_spans`: the commas that break "no commas",
    the surplus occurrences of "at most N times"); tokens that satisfy part of a constraint (the
    ``blue`` of "include blue, moon" when ``moon`` is missing) are never blamed. A failure about
    something missing has no such span: with ``absent="response"`` (default) it gets no token
    credit (the failure stays in the response-level advantage); with ``absent="end"`` the last
    token of the response is blamed (the response ended without it). Judge rubrics, which have
    no checker, get ``off`` everywhere (constant, so no token credit).

    Args:
        on: Weight of tokens inside a span.
        off: Weight of the other tokens.
        absent: ``"response"`` or ``"end"`` (see above).
    """

    def __init__(self, on: float = 1.0, off: float = 0.0, absent: str = "response") -> None:
        if absent not in ("response", "end"):
            from zjulab.rtt.errors import RTTConfigError

            raise RTTConfigError(f"absent must be 'response' or 'end', got {absent!r}")
        self.on = float(on)
        self.off = float(off)
        self.absent = absent

    def token_relevance(self, queries: Sequence[RelevanceQuery], tokenizer: Any) -> list[torch.Tensor]:
        """See :class:`RelevanceModel`."""
        out = []
        seen: dict[tuple[int, ...], tuple[str, list[tuple[int, int]]]] = {}  # one decode per response
        for q in queries:
            n = len(q.completion_ids)
            if q.rubric.kind != "check" or n == 0:
                out.append(torch.full((n,), self.off))
                continue
            key = tuple(int(i) for i in q.completion_ids)
            if key not in seen:
                seen[key] = token_char_offsets(key, tokenizer)
            text, offsets = seen[key]
            scored = q.scored
            result = q.rubric.evaluate(text if scored is None else scored.text)
            spans = result.spans if result.passed else result.failure_spans
            if scored is not None:  # checked on the text the reward saw: carry its spans over
                spans = scored.to_decoded(spans)
            if not result.passed and not spans and self.absent == "end":
                inside = (((0, len(text)),) if scored is None else scored.covered()) or ((0, 0),)
                ends = [
                    j
                    for j, (a, b) in enumerate(offsets)
                    if b > a and text[a:b].strip() and any(a < e and b > s for s, e in inside)
                ]
                spans = (offsets[ends[-1]],) if ends else ()
            labels = torch.tensor(labels_from_offsets(offsets, spans), dtype=torch.float32)
            out.append(self.off + (self.on - self.off) * labels)
        return out


class UniformRelevance:
    """Every token equally relevant to every rubric.

    Under ``token_norm="intra_sample"`` every token advantage is then exactly 0 (RTT-GRPO is
    GRPO, at any ``λ``). Under ``"group_token"``, ``"rubric_mean_group_token"`` and
    ``"softmax_rubrics"`` it is not: they normalise across the group, so each response gets a
    token advantage that is constant over its tokens and follows its rubric scores (an extra
    response-level term); those reduce to GRPO only at ``λ = 0``.

    Args:
        value: The weight given to every token.
    """

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def token_relevance(self, queries: Sequence[RelevanceQuery], tokenizer: Any) -> list[torch.Tensor]:
        """See :class:`RelevanceModel`."""
        return [torch.full((len(q.completion_ids),), self.value) for q in queries]


class RoutedRelevance:
    """Relevance by rubric kind: checker spans for ``"check"`` rubrics, a model for the rest.

    Verifiable rubrics then cost nothing (their spans are exact); only judge rubrics go through
    the discriminator, which keeps its B·K forward passes to the rubrics that need them.

    Args:
        judged: Relevance source of ``"judge"`` rubrics (typically a
            :class:`~zjulab.rtt.discriminator.RelevanceDiscriminator`).
        checked: Relevance source of ``"check"`` rubrics (default :class:`SpanRelevance`).
    """

    def __init__(self, judged: RelevanceModel, checked: RelevanceModel | None = None) -> None:
        self.judged = judged
        self.checked = checked if checked is not None else SpanRelevance()

    def token_relevance(
        self, queries: Sequence[RelevanceQuery], tokenizer: Any, **kwargs: Any
    ) -> list[torch.Tensor]:
        """See :class:`RelevanceModel` (keywords go to the judged source)."""
        out: list[torch.Tensor | None] = [None] * len(queries)
        for kind, source in (("check", self.checked), ("judge", self.judged)):
            idx = [i for i, q in enumerate(queries) if q.rubric.kind == kind]
            if not idx:
                continue
            extra = kwargs if source is self.judged and hasattr(source, "predict_ids") else {}
            for i, w in zip(idx, source.token_relevance([queries[i] for i in idx], tokenizer, **extra)):
                out[i] = w
        return [w if w is not None else torch.zeros(len(q.completion_ids)) for w, q in zip(out, queries)]
