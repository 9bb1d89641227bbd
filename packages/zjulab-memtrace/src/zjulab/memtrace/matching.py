"""Text matching used to decide whether an answer is right and whether a value carries evidence.

An answer is right when :func:`check_answer` accepts it: it holds the gold answer's content
words, its numbers and dates agree, it does not negate, and it does not list alternatives. A value *carries* an evidence text when one of the strings inside it contains that
fraction of the evidence's tokens.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AnswerCheck",
    "answer_matches",
    "carries",
    "check_answer",
    "content_recall",
    "flatten_text",
    "locomo_f1",
    "normalize_text",
    "token_recall",
]

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


def answer_matches(prediction: Any, gold: str, threshold: float = 1.0, question: str | None = None) -> bool:
    """Whether ``prediction`` answers with ``gold`` (see :func:`check_answer`)."""
    return check_answer(prediction, gold, question, threshold).correct


def flatten_text(value: Any, _seen: frozenset[int] = frozenset()) -> Iterator[str]:
    """Every string inside a nested value (dict values, list items, fields of an object...).

    Message and document objects (dataclasses, pydantic models, plain objects with attributes,
    as agent frameworks pass them) are read through their fields, so evidence inside a
    ``Message(role=..., text=...)`` is seen like evidence inside a dict.
    """
    if isinstance(value, str):
        yield value
    elif id(value) in _seen:  # a value that holds itself
        return
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from flatten_text(v, _seen | {id(value)})
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            yield from flatten_text(v, _seen | {id(value)})
    elif value is not None and isinstance(value, (int, float)):
        yield str(value)
    elif value is None or isinstance(value, (bytes, bytearray, type)) or callable(value):
        return
    else:
        yield from flatten_text(list(_fields_of(value).values()), _seen | {id(value)})


def _fields_of(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        try:
            out = dump()
            return out if isinstance(out, dict) else {}
        except Exception:
            return {}
    try:
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    except TypeError:  # no __dict__ (slots, builtins)
        slots = getattr(type(value), "__slots__", ())
        slots = (slots,) if isinstance(slots, str) else slots
        return {k: getattr(value, k, None) for k in slots if not k.startswith("_")}


def content_recall(reference: str, candidate: str) -> float:
    """Fraction of ``reference``'s content words found in ``candidate``.

    Stop words and pronouns aside, with light stemming: "Priya: I am a nurse" and "Priya is a
    nurse" agree fully.
    """
    ref = _content(reference)
    if not ref:
        return 0.0
    cand = set(_content(candidate))
    return sum(1 for t in ref if t in cand) / len(ref)


def carries(value: Any, evidence: str, threshold: float = 0.9, answer: str = "", similar: Any = None) -> bool:
    """Whether one string inside ``value`` holds ``evidence``.

    Strings are compared line by line (unless the evidence itself spans lines). The line must
    contain ``threshold`` of the evidence's tokens or of its content words (so "I am" rewritten
    as "Priya is" still counts), or pass ``similar(evidence, lines)`` when given, and, when ``answer`` is
    given, as much of the answer as the evidence itself does (so a copy of the evidence with
    the answer changed does not count).
    """
    need = token_recall(answer, evidence) if answer else 0.0
    units = flatten_text(value)
    if "\n" not in evidence:  # compare line by line, so a long context cannot lend its words
        units = (line for s in units for line in s.split("\n"))
    units = list(units)
    holds = [not need or token_recall(answer, s) >= need for s in units]
    if any(
        ok and max(token_recall(evidence, s), content_recall(evidence, s)) >= threshold
        for s, ok in zip(units, holds)
    ):
        return True
    if similar is not None:  # a semantic check for paraphrases the lexical rule misses
        cands = [s for s, ok in zip(units, holds) if ok and s.strip()]
        return bool(cands) and bool(similar(evidence, cands))
    return False


# ---------------------------------------------------------------- strict answer check
#: English function words: the one list the answer check, the example pipelines' lexical
#: retriever and the benchmarks start from.
FUNCTION_WORDS = frozenset(
    [
        "a",
        "about",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "him",
        "his",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "s",
        "she",
        "should",
        "t",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
_STOP = (FUNCTION_WORDS - {"or", "s", "t", "whom"}) | {
    "also",
    "am",
    "being",
    "called",
    "just",
    "name",
    "named",
    "really",
    "so",
    "than",
    "then",
    "there",
    "these",
    "those",
    "very",
}
_NEGATIONS = frozenset(
    ["not", "no", "never", "none", "neither", "nor", "without", "nobody", "nothing", "nowhere", "cannot"]
)
_MONTHS = {
    m: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        1,
    )
    for m in names
}
_WEEKDAYS = frozenset(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])
_NUM_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ]
    )
}
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LIST_SPLIT = re.compile(r",|;|\bor\b|\band\b|/")
_OTHER_SPLIT = re.compile(r",|;|\bor\b|/")


def _stem(token: str) -> str:
    """A light English normaliser: plural, possessive and -ed/-ing endings."""
    t = token.removesuffix("'s")
    if len(t) > 5 and t.endswith("ing"):
        return t[:-3]
    if len(t) > 4 and t.endswith("ed"):
        return t[:-2]
    if len(t) > 4 and t.endswith("ies"):
        return t[:-3] + "y"
    if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
        return t[:-1]
    return t


_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_MONTH_NAMES = {i: m for m, i in _MONTHS.items() if len(m) > 4 or m in ("may", "june", "july")}


def _iso_date(m: re.Match[str]) -> str:
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if 1 <= month <= 12 and 1 <= day <= 31:  # an ISO date reads as the date it is
        return f"{day} {_MONTH_NAMES[month]} {year}"
    return m.group(0)


def _tokens(text: str) -> list[str]:
    text = _ISO_DATE.sub(_iso_date, str(text).lower().replace("n't", " not").replace("’", "'"))
    out = []
    for t in _TOKEN.findall(text):
        t = _NUM_WORDS.get(t, t)
        t = re.sub(r"(\d+)(st|nd|rd|th)$", r"\1", t)
        if t.isdigit():
            t = t.lstrip("0") or "0"  # "07" is 7
        out.append(t)
    return out


def _content(text: str, drop: frozenset[str] = frozenset()) -> list[str]:
    return [
        _stem(t) for t in _tokens(text) if t not in _STOP and t not in _NEGATIONS and _stem(t) not in drop
    ]


def _facets(tokens: list[str]) -> tuple[set[str], set[int], set[str]]:
    nums = {t for t in tokens if t.isdigit()}
    months = {_MONTHS[t] for t in tokens if t in _MONTHS}
    days = {t for t in tokens if t in _WEEKDAYS}
    return nums, months, days


def locomo_f1(prediction: str, gold: str) -> float:
    """Token F1 as LoCoMo's evaluation scores answers (normalised tokens, articles dropped).

    Multi-part gold answers (comma-separated) score the mean over parts of the best-matching
    prediction part, as in the benchmark's multi-hop category. Stemming here is the light
    normaliser of this module, not Porter's.
    """

    def f1(p: str, g: str) -> float:
        pt = [_stem(t) for t in _tokens(p) if t not in ("a", "an", "the", "and")]
        gt = [_stem(t) for t in _tokens(g) if t not in ("a", "an", "the", "and")]
        common = sum((Counter(pt) & Counter(gt)).values())
        if not common:
            return 0.0
        prec, rec = common / len(pt), common / len(gt)
        return 2 * prec * rec / (prec + rec)

    preds = [x.strip() for x in str(prediction).split(",")]
    golds = [x.strip() for x in str(gold).split(",")]
    return sum(max(f1(p, g) for p in preds) for g in golds) / len(golds)


@dataclass(frozen=True)
class AnswerCheck:
    """Why an answer was accepted or refused (see :func:`check_answer`)."""

    correct: bool
    reason: str
    recall: float = 0.0


def _answers_with(pred: str, gtoks: list[str]) -> bool:
    spaced = " ".join(_TOKEN.findall(str(pred).lower().replace("n't", " not").replace("’", "'")))
    lead = " ".join(gtoks)
    if spaced == lead:
        return True
    head = re.match(
        r"\W*" + r"\W+".join(re.escape(t) for t in lead.split()) + r"\s*([,.;:!?]|$)", str(pred).lower()
    )
    return head is not None


def check_answer(
    prediction: Any, gold: str, question: str | None = None, threshold: float = 1.0
) -> AnswerCheck:
    """Decide whether ``prediction`` answers with ``gold``, strictly.

    The rule a reader would apply to a memory assistant's reply:

    1. the reply holds the gold answer's content words (stop words, words of the question
       and light inflection ignored): at least ``threshold`` of them, all of them by default;
    2. dates and numbers agree: every number, month and weekday in the gold answer is in the
       reply, and where the gold answer has a number (month, weekday) the reply names no
       other one ("8 May 2023" is not "7 May 2023");
    3. a negation the gold answer does not have refuses the reply ("definitely not Milo");
    4. a reply that lists alternatives ("Milo, Rex or Bella": items of at most two content
       words split by commas, "or", "and", "/"; of one word when only "and" splits them, since
       "and" also joins clauses) is refused when a listed item holds no word of the gold
       answer — a list of candidates is no answer.

    An ISO date (``2023-05-07``) reads as the date it names and leading zeros of a number
    are dropped, so "2023-05-07" answers "7 May 2023".

    A gold answer of function words only ("No", "None", "Never") is matched by the reply
    answering with those words, alone or before a pause ("No, she did not"), not "No idea".

    Args:
        prediction: The reply (strings inside a nested value are joined).
        gold: The gold answer.
        question: The question; its words are not counted as answer content.
        threshold: Fraction of the gold content words the reply must hold.

    Returns:
        The decision with its reason.
    """
    if prediction is None:
        return AnswerCheck(False, "no answer")
    pred = " ".join(flatten_text(prediction))
    qwords = frozenset(_content(question or ""))
    gtoks, ptoks = _tokens(gold), _tokens(pred)
    gold_content = _content(gold, qwords) or _content(gold)
    if not gold_content:
        # "No", "None", "Never": the answer is its function words, so the reply must answer
        # with them, alone or before a pause ("No, she did not"), not "No idea" or "I know"
        if gtoks and _answers_with(pred, gtoks):
            return AnswerCheck(True, "the reply answers with the gold words", 1.0)
        return AnswerCheck(
            False,
            "the reply does not answer with the gold words" if gtoks else "the gold answer has no words",
        )
    pc = set(_content(pred))
    hit = sum(1 for t in gold_content if t in pc)
    recall = hit / len(gold_content)
    if recall < threshold:
        return AnswerCheck(False, f"holds {hit} of {len(gold_content)} gold content words", recall)
    gn, gm, gd = _facets(gtoks)
    pn, pm, pd = _facets(ptoks)
    qn, qm, qd = _facets(_tokens(question or ""))
    if not gn <= pn or not gm <= pm or not gd <= pd:
        return AnswerCheck(False, "a number or date of the gold answer is missing", recall)
    if (gn and pn - gn - qn) or (gm and pm - gm - qm) or (gd and pd - gd - qd):
        return AnswerCheck(False, "names a different number or date", recall)
    if any(t in _NEGATIONS for t in ptoks) and not any(t in _NEGATIONS for t in gtoks):
        return AnswerCheck(False, "the reply negates", recall)
    gset = set(_content(gold))
    parts = [p for p in _LIST_SPLIT.split(pred.lower()) if _content(p, qwords)]
    if len(parts) > 1 and len(_LIST_SPLIT.split(gold.lower())) < len(parts):
        # "and" alone also joins clauses ("adopted a rescue dog and named her Biscuit"): there
        # an item is a list item only when it is a single word; after "," "or" "/" up to two
        limit = 2 if _OTHER_SPLIT.search(pred.lower()) else 1
        short = [p for p in parts if len(_content(p, qwords)) <= limit]
        if len(short) == len(parts):
            extra = [p for p in parts if not set(_content(p, qwords)) & gset]
            if extra:
                return AnswerCheck(False, f"lists alternatives ({extra[0].strip()!r})", recall)
    return AnswerCheck(True, "holds the gold answer", recall)
