"""Contamination guard: how much of an evaluation prompt a curated text contains.

Texts are normalised first (Unicode NFKC, case-folded, punctuation removed, whitespace
collapsed) and cut into word n-grams. The score of a candidate against an evaluation prompt is
its *containment* of the prompt: the share of the **prompt's** n-grams found in the candidate.
A prompt copied verbatim scores 1.0 however much text surrounds it (dividing by the candidate's
length instead, as a plain overlap does, lets a copy followed by a few words pass). A prompt
shorter than ``n`` words counts as one n-gram of its own length. A candidate is flagged when its
best containment reaches ``threshold``.

The recall of the defaults on paraphrased and extended IFEval prompts, and the false-positive
rate on unrelated instructions, are measured by ``benchmarks/bench_contamination.py`` and
recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from zjulab.conifer.errors import ConiferConfigError

__all__ = ["ContaminationGuard", "OverlapHit", "normalize_text"]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> list[str]:
    """The words of ``text`` after NFKC normalisation and case folding (punctuation dropped)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class OverlapHit:
    """The evaluation prompt a text contains most of.

    Attributes:
        index: Position of the text among those checked.
        prompt_index: Position of the evaluation prompt.
        overlap: Containment of that prompt in the text (0..1).
    """

    index: int
    prompt_index: int
    overlap: float


class ContaminationGuard:
    """Index evaluation prompts once, then score curated texts against them.

    Args:
        eval_prompts: The evaluation prompts (e.g. IFEval's).
        n: N-gram length in words (3: chosen with ``threshold`` on half of the IFEval
            prompts' rewrites, see BENCHMARKS.md).
        threshold: Containment at or above which a text is flagged.

    Raises:
        ConiferConfigError: ``n`` not an integer >= 1, ``threshold`` not a number in (0, 1],
            no prompts, or a prompt that is not a string.
    """

    def __init__(self, eval_prompts: Sequence[str], *, n: int = 3, threshold: float = 0.3) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConiferConfigError(f"n must be an integer >= 1, got {n!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ConiferConfigError(f"threshold must be a number in (0, 1], got {threshold!r}")
        if isinstance(eval_prompts, (str, bytes)):
            raise ConiferConfigError("eval_prompts must be a list of prompt texts, got one string")
        eval_prompts = list(eval_prompts)
        for j, prompt in enumerate(eval_prompts):
            if not isinstance(prompt, str):
                raise ConiferConfigError(
                    f"prompt {j} is a {type(prompt).__name__}, not a text: {prompt!r:.80}"
                )
        if not 0 < threshold <= 1:
            raise ConiferConfigError(f"threshold must be in (0, 1], got {threshold}")
        self.n = n
        self.threshold = threshold
        self._index: dict[int, dict[tuple[str, ...], list[int]]] = {}
        self._sizes: list[int] = []
        self._lengths: list[int] = []
        for j, prompt in enumerate(eval_prompts):
            words = normalize_text(prompt)
            k = min(n, len(words))
            grams = _ngrams(words, k) if k else set()
            self._sizes.append(len(grams))
            self._lengths.append(k)
            for g in grams:
                self._index.setdefault(k, {}).setdefault(g, []).append(j)
        if not self._sizes:
            raise ConiferConfigError("a contamination guard needs at least one evaluation prompt")

    def __len__(self) -> int:
        return len(self._sizes)

    def best_overlap(self, text: str) -> tuple[int, float]:
        """``(prompt_index, containment)`` of the prompt most contained in ``text`` (``(-1, 0.0)`` if none)."""
        words = normalize_text(text)
        counts: dict[int, int] = {}
        for k, index in self._index.items():
            for g in _ngrams(words, k):
                for j in index.get(g, ()):
                    counts[j] = counts.get(j, 0) + 1
        if not counts:
            return -1, 0.0
        j = max(counts, key=lambda p: (counts[p] / self._sizes[p], -p))
        return j, counts[j] / self._sizes[j]

    def check(self, texts: Iterable[str]) -> list[OverlapHit]:
        """The flagged texts (containment >= threshold), in input order."""
        hits = []
        for i, text in enumerate(texts):
            j, ov = self.best_overlap(text)
            if ov >= self.threshold:
                hits.append(OverlapHit(i, j, ov))
        if hits:
            logger.warning("%d text(s) contain evaluation prompts", len(hits))
        return hits
