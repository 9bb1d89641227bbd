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

    Postings are kept in dicts (cheap single inserts and deletes) and turned into numpy arrays
    lazily, per term, when a query needs them; a change to a document drops the cached arrays of
    its terms only. Scoring is then vectorised, which keeps a search over 100K documents in the
    low milliseconds.

    Args:
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._tf: dict[str, Counter[str]] = {}
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._dl = np.zeros(16, dtype=np.float64)
        self._postings: dict[str, dict[int, int]] = {}
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
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
        slot = len(self._ids)
        self._ids.append(doc_id)
        if slot >= len(self._dl):
            self._dl = np.concatenate([self._dl, np.zeros(len(self._dl), dtype=np.float64)])
        self._dl[slot] = len(tokens)
        self._slot[doc_id] = slot
        self._tf[doc_id] = tf
        self._total_len += len(tokens)
        for term, count in tf.items():
            self._postings.setdefault(term, {})[slot] = count
            self._arrays.pop(term, None)

    def remove(self, doc_id: str) -> None:
        """Drop ``doc_id`` (no-op when absent)."""
        tf = self._tf.pop(doc_id, None)
        if tf is None:
            return
        slot = self._slot.pop(doc_id)
        self._ids[slot] = None
        self._total_len -= int(self._dl[slot])
        self._dl[slot] = 0.0
        for term in tf:
            post = self._postings[term]
            del post[slot]
            self._arrays.pop(term, None)
            if not post:
                del self._postings[term]

    def _term_arrays(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        arr = self._arrays.get(term)
        if arr is None:
            post = self._postings[term]
            arr = (
                np.fromiter(post.keys(), dtype=np.int64, count=len(post)),
                np.fromiter(post.values(), dtype=np.float64, count=len(post)),
            )
            self._arrays[term] = arr
        return arr

    def _saturate(self, tf: np.ndarray, dl: np.ndarray, avgdl: float) -> np.ndarray:
        return tf * (self.k1 + 1.0) / (tf + self.k1 * (1.0 - self.b + self.b * dl / max(avgdl, 1e-8)))

    def score(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """BM25 of ``query`` against each of ``doc_ids`` (0 for unknown ids)."""
        out = np.zeros(len(doc_ids), dtype=np.float64)
        if not self._tf or not len(doc_ids):
            return out
        avgdl = self.avgdl
        tfs = [self._tf.get(d) for d in doc_ids]
        dl = np.asarray([self._dl[self._slot[d]] if d in self._slot else 0.0 for d in doc_ids])
        for term, qtf in Counter(tokenize(query)).items():
            if term not in self._postings:
                continue
            tf = np.asarray([c.get(term, 0) if c is not None else 0 for c in tfs], dtype=np.float64)
            out += qtf * self.idf(term) * self._saturate(tf, dl, avgdl)
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
        terms = [(t, c) for t, c in Counter(tokenize(query)).items() if t in self._postings]
        terms.sort(key=lambda tc: (len(self._postings[tc[0]]), tc[0]))
        scores = np.zeros(len(self._ids), dtype=np.float64)
        touched: list[np.ndarray] = []
        read = 0
        for term, qtf in terms:
            df = len(self._postings[term])
            if df > max_df * num_docs and num_docs > 2:
                continue
            if scan_budget is not None and read and read + df > scan_budget:
                break
            read += df
            slots, tf = self._term_arrays(term)
            scores[slots] += qtf * self.idf(term) * self._saturate(tf, self._dl[slots], avgdl)
            touched.append(slots)
        if not touched:
            return []
        cand = np.unique(np.concatenate(touched))
        if allowed is not None:
            allow = {self._slot[d] for d in allowed if d in self._slot}
            cand = np.asarray([c for c in cand.tolist() if c in allow], dtype=np.int64)
        if not len(cand):
            return []
        vals = scores[cand]
        if len(cand) > 2 * n:
            keep = np.argpartition(-vals, 2 * n)[: 2 * n]
            cand, vals = cand[keep], vals[keep]
        best = sorted(
            ((str(self._ids[c]), float(v)) for c, v in zip(cand.tolist(), vals.tolist())),
            key=lambda kv: (-kv[1], kv[0]),
        )
        return best[:n]
