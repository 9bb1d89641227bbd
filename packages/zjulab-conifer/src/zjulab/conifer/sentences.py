r"""Offline word and sentence counting that agrees with IFEval's reference checkers.

IFEval counts words with the regular expression ``\\w+`` and sentences with NLTK's pretrained
English Punkt model. Punkt's parameters are a data download that cannot be fetched offline, so
this module re-implements Punkt's *decision procedure* (Kiss & Strunk, 2006, as NLTK applies it
at tokenisation time) over a small parameter set shipped in code:

* a candidate boundary is ``.``, ``?`` or ``!`` followed by white space or by closing punctuation;
* ``?`` and ``!`` always end a sentence;
* a word ending in ``.`` ends a sentence unless it is a known abbreviation (``Dr.``, ``U.S.``,
  ``Inc.``), a single-letter initial (``J.``), or a number followed by a lower-case word or a
  punctuation mark; an abbreviation or an ellipsis still ends a sentence when the next word is
  a capitalised frequent sentence starter (``The``, ``It``, ``However``...);
* closing quotes and brackets after the boundary stay with the sentence they close;
* line breaks alone never end a sentence (a bullet list without full stops is one sentence).

The abbreviation and sentence-starter lists are those of NLTK's English Punkt model, so the
counts match the reference wherever Punkt's orthographic statistics (a per-word table of how
often a word was seen capitalised) do not decide; the agreement is measured in the tests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = [
    "PUNKT_ABBREVIATIONS",
    "PUNKT_SENTENCE_STARTERS",
    "SentenceSplitter",
    "count_sentences",
    "count_words",
    "split_sentences",
    "word_tokens",
]

logger = logging.getLogger(__name__)

#: Abbreviation types (lower case, final period removed) of NLTK's English Punkt model.
PUNKT_ABBREVIATIONS: frozenset[str] = frozenset(
    [
        "a.a",
        "a.c",
        "a.d",
        "a.g",
        "a.h",
        "a.m",
        "a.m.e",
        "a.s",
        "a.t",
        "adm",
        "ala",
        "ariz",
        "aug",
        "ave",
        "b.f",
        "b.v",
        "bros",
        "c",
        "c.i.t",
        "c.o.m.b",
        "c.v",
        "calif",
        "chg",
        "cie",
        "co",
        "col",
        "colo",
        "conn",
        "corp",
        "cos",
        "ct",
        "d",
        "d.c",
        "d.h",
        "d.w",
        "dec",
        "dr",
        "e",
        "e.f",
        "e.h",
        "e.l",
        "e.m",
        "f",
        "f.g",
        "f.j",
        "feb",
        "fla",
        "fri",
        "ft",
        "g",
        "g.d",
        "g.f",
        "g.k",
        "ga",
        "gen",
        "h",
        "h.c",
        "h.f",
        "h.m",
        "i.m.s",
        "ill",
        "inc",
        "j.b",
        "j.c",
        "j.j",
        "j.k",
        "j.p",
        "j.r",
        "jan",
        "jr",
        "k",
        "kan",
        "ky",
        "l",
        "l.a",
        "l.f",
        "l.p",
        "lt",
        "ltd",
        "m",
        "m.b.a",
        "m.d.c",
        "m.j",
        "maj",
        "messrs",
        "mg",
        "mich",
        "minn",
        "mr",
        "mrs",
        "ms",
        "n",
        "n.c",
        "n.d",
        "n.h",
        "n.j",
        "n.m",
        "n.v",
        "n.y",
        "nev",
        "nov",
        "oct",
        "ok",
        "okla",
        "ore",
        "p",
        "p.a.m",
        "p.m",
        "pa",
        "ph.d",
        "prof",
        "r",
        "r.a",
        "r.h",
        "r.i",
        "r.j",
        "r.k",
        "r.t",
        "rep",
        "reps",
        "s",
        "s.a",
        "s.a.y",
        "s.c",
        "s.g",
        "s.p.a",
        "s.s",
        "sen",
        "sep",
        "sept",
        "sr",
        "st",
        "sw",
        "t",
        "t.j",
        "tenn",
        "tues",
        "u.k",
        "u.n",
        "u.s",
        "u.s.a",
        "u.s.s.r",
        "v",
        "va",
        "vs",
        "vt",
        "w",
        "w.c",
        "w.r",
        "w.va",
        "w.w",
        "wash",
        "wed",
        "wis",
        "yr",
    ]
)

#: Words that Punkt's English model treats as frequent sentence starters.
PUNKT_SENTENCE_STARTERS: frozenset[str] = frozenset(
    [
        "according",
        "although",
        "among",
        "both",
        "but",
        "despite",
        "even",
        "he",
        "however",
        "i",
        "if",
        "in",
        "indeed",
        "instead",
        "it",
        "many",
        "meanwhile",
        "moreover",
        "most",
        "nevertheless",
        "nonetheless",
        "nor",
        "separately",
        "similarly",
        "since",
        "so",
        "some",
        "sales",
        "the",
        "there",
        "these",
        "they",
        "this",
        "though",
        "thus",
        "under",
        "when",
        "while",
        "yet",
    ]
)

_WORD = re.compile(r"\w+")
# Candidate boundary: some word material, an end mark, then closing punctuation or white space
# followed by the next token.
_QUOTES = "\u2018\u2019\u201c\u201d\xab\xbb"  # curly quotes and guillemets close like ASCII quotes
_NON_WORD = r"[)\";}\]*:@'({\[!?" + _QUOTES + "]"
_MULTI = r"(?:-{2,}|\.{2,}|(?:\.\s){2,}\.)"
# One end mark, then either closing punctuation or white space and the next chunk of text.
_CANDIDATE = re.compile(r"[.?!](?=(?P<after>" + _NON_WORD + r"|\s+(?P<next>\S+)))")
_WORD_TOKEN = re.compile(
    _MULTI
    + r"|(?=[^(\"`{\[:;&#*@)}\]\-,])\S+?(?=\s|$|"
    + _NON_WORD
    + "|"
    + _MULTI
    + r"|,(?=$|\s|"
    + _NON_WORD
    + "|"
    + _MULTI
    + r"))|\S"
)
_SENT_PUNCT = frozenset(";:,.!?")
_NUMBER = re.compile(r"^-?[.,]?\d[\d,.-]*\.?$")
_INITIAL = re.compile(r"^[^\W\d]\.$")
_ELLIPSIS = re.compile(r"^\.\.+$")
_REALIGN = re.compile(r"[\"')\]}" + _QUOTES + r"]+?(?:\s+|(?=--)|$)")


def count_words(text: str) -> int:
    r"""Number of ``\\w+`` runs in ``text`` (IFEval's definition of a word)."""
    return len(_WORD.findall(text))


class SentenceSplitter:
    """Punkt-compatible sentence splitter with explicit parameters.

    Args:
        abbreviations: Lower-case abbreviation types without their final period; a word in
            this set followed by ``.`` does not end a sentence.
        sentence_starters: Lower-case words that end an abbreviation's or ellipsis's sentence
            when they follow it capitalised.
    """

    def __init__(
        self,
        abbreviations: Iterable[str] = PUNKT_ABBREVIATIONS,
        sentence_starters: Iterable[str] = PUNKT_SENTENCE_STARTERS,
    ) -> None:
        self.abbreviations = frozenset(a.lower() for a in abbreviations)
        self.sentence_starters = frozenset(s.lower() for s in sentence_starters)

    def _is_abbreviation(self, token: str) -> bool:
        stem = token[:-1].lower()
        return stem in self.abbreviations or stem.split("-")[-1] in self.abbreviations

    def _contains_break(self, context: str) -> bool:
        """Punkt's test: does any token of ``context`` but the last end a sentence?"""
        tokens = _WORD_TOKEN.findall(context)
        breaks: list[bool] = []
        kinds: list[str] = []  # "abbr", "ellipsis" or ""
        for tok in tokens:  # first pass: the token alone
            if tok in (".", "?", "!"):
                breaks.append(True)
                kinds.append("")
            elif _ELLIPSIS.match(tok):
                breaks.append(False)
                kinds.append("ellipsis")
            elif tok.endswith(".") and not tok.endswith(".."):
                abbr = self._is_abbreviation(tok)
                breaks.append(not abbr)
                kinds.append("abbr" if abbr else "")
            else:
                breaks.append(False)
                kinds.append("")
        for i in range(len(tokens) - 1):  # second pass: the token and its successor
            tok, nxt = tokens[i], tokens[i + 1]
            if not tok.endswith("."):
                continue
            initial = bool(_INITIAL.match(tok))
            next_type = nxt.lower()
            if breaks[i + 1] and next_type.endswith("."):
                next_type = next_type[:-1]
            if kinds[i] in ("abbr", "ellipsis") and not initial:
                if nxt[:1].isupper() and next_type in self.sentence_starters:
                    breaks[i] = True
                continue
            # Without Punkt's orthographic table a capitalised word is "unknown".
            if (initial or _NUMBER.match(tok.lower())) and (
                nxt in _SENT_PUNCT or nxt[:1].islower() or (initial and nxt[:1].isupper())
            ):
                breaks[i] = False
        return any(breaks[:-1])

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of the sentences of ``text``."""
        contexts: list[tuple[re.Match[str], str]] = []
        prev_match: re.Match[str] | None = None
        prev_word = (0, 0)
        for m in _CANDIDATE.finditer(text):
            before = text[prev_word[1] : m.start()]
            ws = max((i for i, c in enumerate(before) if c.isspace()), default=0)
            word_start = ws + prev_word[1] + 1 if ws else prev_word[0]
            if prev_match is not None and prev_word[1] <= word_start:
                contexts.append(
                    (
                        prev_match,
                        text[prev_word[0] : prev_word[1]] + prev_match.group() + prev_match.group("after"),
                    )
                )
            prev_match, prev_word = m, (word_start, m.start())
        if prev_match is not None:
            contexts.append(
                (
                    prev_match,
                    text[prev_word[0] : prev_word[1]] + prev_match.group() + prev_match.group("after"),
                )
            )
        slices: list[tuple[int, int]] = []
        last = 0
        for m, context in contexts:
            if self._contains_break(context):
                slices.append((last, m.end()))
                last = m.start("next") if m.group("next") else m.end()
        slices.append((last, len(text.rstrip())))
        # Closing quotes / brackets that open the next slice belong to the previous sentence.
        out: list[tuple[int, int]] = []
        shift = 0
        for k, (start, end) in enumerate(slices):
            start += shift
            shift = 0
            if k + 1 < len(slices):
                nxt_start = slices[k + 1][0]
                match = _REALIGN.match(text, nxt_start)
                if match:
                    end = nxt_start + len(match.group().rstrip())
                    shift = match.end() - nxt_start
            if text[start:end]:
                out.append((start, end))
        return out

    def split(self, text: str) -> list[str]:
        """The sentences of ``text``, stripped."""
        return [text[s:e].strip() for s, e in self.spans(text) if text[s:e].strip()]

    def count(self, text: str) -> int:
        """Number of sentences in ``text``."""
        return len(self.spans(text))


_DEFAULT = SentenceSplitter()


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences with the default Punkt-compatible splitter."""
    return _DEFAULT.split(text)


def count_sentences(text: str) -> int:
    """Number of sentences in ``text`` as IFEval's reference counts them (see module doc)."""
    return _DEFAULT.count(text)


_CONTRACTION = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_TOKEN = re.compile(r"[\w'.-]+|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Treebank-style word tokens.

    Punctuation is split off, contractions (``DON'T`` -> ``DO`` + ``N'T``) are split in two,
    hyphenated words are kept whole. This is the tokenisation IFEval uses to count capitalised words.
    """
    out: list[str] = []
    for tok in _TOKEN.findall(text):
        tok = tok.strip(".'") if len(tok) > 1 and not _INITIAL.match(tok) else tok
        if not tok:
            continue
        m = _CONTRACTION.match(tok)
        if m:
            out.extend([m.group(1), m.group(2)])
        else:
            out.append(tok)
    return out
