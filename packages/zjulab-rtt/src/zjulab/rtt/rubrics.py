"""Rubrics and the verifiable checkers that score them.

A :class:`Rubric` is one constraint of a prompt. A ``"check"`` rubric names a registered Python
checker (IFEval instruction ids such as ``"punctuation:no_comma"``) with its arguments; a
``"judge"`` rubric is free text scored by an LLM judge (:class:`~zjulab.rtt.reward.RubricReward`).

Every checker returns a :class:`CheckResult`: whether the response satisfies the constraint
and the character spans of the response the constraint is about (the commas that break "no
commas", the keyword occurrences of "mention X"...). The spans serve as token-relevance labels
for the discriminator and as a rule-based relevance source (:class:`~zjulab.rtt.relevance.SpanRelevance`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from zjulab.rtt.errors import RubricError, UnknownCheckerError

__all__ = [
    "CHECKERS",
    "CheckResult",
    "Rubric",
    "Span",
    "check_arguments",
    "describe_check",
    "parse_rubrics",
    "register_checker",
    "run_check",
]

logger = logging.getLogger(__name__)

Span = tuple[int, int]
"""A half-open character range ``[start, end)`` of a response."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one verifiable checker on one response.

    Attributes:
        passed: Whether the response satisfies the constraint.
        spans: Character spans of the response relevant to the constraint (what it is about:
            also the occurrences that satisfy part of it, as labels for a relevance model).
        blame: When the response fails, the spans whose presence makes it fail (the commas of
            "no commas", the surplus occurrences of "at most N times"...). ``None`` means the
            spans themselves; ``()`` means the failure is about something missing (a keyword
            never written, too few occurrences), which no token of the response is to blame for.
    """

    passed: bool
    spans: tuple[Span, ...] = ()
    blame: tuple[Span, ...] | None = None

    @property
    def failure_spans(self) -> tuple[Span, ...]:
        """The spans a failure is attributed to (``()`` for a passing response)."""
        if self.passed:
            return ()
        return self.spans if self.blame is None else self.blame


Checker = Callable[..., CheckResult]
CHECKERS: dict[str, Checker] = {}
"""Registered checkers by name (IFEval instruction ids plus any registered by the user)."""

_DESCRIPTIONS: dict[str, Callable[..., str]] = {}


def register_checker(name: str, describe: Callable[..., str] | None = None) -> Callable[[Checker], Checker]:
    """Decorator registering ``fn(response, **kwargs) -> CheckResult`` under ``name``.

    Args:
        name: Checker name used by ``Rubric(checker=name)``.
        describe: Builds the rubric's human-readable text from the checker arguments.

    Returns:
        The decorator.
    """

    def deco(fn: Checker) -> Checker:
        CHECKERS[name] = fn
        if describe is not None:
            _DESCRIPTIONS[name] = describe
        return fn

    return deco


def _compare(count: float, relation: str, target: float) -> bool:
    rel = relation.strip().lower()
    if rel in ("less than", "<"):
        return count < target
    if rel in ("at least", ">="):
        return count >= target
    if rel in ("at most", "<="):
        return count <= target
    if rel in ("more than", ">"):
        return count > target
    if rel in ("exactly", "=="):
        return count == target
    raise RubricError(
        f"unknown relation {relation!r}; use 'less than', 'at least', 'at most', 'more than' or 'exactly'"
    )


def _find_all(pattern: str, text: str, flags: int = 0) -> tuple[Span, ...]:
    return tuple((m.start(), m.end()) for m in re.finditer(pattern, text, flags))


def _word_spans(text: str, word: str) -> tuple[Span, ...]:
    return _find_all(r"\b" + re.escape(word) + r"\b", text, re.IGNORECASE)


def _counted(spans: tuple[Span, ...], relation: str, target: float, passed: bool) -> CheckResult:
    """A count constraint: a failure is the occurrences' fault only when there are too many."""
    if passed:
        return CheckResult(True, spans)
    strict = relation.strip().lower() in ("less than", "<")
    too_many = len(spans) >= target if strict else len(spans) > target
    return CheckResult(False, spans, spans if too_many else ())


def _whole(text: str) -> tuple[Span, ...]:
    return ((0, len(text)),) if text else ()


@register_checker("punctuation:no_comma", lambda: "Do not use any commas in the response.")
def _no_comma(response: str) -> CheckResult:
    spans = _find_all(r",", response)
    return CheckResult(not spans, spans)


@register_checker("change_case:english_lowercase", lambda: "The entire response is in lowercase letters.")
def _lowercase(response: str) -> CheckResult:
    # IFEval's rule (str.islower): a response without any cased letter (an empty one) fails
    spans = tuple(
        sp for sp in _find_all(r"\S+", response) if any(c.isupper() for c in response[sp[0] : sp[1]])
    )
    return CheckResult(response.islower(), spans)


@register_checker("change_case:english_capital", lambda: "The entire response is in capital letters.")
def _capital(response: str) -> CheckResult:
    # IFEval's rule (str.isupper): a response without any cased letter (an empty one) fails
    spans = tuple(
        sp for sp in _find_all(r"\S+", response) if any(c.islower() for c in response[sp[0] : sp[1]])
    )
    return CheckResult(response.isupper(), spans)


@register_checker(
    "change_case:capital_word_frequency",
    lambda capital_frequency, capital_relation: (
        f"Use {capital_relation} {capital_frequency} words in all capital letters."
    ),
)
def _capital_words(response: str, capital_frequency: int, capital_relation: str) -> CheckResult:
    # IFEval counts the word tokens that are str.isupper() ("I", "NASA", "U.S." count; "A1" too)
    spans = tuple(
        (m.start(), m.end())
        for m in re.finditer(r"[^\W_]+(?:[-.][^\W_]+)*\.?", response)
        if m.group(0).isupper()
    )
    ok = _compare(len(spans), capital_relation, capital_frequency)
    return _counted(spans, capital_relation, capital_frequency, ok)


@register_checker(
    "keywords:existence", lambda keywords: "Include the keywords: " + ", ".join(map(str, keywords)) + "."
)
def _keywords(response: str, keywords: list[str]) -> CheckResult:
    spans: list[Span] = []
    ok = True
    for kw in keywords:
        found = _find_all(re.escape(kw), response, re.IGNORECASE)
        ok = ok and bool(found)
        spans.extend(found)
    # a failure is a keyword never written: the ones that are there are not to blame
    return CheckResult(ok, tuple(sorted(spans)), None if ok else ())


@register_checker(
    "keywords:forbidden_words",
    lambda forbidden_words: "Do not use the words: " + ", ".join(map(str, forbidden_words)) + ".",
)
def _forbidden(response: str, forbidden_words: list[str]) -> CheckResult:
    spans = sorted(s for w in forbidden_words for s in _word_spans(response, w))
    return CheckResult(not spans, tuple(spans))


@register_checker(
    "keywords:frequency",
    lambda keyword, frequency, relation: f"The word '{keyword}' appears {relation} {frequency} times.",
)
def _frequency(response: str, keyword: str, frequency: int, relation: str) -> CheckResult:
    spans = _find_all(re.escape(keyword), response, re.IGNORECASE)
    return _counted(spans, relation, frequency, _compare(len(spans), relation, frequency))


@register_checker(
    "keywords:letter_frequency",
    lambda letter, let_frequency, let_relation: (
        f"The letter '{letter}' appears {let_relation} {let_frequency} times."
    ),
)
def _letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> CheckResult:
    spans = _find_all(re.escape(letter), response, re.IGNORECASE)
    return _counted(spans, let_relation, let_frequency, _compare(len(spans), let_relation, let_frequency))


@register_checker(
    "detectable_content:number_placeholders",
    lambda num_placeholders: (
        f"Include at least {num_placeholders} placeholders in square brackets, like [name]."
    ),
)
def _placeholders(response: str, num_placeholders: int) -> CheckResult:
    spans = _find_all(r"\[[^\[\]]*\]", response)
    return _counted(spans, "at least", num_placeholders, len(spans) >= num_placeholders)


@register_checker(
    "detectable_content:postscript",
    lambda postscript_marker: f"End with a postscript starting with {postscript_marker}.",
)
def _postscript(response: str, postscript_marker: str) -> CheckResult:
    marker = postscript_marker.strip()
    if marker.lower() == "p.p.s":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker.lower() == "p.s.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    spans = _find_all(pattern, response.lower(), re.MULTILINE)
    return CheckResult(bool(spans), spans, None if spans else ())


@register_checker(
    "detectable_format:number_highlighted_sections",
    lambda num_highlights: f"Highlight at least {num_highlights} sections with markdown, like *highlighted*.",
)
def _highlights(response: str, num_highlights: int) -> CheckResult:
    spans = [
        (m.start(), m.end()) for m in re.finditer(r"\*[^\n\*]*\*", response) if m.group(0).strip("*").strip()
    ]
    spans += [
        (m.start(), m.end())
        for m in re.finditer(r"\*\*[^\n\*]*\*\*", response)
        if m.group(0).strip("*").strip()
    ]
    spans = sorted(set(spans))
    return _counted(tuple(spans), "at least", num_highlights, len(spans) >= num_highlights)


@register_checker(
    "detectable_format:number_bullet_lists",
    lambda num_bullets: f"Use exactly {num_bullets} markdown bullet points.",
)
def _bullets(response: str, num_bullets: int) -> CheckResult:
    # IFEval's two patterns: lines starting with "*" (not "**") and lines starting with "-"
    stars = _find_all(r"^\s*\*[^\*].*$", response, re.MULTILINE)
    dashes = _find_all(r"^\s*-.*$", response, re.MULTILINE)
    spans = tuple(sorted(stars + dashes))
    return _counted(spans, "exactly", num_bullets, len(spans) == num_bullets)


@register_checker(
    "detectable_format:title", lambda: "Include a title wrapped in double angular brackets, like <<title>>."
)
def _title(response: str) -> CheckResult:
    spans = [(m.start(), m.end()) for m in re.finditer(r"<<[^\n]+>>", response) if m.group(0)[2:-2].strip()]
    return CheckResult(bool(spans), tuple(spans), None if spans else ())


@register_checker("detectable_format:json_format", lambda: "Wrap the entire output in JSON format.")
def _json_format(response: str) -> CheckResult:
    value = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        value = value.removeprefix(prefix)
    value = value.removesuffix("```").strip()
    try:
        json.loads(value)
        ok = True
    except ValueError:
        ok = False
    return CheckResult(ok, _whole(response))


@register_checker(
    "startend:end_checker", lambda end_phrase: f"Finish the response with the exact phrase '{end_phrase}'."
)
def _end_checker(response: str, end_phrase: str) -> CheckResult:
    stripped = response.rstrip()
    ok = stripped.lower().endswith(end_phrase.strip().lower())
    tail = max(0, len(stripped) - max(len(end_phrase), 1))
    return CheckResult(ok, ((tail, len(stripped)),) if stripped else ())


@register_checker("startend:quotation", lambda: "Wrap the entire response in double quotation marks.")
def _quotation(response: str) -> CheckResult:
    stripped = response.strip()
    ok = len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'
    if not response.strip():
        return CheckResult(False, ())
    start = len(response) - len(response.lstrip())
    end = len(response.rstrip())
    spans = ((start, start + 1), (end - 1, end))
    # blame only the end that lacks its quotation mark
    blame = tuple(sp for sp, c in zip(spans, (stripped[0], stripped[-1])) if c != '"') or spans
    return CheckResult(ok, spans, None if ok else blame)


@register_checker(
    "length_constraints:number_words",
    lambda num_words, relation: f"Answer with {relation} {num_words} words.",
)
def _number_words(response: str, num_words: int, relation: str) -> CheckResult:
    words = re.findall(r"\w+", response)
    ok = _compare(len(words), relation, num_words)
    strict = relation.strip().lower() in ("less than", "<")
    too_long = len(words) >= num_words if strict else len(words) > num_words
    # too long: the whole response is to blame; too short: what is missing is not in it
    return CheckResult(ok, _whole(response), None if ok or too_long else ())


@register_checker(
    "length_constraints:number_paragraphs",
    lambda num_paragraphs: (
        f"Write exactly {num_paragraphs} paragraphs separated by the markdown divider ***."
    ),
)
def _number_paragraphs(response: str, num_paragraphs: int) -> CheckResult:
    spans = _find_all(r"\s?\*\*\*\s?", response)
    parts = re.split(r"\s?\*\*\*\s?", response)
    # IFEval: an empty first or last part (a divider at an end) is not a paragraph; an empty
    # one between two dividers fails the constraint
    inner_empty = any(not p.strip() for p in parts[1:-1])
    count = len(parts) - (not parts[0].strip()) - (len(parts) > 1 and not parts[-1].strip())
    ok = count == num_paragraphs and not inner_empty
    # too many dividers (or an empty paragraph between two) are the dividers' fault
    blame = spans if count > num_paragraphs or inner_empty else ()
    return CheckResult(ok, spans, None if ok else blame)


@register_checker(
    "detectable_format:constrained_response",
    lambda: "Answer with one of: 'My answer is yes.', 'My answer is no.', 'My answer is maybe.'",
)
def _constrained(response: str) -> CheckResult:
    options = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    spans = tuple(s for o in options for s in _find_all(re.escape(o), response))
    return CheckResult(bool(spans), spans, None if spans else ())


@register_checker(
    "combination:repeat_prompt",
    lambda prompt_to_repeat: "First repeat the request word for word without change, then answer.",
)
def _repeat_prompt(response: str, prompt_to_repeat: str) -> CheckResult:
    want = prompt_to_repeat.strip().lower()
    ok = response.strip().lower().startswith(want)
    start = len(response) - len(response.lstrip())
    end = min(len(response), start + len(prompt_to_repeat))
    spans = ((start, end),) if response else ()
    if ok or not response:
        return CheckResult(ok, spans, None if ok else ())
    # blame from the first character that departs from the request (the repeated prefix is right)
    got = response[start:].lower()
    same = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    blame = ((start + same, end),) if start + same < end else ()
    return CheckResult(False, spans, blame)


@register_checker(
    "detectable_format:multiple_sections",
    lambda section_spliter, num_sections: (
        f"Write {num_sections} sections, each starting with '{section_spliter} X'."
    ),
)
def _multiple_sections(response: str, section_spliter: str, num_sections: int) -> CheckResult:
    spans = _find_all(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", response)
    return _counted(spans, "at least", num_sections, len(spans) >= num_sections)


@register_checker(
    "combination:two_responses",
    lambda: "Give two different responses separated by six asterisks: ******.",
)
def _two_responses(response: str) -> CheckResult:
    pieces = response.split("******")
    spans, pos = [], 0
    for piece in pieces[:-1]:
        pos += len(piece)
        spans.append((pos, pos + 6))
        pos += 6
    parts = [p.strip() for p in pieces]
    # IFEval: an empty piece is allowed only before the first or after the last separator
    inner_empty = any(not p for p in parts[1:-1])
    answers = [p for p in parts if p]
    ok = not inner_empty and len(answers) == 2 and answers[0] != answers[1]
    # surplus or adjacent separators are the separators' fault; a missing answer is not
    fault = inner_empty or len(answers) > 2
    return CheckResult(ok, tuple(spans), None if ok else (tuple(spans) if fault else ()))


@register_checker(
    "length_constraints:nth_paragraph_first_word",
    lambda num_paragraphs, nth_paragraph, first_word: (
        f"Write {num_paragraphs} paragraphs separated by blank lines; paragraph {nth_paragraph} "
        f"starts with the word '{first_word}'."
    ),
)
def _nth_paragraph_first_word(
    response: str, num_paragraphs: int, nth_paragraph: int, first_word: str
) -> CheckResult:
    # IFEval's rule: paragraphs are the pieces between "\n\n"; empty ones do not count, but the
    # n-th paragraph is the n-th piece, empty ones included
    pieces = response.split("\n\n")
    starts, pos = [], 0
    for piece in pieces:
        starts.append(pos)
        pos += len(piece) + 2
    count = sum(1 for p in pieces if p.strip())
    if not 0 < nth_paragraph <= count or not pieces[nth_paragraph - 1].strip():
        return CheckResult(False, (), ())
    piece = pieces[nth_paragraph - 1]
    m = re.search(r"\S+", piece)
    assert m is not None  # the piece is not blank
    token = m.group(0).lstrip("'").lstrip('"')
    word = re.match(r"[^.,?!'\"]*", token).group(0)  # type: ignore[union-attr]
    start = starts[nth_paragraph - 1] + m.end() - len(token)
    word_span = (start, start + max(len(word), 1))
    right_word = word.lower() == first_word.strip().lower()
    ok = count == num_paragraphs and right_word
    return CheckResult(ok, (word_span,), None if ok or not right_word else ())


def run_check(name: str, response: str, kwargs: Mapping[str, Any] | None = None) -> CheckResult:
    """Run the checker ``name`` on ``response``.

    Args:
        name: A registered checker name.
        response: The response text.
        kwargs: The checker's arguments (``None`` values are dropped).

    Returns:
        The check result.

    Raises:
        UnknownCheckerError: ``name`` is not registered.
        RubricError: The arguments do not fit the checker.
    """
    fn = CHECKERS.get(name)
    if fn is None:
        raise UnknownCheckerError(f"no checker named {name!r}; registered: {sorted(CHECKERS)}")
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    try:
        return fn(response, **args)
    except TypeError as exc:
        raise RubricError(f"checker {name!r} does not accept arguments {sorted(args)}: {exc}") from exc


_RELATIONS = ("less than", "at least", "at most", "more than", "exactly", "<", ">=", "<=", ">", "==")
_WORD_LISTS = frozenset({"keywords", "forbidden_words"})
_TEXTS = frozenset(
    {
        "keyword",
        "letter",
        "postscript_marker",
        "end_phrase",
        "prompt_to_repeat",
        "section_spliter",
        "first_word",
    }
)
_RELATION_ARGS = frozenset({"relation", "capital_relation", "let_relation"})
_COUNTS = frozenset(
    {
        "capital_frequency",
        "frequency",
        "let_frequency",
        "num_placeholders",
        "num_highlights",
        "num_bullets",
        "num_words",
        "num_paragraphs",
        "nth_paragraph",
        "num_sections",
    }
)


def check_arguments(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a checker's arguments before anything is scored with them.

    The built-in checkers' arguments have IFEval's types: ``keywords`` / ``forbidden_words`` a
    list of strings (a plain string would be read letter by letter), counts non-negative
    integers (an integral float such as ``3.0`` is accepted as 3), relations one of
    ``"less than"``, ``"at least"``, ``"at most"``, ``"more than"``, ``"exactly"``. Every
    checker's arguments must fit its signature.

    Returns:
        The arguments (``None`` values dropped, integral floats made ints).

    Raises:
        UnknownCheckerError: ``name`` is not registered.
        RubricError: An argument is missing, unexpected or of the wrong type (the message names it).
    """
    fn = CHECKERS.get(name)
    if fn is None:
        raise UnknownCheckerError(f"no checker named {name!r}; registered: {sorted(CHECKERS)}")
    args = {k: v for k, v in dict(kwargs).items() if v is not None}
    for key, value in args.items():
        bad = None
        if key in _WORD_LISTS:
            if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) and w for w in value):
                bad = "a list of non-empty strings"
        elif key in _TEXTS:
            if not isinstance(value, str) or not value:
                bad = "a non-empty string"
        elif key in _RELATION_ARGS:
            if not isinstance(value, str) or value.strip().lower() not in _RELATIONS:
                bad = "one of 'less than', 'at least', 'at most', 'more than', 'exactly'"
        elif key in _COUNTS:
            if isinstance(value, float) and value.is_integer():
                value = args[key] = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                bad = "a non-negative integer"
        if bad is not None:
            raise RubricError(f"checker {name!r}: argument {key!r} must be {bad}, got {value!r}")
    import inspect

    try:
        inspect.signature(fn).bind("", **args)
    except TypeError as exc:
        raise RubricError(f"checker {name!r} does not accept arguments {sorted(args)}: {exc}") from exc
    return args


def describe_check(name: str, kwargs: Mapping[str, Any] | None = None) -> str:
    """A human-readable statement of the constraint checked by ``name`` with ``kwargs``.

    Raises:
        UnknownCheckerError: ``name`` is not registered.
    """
    if name not in CHECKERS:
        raise UnknownCheckerError(f"no checker named {name!r}; registered: {sorted(CHECKERS)}")
    fn = _DESCRIPTIONS.get(name)
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    if fn is None:
        return f"Satisfy the constraint {name}."
    try:
        return fn(**args)
    except TypeError as exc:
        raise RubricError(f"checker {name!r} does not accept arguments {sorted(args)}: {exc}") from exc


@dataclass(frozen=True)
class Rubric:
    """One constraint of a prompt.

    Args:
        text: The criterion in words (what the judge and the discriminator read). Built from
            the checker when empty.
        kind: ``"check"`` (a registered Python checker) or ``"judge"`` (an LLM judge).
        checker: Checker name, for ``kind="check"``.
        kwargs: Checker arguments.
    """

    text: str = ""
    kind: Literal["check", "judge"] = "judge"
    checker: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("check", "judge"):
            raise RubricError(f"rubric kind must be 'check' or 'judge', got {self.kind!r}")
        if self.kind == "check":
            if not self.checker:
                raise RubricError(f"a 'check' rubric needs a checker name (text={self.text!r})")
            if self.checker not in CHECKERS:
                raise UnknownCheckerError(
                    f"no checker named {self.checker!r}; registered: {sorted(CHECKERS)}"
                )
            clean = check_arguments(self.checker, self.kwargs)
            object.__setattr__(self, "kwargs", clean)
            if not self.text:
                object.__setattr__(self, "text", describe_check(self.checker, clean))
        elif not self.text.strip():
            raise RubricError("a 'judge' rubric needs non-empty text")

    @classmethod
    def check(cls, checker: str, text: str = "", **kwargs: Any) -> Rubric:
        """A verifiable rubric scored by the checker ``checker``."""
        return cls(text=text, kind="check", checker=checker, kwargs=kwargs)

    @classmethod
    def judge(cls, text: str) -> Rubric:
        """A rubric scored by an LLM judge."""
        return cls(text=text, kind="judge")

    def evaluate(self, response: str) -> CheckResult:
        """Run the checker of a ``"check"`` rubric.

        Raises:
            RubricError: The rubric is a ``"judge"`` rubric.
        """
        if self.kind != "check" or self.checker is None:
            raise RubricError(f"rubric {self.text!r} is judged by a model, not checked by code")
        return run_check(self.checker, response, self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``Rubric.from_obj`` reads it back)."""
        out: dict[str, Any] = {"text": self.text, "kind": self.kind}
        if self.checker is not None:
            out["checker"] = self.checker
            out["kwargs"] = dict(self.kwargs)
        return out

    def to_json(self) -> str:
        """The rubric as a JSON string: the safest form for a ``datasets`` column."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_obj(cls, obj: Any) -> Rubric:
        """Build a rubric from a ``Rubric``, a dict, a JSON string, or plain text (a judge rubric).

        Raises:
            RubricError: The object cannot be read as a rubric.
        """
        if isinstance(obj, Rubric):
            return obj
        if isinstance(obj, str):
            s = obj.strip()
            if s.startswith("{"):
                try:
                    obj = json.loads(s)
                except ValueError as exc:
                    raise RubricError(f"rubric JSON does not parse: {s[:80]!r}") from exc
            else:
                return cls.judge(obj)
        if not isinstance(obj, Mapping):
            raise RubricError(f"cannot read a rubric from {type(obj).__name__}: {obj!r}")
        kind = obj.get("kind") or ("check" if obj.get("checker") else "judge")
        kwargs = obj.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise RubricError(f"rubric kwargs must be a mapping, got {kwargs!r}")
        return cls(
            text=str(obj.get("text") or ""),
            kind=kind,  # type: ignore[arg-type]  # checked in __post_init__
            checker=obj.get("checker"),
            kwargs=dict(kwargs),
        )


def parse_rubrics(value: Any) -> list[Rubric]:
    """Read a dataset cell holding a prompt's rubrics (a list, or a JSON list string).

    Raises:
        RubricError: The cell is not a list of rubric-like objects.
    """
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except ValueError as exc:
                raise RubricError(f"rubric list JSON does not parse: {s[:80]!r}") from exc
        else:
            value = [value]
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise RubricError(f"rubrics must be a list, got {type(value).__name__}")
    return [Rubric.from_obj(v) for v in value]
