"""Contamination guard: word n-gram overlap between curated instructions and evaluation prompts.

Each evaluation prompt is cut into lower-cased word n-grams. A curated text's *overlap* with a
prompt is the share of the text's n-grams that also occur in that prompt; a text is flagged
when its largest overlap reaches ``threshold``. With ``n = 8`` a flag means long verbatim
passages are shared, which short common phrases cannot cause.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zjulab.conifer.errors import ConiferConfigError

__all__ = ["ContaminationGuard", "OverlapHit"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORD.findall(text)]
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class OverlapHit:
    """The evaluation prompt a text overlaps most.

    Attributes:
        index: Position of the text among those checked.
        prompt_index: Position of the evaluation prompt.
        overlap: Share of the text's n-grams found in that prompt (0..1).
    """

    index: int
    prompt_index: int
    overlap: float


class ContaminationGuard:
    """Index evaluation prompts once, then check curated texts against them.

    Args:
        eval_prompts: The evaluation prompts (e.g. IFEval's).
        n: N-gram length in words.
        threshold: Overlap at or above which a text is flagged.

    Raises:
        ConiferConfigError: ``n`` < 1 or ``threshold`` outside (0, 1].
    """

    def __init__(self, eval_prompts: Sequence[str], *, n: int = 8, threshold: float = 0.5) -> None:
        if n < 1:
            raise ConiferConfigError(f"n must be >= 1, got {n}")
        if not 0 < threshold <= 1:
            raise ConiferConfigError(f"threshold must be in (0, 1], got {threshold}")
        self.n = n
        self.threshold = threshold
        self._index: dict[tuple[str, ...], list[int]] = {}
        for j, prompt in enumerate(eval_prompts):
            for g in _ngrams(prompt, n):
                self._index.setdefault(g, []).append(j)

    def best_overlap(self, text: str) -> tuple[int, float]:
        """``(prompt_index, overlap)`` of the most overlapping prompt (``(-1, 0.0)`` if none)."""
        grams = _ngrams(text, self.n)
        if not grams:
            return -1, 0.0
        counts: dict[int, int] = {}
        for g in grams:
            for j in self._index.get(g, ()):
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return -1, 0.0
        j = max(counts, key=lambda k: (counts[k], -k))
        return j, counts[j] / len(grams)

    def check(self, texts: Iterable[str]) -> list[OverlapHit]:
        """The flagged texts (overlap >= threshold), in input order."""
        hits = []
        for i, text in enumerate(texts):
            j, ov = self.best_overlap(text)
            if ov >= self.threshold:
                hits.append(OverlapHit(i, j, ov))
        if hits:
            logger.warning("%d text(s) overlap evaluation prompts", len(hits))
        return hits
