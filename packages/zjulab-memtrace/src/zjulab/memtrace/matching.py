"""Text matching used to decide whether an answer is right and whether a value carries evidence.

Answers are compared SQuAD-style after normalisation (lower case, punctuation and articles
removed): an answer is correct when it contains at least ``threshold`` of the gold answer's
tokens. A value *carries* an evidence text when one of the strings inside it contains that
fraction of the evidence's tokens.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["answer_matches", "carries", "flatten_text", "normalize_text", "token_recall"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and English articles, squeeze white space."""
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_recall(reference: str, candidate: str) -> float:
    """Fraction of ``reference``'s normalised tokens (with multiplicity) found in ``candidate``.

    Returns 0.0 when the reference has no tokens.
    """
    ref = Counter(normalize_text(reference).split())
    if not ref:
        return 0.0
    cand = Counter(normalize_text(candidate).split())
    hit = sum(min(n, cand[t]) for t, n in ref.items())
    return hit / sum(ref.values())


def answer_matches(prediction: Any, gold: str, threshold: float = 0.6) -> bool:
    """Whether ``prediction`` contains at least ``threshold`` of the gold answer's tokens."""
    if prediction is None:
        return False
    return token_recall(str(gold), " ".join(flatten_text(prediction))) >= threshold


def flatten_text(value: Any) -> Iterator[str]:
    """Every string inside a nested value (dict values, list items...)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from flatten_text(v)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from flatten_text(v)
    elif value is not None and isinstance(value, (int, float)):
        yield str(value)


def carries(value: Any, evidence: str, threshold: float = 0.9, answer: str = "") -> bool:
    """Whether one string inside ``value`` holds ``evidence``.

    Strings are compared line by line (unless the evidence itself spans lines). The line must
    contain ``threshold`` of the evidence's tokens and, when ``answer`` is
    given, as much of the answer as the evidence itself does (so a copy of the evidence with
    the answer changed does not count).
    """
    need = token_recall(answer, evidence) if answer else 0.0
    units = flatten_text(value)
    if "\n" not in evidence:  # compare line by line, so a long context cannot lend its words
        units = (line for s in units for line in s.split("\n"))
    return any(
        token_recall(evidence, s) >= threshold and (not need or token_recall(answer, s) >= need)
        for s in units
    )
