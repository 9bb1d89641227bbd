"""Exact inner-product search over unit-norm embeddings with faiss.

One :class:`VectorIndex` per memory scope. It wraps ``faiss.IndexIDMap2(IndexFlatIP)`` so that
nodes can be removed and their vectors read back by id; string node ids map to the int64 ids
faiss needs. Flat search is exact; at 100K 384-d vectors it stays well under the 20 ms budget
on one CPU core. A GPU faiss build (the ``[gpu]`` extra) speeds the same calls up unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from zjulab.fluxmem.errors import FluxStoreIndexError, MemoryInputError

__all__ = ["VectorIndex"]

logger = logging.getLogger(__name__)


class VectorIndex:
    """Node-id keyed exact cosine search.

    Args:
        dim: Embedding dimension.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._to_int: dict[str, int] = {}
        self._to_str: dict[int, str] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._to_int)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._to_int

    def ids(self) -> list[str]:
        """Node ids in the index, in insertion order."""
        return list(self._to_int)

    def add(self, node_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors (rows of ``vectors``) under ``node_ids``; an existing id is replaced."""
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(node_ids) != len(vecs):
            raise MemoryInputError(f"{len(node_ids)} ids for {len(vecs)} vectors")
        if not len(vecs):
            return
        present = [n for n in node_ids if n in self._to_int]
        if present:
            self.remove(present)
        ints = np.arange(self._next, self._next + len(vecs), dtype=np.int64)
        self._next += len(vecs)
        for n, i in zip(node_ids, ints.tolist()):
            self._to_int[n] = i
            self._to_str[i] = n
        self._index.add_with_ids(vecs, ints)

    def remove(self, node_ids: Sequence[str]) -> None:
        """Remove ids (unknown ids are ignored)."""
        ints = [self._to_int.pop(n) for n in node_ids if n in self._to_int]
        for i in ints:
            del self._to_str[i]
        if ints:
            self._index.remove_ids(np.asarray(ints, dtype=np.int64))

    def vector(self, node_id: str) -> np.ndarray:
        """The stored vector of ``node_id``."""
        return np.asarray(self._index.reconstruct(self._to_int[node_id]), dtype=np.float32)

    def vectors(self, node_ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``node_ids`` as a ``[len, dim]`` array."""
        if not node_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = np.asarray([self._to_int[n] for n in node_ids], dtype=np.int64)
        return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32).reshape(len(keys), self.dim)

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` nearest ids to one query vector, as ``(id, cosine)`` best first."""
        if not self._to_int or k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        scores, ids = self._index.search(q, min(k, len(self._to_int)))
        return [(self._to_str[int(i)], float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]

    def search_many(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each row of ``queries``, in one faiss call (a matrix product)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if not self._to_int or k <= 0 or not len(q):
            return [[] for _ in range(len(q))]
        scores, ids = self._index.search(q, min(k, len(self._to_int)))
        return [
            [(self._to_str[int(i)], float(s)) for s, i in zip(srow, irow) if i >= 0]
            for srow, irow in zip(scores, ids)
        ]

    def to_bytes(self) -> tuple[bytes, dict[str, int]]:
        """Serialise the faiss index and the id map."""
        return faiss.serialize_index(self._index).tobytes(), dict(self._to_int)

    @classmethod
    def from_bytes(cls, dim: int, data: bytes, id_map: dict[str, int]) -> VectorIndex:
        """Inverse of :meth:`to_bytes`.

        Raises:
            FluxStoreIndexError: The index's size or dimension does not match the id map.
        """
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != dim or index.ntotal != len(id_map):
            raise FluxStoreIndexError(
                f"faiss index holds {index.ntotal} vectors of dim {index.d}, "
                f"expected {len(id_map)} of dim {dim}"
            )
        out = cls(dim)
        out._index = index
        out._to_int = dict(id_map)
        out._to_str = {i: n for n, i in id_map.items()}
        out._next = max(id_map.values(), default=-1) + 1
        return out
