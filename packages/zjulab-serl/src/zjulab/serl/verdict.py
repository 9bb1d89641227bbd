r"""Read a judge's verdict (1, 2 or invalid) from free text.

The judge is asked for ``\boxed{1}`` or ``\boxed{2}``. Real outputs add reasoning, LaTeX
wrappers (``\boxed{\text{2}}``), spaces, doubled backslashes from JSON escaping, several boxes,
or no box at all. :func:`parse_verdict` returns the number of the preferred answer or ``None``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from zjulab.common.errors import StructuredOutputError
from zjulab.common.structured import parse_json

__all__ = ["parse_verdict", "parse_verdicts", "unfinished_reasoning"]

logger = logging.getLogger(__name__)

_BOX = re.compile(r"\\+boxed\s*\{")
_BARE_BOX = re.compile(r"(?<![\\\w])boxed\s*\{")
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+\s*")
_WORD_NAMES = {"1": 1, "2": 2, "one": 1, "two": 2, "first": 1, "second": 2, "a": 1, "b": 2, "i": 1, "ii": 2}
_LABEL = re.compile(
    r"^(?:answer|response|output|model|assistant|option|candidate|choice)?[\s_#:.-]*([12])$|^([12])$"
)
_LEADING = re.compile(r"^[\s\"'`*(\[]*([12])(?![\d.,]\d)(?:\W|$)")
_JSON_KEYS = ("winner", "better", "best", "preference", "preferred", "verdict", "choice", "answer", "result")
_PHRASES = [
    # "Answer 2 is better", "response (1) is the best one", "model_1 wins"
    re.compile(
        r"\b(?:answer|response|output|model|assistant|option|candidate)[\s_#]*\(?([12])\)?\s+"
        r"(?:is|was|seems|looks)?\s*(?:clearly\s+|much\s+|slightly\s+|the\s+)?"
        r"(?:better|best|superior|preferred|preferable|stronger|wins|winner)",
        re.IGNORECASE,
    ),
    # "I prefer answer 1", "I choose response (2)", "select model 1"
    re.compile(
        r"\b(?:prefer|choose|chose|pick|picked|select|selected|vote\s+for)\s+"
        r"(?:the\s+)?(?:answer|response|output|model|assistant|option)?[\s_#]*\(?([12])\)?\b",
        re.IGNORECASE,
    ),
    # "Verdict: 2", "Final answer: [[1]]", "Winner = 2"
    re.compile(
        r"\b(?:verdict|winner|final\s+answer|better\s+answer|best\s+answer|answer)\s*[:=]\s*"
        r"\[*\(?(?:answer|response|output|model)?[\s_#]*([12])\)?\]*",
        re.IGNORECASE,
    ),
    # MT-Bench style "[[1]]" / "[[A]]"
    re.compile(r"\[\[\s*([12AB])\s*\]\]"),
]


def _box_contents(text: str, pattern: re.Pattern[str]) -> list[str]:
    """The brace-balanced contents of every box in ``text`` (unclosed boxes are skipped)."""
    out = []
    for m in pattern.finditer(text):
        depth, start = 1, m.end()
        for k in range(start, len(text)):
            c = text[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    out.append(text[start:k])
                    break
    return out


def _normalise(content: str) -> int | None:
    r"""Map a box's content (``2``, ``\text{2}``, ``Answer 1``, `` "1". ``) to 1, 2 or None."""
    s = _LATEX_CMD.sub("", content)
    s = re.sub(r"[{}\"'`*$()\[\]]", "", s).strip().rstrip(".!").strip().lower()
    if s in _WORD_NAMES:
        return _WORD_NAMES[s]
    m = _LABEL.match(s)
    if m:
        return int(m.group(1) or m.group(2))
    return None


def _from_json(text: str) -> int | None:
    if "{" not in text and "[" not in text:
        return None
    try:
        data: Any = parse_json(text)
    except StructuredOutputError:
        return None
    if not isinstance(data, dict):
        return None
    norm = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in data.items()}
    for key in _JSON_KEYS:
        if key in norm:
            value = norm[key]
            if isinstance(value, bool):
                return None
            if isinstance(value, (int, float)) and value in (1, 2):
                return int(value)
            if isinstance(value, str):
                return _normalise(value)
    return None


def _from_phrases(text: str) -> int | None:
    best: tuple[int, int] | None = None  # (position, verdict): the last statement wins
    for pattern in _PHRASES:
        for m in pattern.finditer(text):
            raw = m.group(1).upper()
            verdict = {"1": 1, "2": 2, "A": 1, "B": 2}[raw]
            if best is None or m.start() > best[0]:
                best = (m.start(), verdict)
    if best is not None:
        return best[1]
    lead = _LEADING.match(text)  # "2", "1. Because ...", "(2) is better": a leading number
    return int(lead.group(1)) if lead else None


def unfinished_reasoning(
    text: str,
    reasoning_start: str | None = "<think>",
    reasoning_end: str | None = "</think>",
    *,
    opened_by_prompt: bool = False,
) -> bool:
    """Whether ``text`` stops inside a reasoning block (an opening marker with no closing one after it).

    With ``opened_by_prompt=True`` (chat templates that end the prompt with the opening marker, as
    DeepSeek-R1's does) a text without any closing marker is unfinished too.
    """
    if not reasoning_end:
        return False
    last_end = text.rfind(reasoning_end)
    if reasoning_start and text.rfind(reasoning_start) > last_end:
        return True
    return opened_by_prompt and last_end < 0


def parse_verdict(
    text: str,
    *,
    lenient: bool = False,
    reasoning_end: str | None = "</think>",
    reasoning_start: str | None = "<think>",
    reasoning_opened_by_prompt: bool = False,
) -> int | None:
    r"""The answer a judge prefers: 1, 2, or ``None`` when no valid verdict can be read.

    Rules, in order:

    0. An output that stops inside its reasoning (``reasoning_start`` with no ``reasoning_end``
       after it, or, with ``reasoning_opened_by_prompt=True``, no ``reasoning_end`` at all) has
       no verdict, in both modes: a box written while thinking ("``\boxed{1}`` if ...,
       ``\boxed{2}`` if ...") is not an answer.
    1. If ``reasoning_end`` occurs, only the text after its last occurrence counts.
    2. The **last** ``\boxed{...}`` (any number of backslashes, nested braces allowed) decides.
       Its content is cleaned of LaTeX commands, quotes, brackets and a label word
       (``\boxed{\text{Answer 2}}`` -> 2); any other content (``\boxed{3}``,
       ``\boxed{1 or 2}``) makes the verdict invalid.
    3. Only with ``lenient=True`` and no box: ``boxed{1}`` without a backslash, a JSON object
       with a ``winner`` / ``better`` / ``preference`` / ``verdict`` / ``choice`` key, phrases
       such as "Answer 2 is better", "I prefer response 1", "Verdict: 2", ``[[A]]`` (the last
       such statement wins), or else an answer that starts with ``1`` or ``2`` ("2", "1. Because").

    Args:
        text: The judge's raw output.
        lenient: Accept verdicts that are not in the requested boxed format.
        reasoning_end: Marker closing a reasoning block (``None`` to keep the whole text).
        reasoning_start: Marker opening a reasoning block (``None``: never looked for).
        reasoning_opened_by_prompt: The prompt already opened the reasoning block.

    Returns:
        1 or 2, or ``None`` for an invalid verdict.
    """
    if not isinstance(text, str):
        return None
    if unfinished_reasoning(
        text, reasoning_start, reasoning_end, opened_by_prompt=reasoning_opened_by_prompt
    ):
        return None
    if reasoning_end and reasoning_end in text:
        text = text.rsplit(reasoning_end, 1)[1]
    boxes = _box_contents(text, _BOX)
    if boxes:
        return _normalise(boxes[-1])
    if not lenient:
        return None
    bare = _box_contents(text, _BARE_BOX)
    if bare:
        return _normalise(bare[-1])
    verdict = _from_json(text)
    if verdict is not None:
        return verdict
    return _from_phrases(text)


def parse_verdicts(texts: list[str], **options: object) -> list[int | None]:
    """:func:`parse_verdict` over a list (same keyword options)."""
    return [parse_verdict(t, **options) for t in texts]  # type: ignore[arg-type]
