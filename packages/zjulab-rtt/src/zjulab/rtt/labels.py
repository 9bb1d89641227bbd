"""Token-level relevance labels from character spans, and an LLM-assisted span annotator."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.common.protocols import ChatModel, Conversation
from zjulab.common.structured import generate_structured
from zjulab.rtt.errors import LabelAlignmentError
from zjulab.rtt.rubrics import Span

__all__ = [
    "RelevanceExample",
    "SpanAnnotation",
    "SpanAnnotator",
    "labels_from_offsets",
    "locate_substrings",
    "token_labels",
]

logger = logging.getLogger(__name__)


@dataclass
class RelevanceExample:
    """One discriminator training example: a criterion, a response and its relevant spans.

    Args:
        criterion: The rubric text.
        response: The response text.
        spans: Character spans ``[start, end)`` of ``response`` relevant to the criterion.
    """

    criterion: str
    response: str
    spans: list[Span] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_spans(self.response, self.spans)
        self.spans = [(int(a), int(b)) for a, b in self.spans]


def check_spans(text: str, spans: Sequence[Sequence[int]]) -> None:
    """Raise :class:`LabelAlignmentError` unless every span lies inside ``text`` with start < end."""
    for sp in spans:
        if len(sp) != 2:
            raise LabelAlignmentError(f"a span must be (start, end), got {sp!r}")
        a, b = int(sp[0]), int(sp[1])
        if not 0 <= a < b <= len(text):
            raise LabelAlignmentError(
                f"span ({a}, {b}) does not fit a response of {len(text)} characters (need 0 <= start < end <= len)"
            )


def labels_from_offsets(offsets: Sequence[Sequence[int]], spans: Sequence[Sequence[int]]) -> list[int]:
    """0/1 label per token: 1 when the token's character range overlaps a span.

    Args:
        offsets: ``(start, end)`` character range of each token (``(0, 0)`` for tokens that
            cover no text, which are labelled 0).
        spans: Relevant character spans ``[start, end)``.

    Returns:
        One label per token.
    """
    out = []
    for a, b in offsets:
        hit = b > a and any(a < e and b > s for s, e in spans)
        out.append(1 if hit else 0)
    return out


def token_labels(
    text: str, spans: Sequence[Sequence[int]], tokenizer: Any, *, max_tokens: int | None = None
) -> tuple[list[int], list[int]]:
    """Tokenise ``text`` and label each token from character spans through the offsets.

    Args:
        text: The response text.
        spans: Relevant spans ``[start, end)`` of ``text``.
        tokenizer: A fast tokenizer (one that returns offset mappings).
        max_tokens: Keep at most this many tokens.

    Returns:
        ``(token_ids, labels)``, equally long.

    Raises:
        LabelAlignmentError: A span does not fit ``text`` or the tokenizer gives no offsets.
    """
    check_spans(text, spans)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as exc:
        raise LabelAlignmentError(
            f"{type(tokenizer).__name__} cannot return offsets; use a fast tokenizer"
        ) from exc
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    labels = labels_from_offsets(offsets, spans)
    if max_tokens is not None:
        ids, labels = ids[:max_tokens], labels[:max_tokens]
    return ids, labels


def locate_substrings(text: str, substrings: Sequence[str]) -> list[Span]:
    """Character spans of every occurrence of each substring in ``text``.

    Matching is exact first; a substring that does not occur exactly is matched ignoring case
    and collapsing runs of whitespace. Substrings that do not occur are skipped (logged).

    Args:
        text: The response text.
        substrings: Quoted pieces of the response.

    Returns:
        Sorted, merged spans.
    """
    found: list[Span] = []
    for sub in substrings:
        sub = str(sub).strip()
        if not sub:
            continue
        hits = [(m.start(), m.end()) for m in re.finditer(re.escape(sub), text)]
        if not hits:
            pattern = r"\s+".join(re.escape(p) for p in sub.split())
            hits = [(m.start(), m.end()) for m in re.finditer(pattern, text, re.IGNORECASE)]
        if not hits:
            logger.debug("annotated substring %r not found in the response", sub[:60])
        found.extend(hits)
    return _merge(found)


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


@dataclass
class SpanAnnotation:
    """What the annotator model is asked to return.

    Attributes:
        spans: Exact pieces of the response that decide whether the criterion holds.
    """

    spans: list[str] = field(default_factory=list)


_ANNOTATE_SYSTEM = (
    "You mark evidence in texts. Given a criterion and a response, list the exact pieces of the "
    "response (copied character for character) that decide whether the response meets the "
    "criterion. Return an empty list when no part of the response bears on it."
)


class SpanAnnotator:
    """Marks, per criterion, the spans of a response an LLM finds relevant.

    The model answers with JSON (``{"spans": ["...", ...]}``) through
    :func:`~zjulab.common.structured.generate_structured`; each quoted piece is located in the
    response by :func:`locate_substrings`.

    Args:
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel`.
        max_new_tokens: Answer length limit.
        max_retries: Re-asks after an answer that does not parse.
    """

    def __init__(self, chat_model: ChatModel, *, max_new_tokens: int = 256, max_retries: int = 1) -> None:
        self.chat_model = chat_model
        self.max_new_tokens = max_new_tokens
        self.max_retries = max_retries

    def conversation(self, criterion: str, response: str) -> Conversation:
        """The conversation sent for one (criterion, response) pair."""
        return [
            {"role": "system", "content": _ANNOTATE_SYSTEM},
            {"role": "user", "content": f"Criterion: {criterion}\n\nResponse:\n{response}"},
        ]

    def annotate(self, pairs: Sequence[tuple[str, str]]) -> list[RelevanceExample]:
        """Annotate (criterion, response) pairs; unparseable answers give no spans (logged).

        Args:
            pairs: ``(criterion, response)`` tuples.

        Returns:
            One :class:`RelevanceExample` per pair.
        """
        convs = [self.conversation(c, r) for c, r in pairs]
        answers = generate_structured(
            self.chat_model,
            convs,
            SpanAnnotation,
            max_retries=self.max_retries,
            on_error="none",
            max_new_tokens=self.max_new_tokens,
        )
        out = []
        for (criterion, response), ans in zip(pairs, answers):
            pieces = ans.spans if isinstance(ans, SpanAnnotation) else []
            if ans is None:
                logger.warning(
                    "span annotation for criterion %r did not parse; no spans kept", criterion[:60]
                )
            out.append(RelevanceExample(criterion, response, locate_substrings(response, pieces)))
        return out
