"""LLM variants of tasks 1, 2 and 4 through any :class:`~zjulab.common.protocols.ChatModel`.

Following the authors' later LLM-based CRS work, each task becomes an instruction: extract the
attribute/value pairs of the current utterance (task 1), name the attributes to ask about next
(task 2), write the next assistant utterance (task 4). Every answer is requested as JSON and
parsed with :func:`zjulab.common.structured.generate_structured` (re-asking on unparsable
answers); an answer that never parses counts as an empty prediction and is tallied in
``failures``. The results go through the same metric bundles as the trained models, so the
numbers are directly comparable.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.common.protocols import ChatModel, Conversation
from zjulab.common.structured import generate_structured, schema_prompt
from zjulab.crs.generation import generation_prompt
from zjulab.crs.samples import (
    ElicitationExample,
    GenerationExample,
    UnderstandingExample,
    render_context,
)
from zjulab.crs.task_scores import elicitation_scores, generation_scores, understanding_scores

__all__ = [
    "AttributeMention",
    "AttributesToAsk",
    "ExtractedAttributes",
    "LLMElicitor",
    "LLMResponder",
    "LLMUnderstanding",
    "Reply",
    "locate_spans",
]

logger = logging.getLogger(__name__)

Span = tuple[str, int, int]


@dataclass
class AttributeMention:
    """One attribute/value pair named by the model."""

    key: str
    value: str = ""


@dataclass
class ExtractedAttributes:
    """Task 1 answer schema."""

    attributes: list[AttributeMention] = field(default_factory=list)


@dataclass
class AttributesToAsk:
    """Task 2 answer schema."""

    attributes: list[str] = field(default_factory=list)


@dataclass
class Reply:
    """Task 4 answer schema."""

    response: str = ""


def locate_spans(text: str, pairs: Sequence[tuple[str, str]]) -> list[Span]:
    """Character spans of the values in ``text``.

    Each value takes its first case-insensitive occurrence not used by an earlier value;
    values not found, or empty, get no span.
    """
    low = text.lower()
    used: list[tuple[int, int]] = []
    out: list[Span] = []
    for key, value in pairs:
        v = value.strip().lower()
        if not v:
            continue
        start = low.find(v)
        while start >= 0 and any(a < start + len(v) and start < b for a, b in used):
            start = low.find(v, start + 1)
        if start >= 0:
            used.append((start, start + len(v)))
            out.append((key, start, start + len(v)))
    return out


class _LLMTask:
    def __init__(
        self, chat_model: ChatModel, *, max_new_tokens: int = 128, max_retries: int = 1, system: str = ""
    ) -> None:
        self.chat_model = chat_model
        self.max_new_tokens = max_new_tokens
        self.max_retries = max_retries
        self.system = system or "You are a customer-service assistant of an online shop."
        self.failures = 0

    def _ask(self, prompts: Sequence[str], schema: Any) -> list[Any]:
        convs: list[Conversation] = [
            [
                {"role": "system", "content": self.system},
                {"role": "user", "content": f"{p}\n{schema_prompt(schema)}"},
            ]
            for p in prompts
        ]
        answers = generate_structured(
            self.chat_model,
            convs,
            schema,
            max_retries=self.max_retries,
            on_error="none",
            max_new_tokens=self.max_new_tokens,
            temperature=0.0,
        )
        bad = sum(a is None for a in answers)
        if bad:
            logger.warning("%s: %d of %d answers could not be parsed", type(self).__name__, bad, len(answers))
        self.failures += bad
        return answers


class LLMUnderstanding(_LLMTask):
    """Task 1 with a chat model: extract ``(attribute, value)`` pairs of the current utterance.

    Args:
        chat_model: Any chat model.
        attribute_names: Attribute names to offer the model (learned from training data by
            :meth:`fit` when not given).
        max_new_tokens: Answer length limit.
        max_retries: Re-asks after an unparsable answer.
    """

    task = "understanding"

    def __init__(
        self,
        chat_model: ChatModel,
        *,
        attribute_names: Sequence[str] | None = None,
        max_new_tokens: int = 128,
        max_retries: int = 1,
    ) -> None:
        super().__init__(chat_model, max_new_tokens=max_new_tokens, max_retries=max_retries)
        self.attribute_names = list(attribute_names or [])

    def fit(self, examples: Sequence[UnderstandingExample]) -> LLMUnderstanding:
        """Collect the attribute names of the training data (no weights are changed)."""
        if not self.attribute_names:
            self.attribute_names = sorted({k for e in examples for k, _ in e.pairs})
        return self

    def prompt(self, example: UnderstandingExample) -> str:
        """The instruction for one utterance."""
        names = ", ".join(self.attribute_names) or "any product attribute"
        ctx = render_context(example.context, 3)
        return (
            f"Pre-sales dialogue ({example.category}).\n{ctx}\n"
            f"Current utterance ({example.role}): {example.text}\n"
            f"List the product attributes mentioned in the current utterance with their values as written "
            f"(empty value if none). Attribute names: {names}."
        )

    def predict_pairs(self, examples: Sequence[UnderstandingExample]) -> list[list[tuple[str, str]]]:
        """``(key, value)`` pairs per example (empty when the answer did not parse)."""
        answers = self._ask([self.prompt(e) for e in examples], ExtractedAttributes)
        return [[(m.key, m.value) for m in a.attributes] if a is not None else [] for a in answers]

    def predict(self, examples: Sequence[UnderstandingExample]) -> list[list[Span]]:
        """Spans found by locating the extracted values in the text."""
        return [locate_spans(e.text, p) for e, p in zip(examples, self.predict_pairs(examples))]

    def evaluate(self, examples: Sequence[UnderstandingExample]) -> dict[str, float]:
        """Span and pair P/R/F1 (same bundle as the tagger)."""
        pairs = self.predict_pairs(examples)
        spans = [locate_spans(e.text, p) for e, p in zip(examples, pairs)]
        return understanding_scores(examples, spans, pairs)


class LLMElicitor(_LLMTask):
    """Task 2 with a chat model: name the attributes to ask about next.

    Answers are matched to the category's known attributes ignoring case; others are dropped.

    Args:
        chat_model: Any chat model.
        max_new_tokens: Answer length limit.
        max_retries: Re-asks after an unparsable answer.
    """

    task = "elicitation"

    def __init__(self, chat_model: ChatModel, *, max_new_tokens: int = 64, max_retries: int = 1) -> None:
        super().__init__(chat_model, max_new_tokens=max_new_tokens, max_retries=max_retries)
        self.vocab: dict[str, list[str]] = {}

    def fit(self, examples: Sequence[ElicitationExample]) -> LLMElicitor:
        """Collect each category's askable attributes (no weights are changed)."""
        vocab: dict[str, set[str]] = defaultdict(set)
        for e in examples:
            vocab[e.category].update(e.targets)
        self.vocab = {c: sorted(v) for c, v in vocab.items()}
        return self

    def _names(self, category: str) -> list[str]:
        return self.vocab.get(category) or sorted({a for v in self.vocab.values() for a in v})

    def prompt(self, example: ElicitationExample) -> str:
        """The instruction for one example."""
        known = "; ".join(f"{k}: {v}" for k, v in example.known) or "nothing yet"
        return (
            f"Pre-sales dialogue ({example.category}).\n{render_context(example.context, 6)}\n"
            f"Known user needs: {known}.\n"
            f"Which attribute(s) should the assistant ask about next? Choose from: {', '.join(self._names(example.category))}."
        )

    def predict(self, examples: Sequence[ElicitationExample]) -> list[list[str]]:
        """Attribute names per example (empty when the answer did not parse)."""
        answers = self._ask([self.prompt(e) for e in examples], AttributesToAsk)
        out = []
        for e, a in zip(examples, answers):
            lookup = {n.lower(): n for n in self._names(e.category)}
            names = [
                lookup[x.strip().lower()] for x in (a.attributes if a else []) if x.strip().lower() in lookup
            ]
            out.append(list(dict.fromkeys(names)))
        return out

    def evaluate(self, examples: Sequence[ElicitationExample]) -> dict[str, float]:
        """Multi-label P/R/F1 (same bundle as the classifier)."""
        return elicitation_scores(examples, self.predict(examples))


class LLMResponder(_LLMTask):
    """Task 4 with a chat model: write the next assistant utterance.

    Args:
        chat_model: Any chat model.
        max_new_tokens: Answer length limit.
        max_retries: Re-asks after an unparsable answer.
    """

    task = "generation"

    def __init__(self, chat_model: ChatModel, *, max_new_tokens: int = 96, max_retries: int = 1) -> None:
        super().__init__(chat_model, max_new_tokens=max_new_tokens, max_retries=max_retries)

    def fit(self, examples: Sequence[GenerationExample]) -> LLMResponder:
        """Nothing to learn; returns ``self``."""
        return self

    def prompt(self, example: GenerationExample) -> str:
        """The instruction for one example."""
        return (
            "Write the assistant's next short reply in this pre-sales dialogue. If 'ask about' names "
            "attributes, ask the user about them; if an item is given, explain why it fits the needs.\n"
            + generation_prompt(example)
        )

    def generate(self, examples: Sequence[GenerationExample]) -> list[str]:
        """One reply per example (empty when the answer did not parse)."""
        answers = self._ask([self.prompt(e) for e in examples], Reply)
        return [a.response.strip() if a is not None else "" for a in answers]

    def evaluate(
        self, examples: Sequence[GenerationExample], *, tokenize: str | None = None
    ) -> dict[str, float]:
        """BLEU-1/2 and Distinct-1/2 (same bundle as the generator)."""
        return generation_scores(examples, self.generate(examples), tokenize=tokenize)
