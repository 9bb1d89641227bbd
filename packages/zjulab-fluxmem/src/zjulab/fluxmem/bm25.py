"""An incremental Okapi BM25 index.

``bm25s`` builds a frozen index, which does not suit a memory that changes on every write, so
this index keeps an inverted file that takes single inserts and deletes. Scores follow the
Lucene form used by the FluxMem reference code::

    IDF(t)      = ln((N - df(t) + 0.5) / (df(t) + 0.5) + 1)
    BM25(q, d)  = Σ_t∈q IDF(t) · tf(t,d)·(k1+1) / (tf(t,d) + k1·(1 - b + b·|d|/avgdl))

where ``t`` runs over the query's tokens (repeats count), ``N`` is the number of documents and
``avgdl`` their mean length in tokens. A query token absent from the index contributes 0.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["BM25Index", "tokenize"]

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    r"""Lower-cased word tokens (``\\w+``), as in the reference implementation."""
    return _TOKEN.findall(text.lower())


class BM25Index:
    """Okapi BM25 over a changing set of documents keyed by string id.

    Args:
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._tf: dict[str, Counter[str]] = {}
        self._len: dict[str, int] = {}
        self._postings: dict[str, dict[str, int]] = {}
        self._total_len = 0

    def __len__(self) -> int:
        return len(self._tf)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._tf

    @property
    def avgdl(self) -> float:
        """Mean document length in tokens (0 when empty)."""
        return self._total_len / len(self._tf) if self._tf else 0.0

    def df(self, term: str) -> int:
        """Number of documents containing ``term``."""
        return len(self._postings.get(term, ()))

    def idf(self, term: str) -> float:
        """``ln((N - df + 0.5) / (df + 0.5) + 1)``."""
        n, df = len(self._tf), self.df(term)
        return math.log((n - df + 0.5) / (df + 0.5) + 1.0)

    def add(self, doc_id: str, text: str) -> None:
        """Index ``text`` under ``doc_id`` (replacing an earlier text of that id)."""
        if doc_id in self._tf:
            self.remove(doc_id)
        tokens = tokenize(text)
        tf = Counter(tokens)
        self._tf[doc_id] = tf
        self._len[doc_id] = len(tokens)
        self._total_len += len(tokens)
        for term, count in tf.items():
            self._postings.setdefault(term, {})[doc_id] = count

    def remove(self, doc_id: str) -> None:
        """Drop ``doc_id`` (no-op when absent)."""
        tf = self._tf.pop(doc_id, None)
        if tf is None:
            return
        self._total_len -= self._len.pop(doc_id)
        for term in tf:
            post = self._postings[term]
            del post[doc_id]
            if not post:
                del self._postings[term]

    def _term_score(self, tf: int, dl: int, avgdl: float) -> float:
        denom = tf + self.k1 * (1.0 - self.b + self.b * dl / max(avgdl, 1e-8))
        return tf * (self.k1 + 1.0) / denom

    def score(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """BM25 of ``query`` against each of ``doc_ids`` (0 for unknown ids)."""
        out = np.zeros(len(doc_ids), dtype=np.float64)
        if not self._tf:
            return out
        avgdl = self.avgdl
        q = tokenize(query)
        idf = {t: self.idf(t) for t in set(q) if t in self._postings}
        for i, d in enumerate(doc_ids):
            tf = self._tf.get(d)
            if tf is None:
                continue
            dl = self._len[d]
            out[i] = sum(idf[t] * self._term_score(tf[t], dl, avgdl) for t in q if t in idf and tf[t])
        return out

    def top(
        self,
        query: str,
        n: int,
        *,
        max_df: float = 1.0,
        scan_budget: int | None = None,
        allowed: Iterable[str] | None = None,
    ) -> list[tuple[str, float]]:
        """The ``n`` best documents for ``query`` as ``(doc_id, score)``, best first.

        Args:
            query: Query text.
            n: How many to return.
            max_df: Terms found in more than this share of documents are skipped (they carry
                almost no IDF and would make the scan touch most of the index).
            scan_budget: If given, query terms are visited rarest first and the scan stops
                before the postings read would exceed this many (the rarest terms decide
                BM25 rankings; this bounds the cost on large indexes).
            allowed: If given, only these ids are returned.
        """
        if not self._tf or n <= 0:
            return []
        num_docs = len(self._tf)
        avgdl = self.avgdl
        allow = set(allowed) if allowed is not None else None
        acc: dict[str, float] = {}
        terms = [(t, c) for t, c in Counter(tokenize(query)).items() if t in self._postings]
        terms.sort(key=lambda tc: (len(self._postings[tc[0]]), tc[0]))
        read = 0
        for term, qtf in terms:
            post = self._postings[term]
            if len(post) > max_df * num_docs and num_docs > 2:
                continue
            if scan_budget is not None and read and read + len(post) > scan_budget:
                break
            read += len(post)
            w = self.idf(term) * qtf
            for d, tf in post.items():
                if allow is not None and d not in allow:
                    continue
                acc[d] = acc.get(d, 0.0) + w * self._term_score(tf, self._len[d], avgdl)
        best = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))
        return best[:n]
