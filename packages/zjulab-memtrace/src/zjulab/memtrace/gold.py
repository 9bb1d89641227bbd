"""The reference an attribution is judged against: the gold answer and its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zjulab.common.errors import ConfigError
from zjulab.memtrace.matching import answer_matches

__all__ = ["Gold"]


@dataclass
class Gold:
    """Gold answer and evidence for one question.

    Args:
        answer: The gold answer text.
        evidence: Texts that hold the answer, in the form the pipeline stores them (for
            example ``"Caroline: I went to a support group yesterday"``).
        question: The question (shown to judges).
        threshold: Fraction of the gold answer's content words an answer must hold (all by
            default); numbers, dates, negation and lists of alternatives are checked too (see
            :func:`~zjulab.memtrace.matching.check_answer`).
    """

    answer: str
    evidence: tuple[str, ...] = field(default_factory=tuple)
    question: str | None = None
    threshold: float = 1.0

    def __post_init__(self) -> None:
        self.answer = str(self.answer)
        self.evidence = tuple(str(e) for e in self.evidence)
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")

    def is_correct(self, answer: Any) -> bool:
        """Whether ``answer`` counts as the gold answer."""
        return answer_matches(answer, self.answer, self.threshold, self.question)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {
            "answer": self.answer,
            "evidence": list(self.evidence),
            "question": self.question,
            "threshold": self.threshold,
        }
