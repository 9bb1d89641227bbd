"""BM25 lexical retrieval over skill texts (the bm25s implementation)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from zjulab.common.errors import InputError
from zjulab.skillrouter.errors import InvalidKError
from zjulab.skillrouter.ranking import top_k_row

__all__ = ["BM25Index"]

logger = logging.getLogger(__name__)


class BM25Index:
    """Okapi BM25 over a list of texts, with English stop-words removed.

    Args:
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._retriever: object | None = None
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def build(self, texts: Sequence[str]) -> BM25Index:
        """Index ``texts`` (document ``i`` gets id ``i``)."""
        import bm25s

        docs = list(texts)
        if not docs:
            raise InputError("cannot build a BM25 index over zero texts")
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        tokens = bm25s.tokenize(docs, stopwords="english", show_progress=False)
        retriever.index(tokens, show_progress=False)
        self._retriever = retriever
        self._n = len(docs)
        return self

    def search(
        self, queries: Sequence[str], k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` BM25 scores and ids for each query, best first.

        Only documents sharing a term with the query are results: a row holds fewer than ``k``
        ids when fewer matched, padded with id ``-1`` and score ``0``. Equal scores are ordered
        by document position (:mod:`zjulab.skillrouter.ranking`). ``allowed`` restricts the
        candidates to those positions before the cut.

        Raises:
            InvalidKError: ``k`` is not in ``[1, len(self)]``.
        """
        import bm25s

        if self._retriever is None:
            raise InputError("the BM25 index is empty: call build() first")
        if not 0 < k <= self._n:
            raise InvalidKError(f"k={k} must be in [1, {self._n}]")
        tokens = bm25s.tokenize(list(queries), stopwords="english", show_progress=False, return_ids=False)
        out_s = np.zeros((len(tokens), k), dtype=np.float32)
        out_i = np.full((len(tokens), k), -1, dtype=np.int64)
        for qi, toks in enumerate(tokens):
            known = [t for t in toks if t in self._retriever.vocab_dict]  # type: ignore[attr-defined]
            if not known:
                continue  # no query term occurs in the pool: nothing matched
            row = np.asarray(self._retriever.get_scores(known), dtype=np.float32)  # type: ignore[attr-defined]
            if allowed is not None:
                mask = np.zeros(row.shape[0], dtype=bool)
                mask[np.asarray(allowed, dtype=np.int64)] = True
                row = np.where(mask, row, 0.0).astype(np.float32)
            s, i = top_k_row(row, k, above=0.0)
            out_s[qi, : s.size], out_i[qi, : i.size] = s, i
        return out_s, out_i
