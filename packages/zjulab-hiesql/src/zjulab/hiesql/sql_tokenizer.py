"""The SQL tokenizer used by the Spider-family evaluator.

The official Spider/SParC scripts turn every ``'`` into ``"``, keep each quoted span whole, run
NLTK's word tokenizer over the rest, lower-case the pieces and glue ``!``/``>``/``<`` back onto a
following ``=``. This module reproduces that token stream without NLTK: after the quoted spans are
set aside, only a handful of the word tokenizer's rules can fire on SQL text (padding of brackets,
``* ; @ # $ % & ? !``, commas and colons not followed by a digit, a sentence-final period, runs of
dots, double dashes, Unicode dashes and quotes, and the ``cannot``-style word splits). The rules
are restated here and checked against NLTK token by token in the tests.
"""

from __future__ import annotations

import re

from zjulab.hiesql.errors import SQLParseError

__all__ = ["tokenize_sql"]

# Each rule pads a match with spaces; applied in this order (order matters for the period rule).
_PAD_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile("([«“‘„]|`+)"), r" \1 "),
    (re.compile(r"""([^.])(\.)([\])}>"'»”’ ]*+)\s*$"""), r"\1 \2 \3 "),
    (re.compile(r"([:,])(\D)"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile("[\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r"""([^.])(\.)([\])}>"']*)\s*$"""), r"\1 \2\3 "),
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"[*]"), r" \g<0> "),
    (re.compile(r"[\][(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
    (re.compile("([»”’])"), r" \1 "),
]
_WORD_SPLITS = [
    re.compile(p)
    for p in (
        r"(?i)\b(can)(not)\b",
        r"(?i)\b(gim)(me)\b",
        r"(?i)\b(gon)(na)\b",
        r"(?i)\b(got)(ta)\b",
        r"(?i)\b(lem)(me)\b",
        r"(?i)\b(wan)(na)(?=\s)",
    )
]
_GLUE = {"!", ">", "<"}


def _placeholder(k: int) -> str:
    return f"__strval{k}__"


def tokenize_sql(sql: str) -> list[str]:
    """Split SQL into the evaluator's lower-cased tokens; quoted values stay single tokens.

    Single quotes are read as double quotes (so ``'a'`` and ``"a"`` give the same token
    ``"a"``), and quoted values keep their case.

    Args:
        sql: The SQL text.

    Returns:
        The tokens, e.g. ``['select', 'count', '(', '*', ')', 'from', 'singer']``.

    Raises:
        SQLParseError: When the quotes are unbalanced.
    """
    text = str(sql).replace("'", '"')
    marks = [i for i, ch in enumerate(text) if ch == '"']
    if len(marks) % 2:
        raise SQLParseError(f"unbalanced quotes in SQL: {sql!r}")
    values: dict[str, str] = {}
    pieces: list[str] = []
    last = 0
    for k in range(0, len(marks), 2):
        a, b = marks[k], marks[k + 1]
        key = _placeholder(k // 2)
        values[key] = text[a : b + 1]
        pieces.append(text[last:a])
        pieces.append(key)
        last = b + 1
    pieces.append(text[last:])
    text = "".join(pieces)
    for pattern, repl in _PAD_RULES:
        text = pattern.sub(repl, text)
    text = f" {text} "
    for pattern in _WORD_SPLITS:
        text = pattern.sub(r" \1 \2 ", text)
    tokens = [values.get(t.lower(), t.lower()) for t in text.split()]
    out: list[str] = []
    for tok in tokens:
        if tok == "=" and out and out[-1] in _GLUE:
            out[-1] = out[-1] + "="
        else:
            out.append(tok)
    return out
