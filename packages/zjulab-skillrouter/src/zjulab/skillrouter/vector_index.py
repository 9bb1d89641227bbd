"""Inner-product vector indexes on faiss (exact, HNSW, IVF) and a numpy reference search."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Literal

import numpy as np

from zjulab.common.errors import ConfigError, InputError
from zjulab.skillrouter.errors import IndexFormatError, InvalidKError
from zjulab.skillrouter.ranking import order_hits, top_k_row

__all__ = ["VectorIndex", "brute_force_search"]

logger = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivf"]


def _as_matrix(x: np.ndarray, dim: int | None, what: str, check_finite: bool = True) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{what} have dimension {arr.shape[1]}, the index has {dim}")
    if check_finite and not np.isfinite(arr).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return arr


def brute_force_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product search with numpy (the reference and the benchmark baseline).

    Equal scores are ordered by vector position (the tie rule of :mod:`zjulab.skillrouter.ranking`).

    Returns:
        ``(scores, ids)``, each ``[n_queries, k]``, best first.
    """
    v = _as_matrix(vectors, None, "vectors", check_finite=False)  # a pool is checked once, when built
    q = _as_matrix(queries, v.shape[1], "queries")
    if not 0 < k <= v.shape[0]:
        raise InvalidKError(f"k={k} must be in [1, {v.shape[0]}]")
    sims = q @ v.T
    rows = [top_k_row(r, k) for r in sims]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


class VectorIndex:
    """A faiss inner-product index over unit vectors (cosine similarity).

    Args:
        dim: Vector dimension.
        kind: ``"flat"`` (exact), ``"hnsw"`` (graph, approximate) or ``"ivf"`` (inverted
            lists over k-means cells, approximate; trained on the indexed vectors).
        hnsw_m: HNSW degree.
        hnsw_ef_construction: HNSW build beam.
        hnsw_ef_search: HNSW query beam (raised to ``k`` at query time when smaller).
        ivf_nlist: IVF cells (0: ``4·sqrt(n)``, at most ``n // 39``).
        ivf_nprobe: IVF cells visited per query.
        use_gpu: Put flat/IVF indexes on GPU when the faiss build has GPU support.
    """

    def __init__(
        self,
        dim: int,
        kind: IndexType = "flat",
        *,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 128,
        ivf_nlist: int = 0,
        ivf_nprobe: int = 16,
        use_gpu: bool = False,
    ) -> None:
        if dim <= 0:
            raise ConfigError(f"dim must be positive, got {dim}")
        if kind not in ("flat", "hnsw", "ivf"):
            raise ConfigError(f"kind must be 'flat', 'hnsw' or 'ivf', got {kind!r}")
        self.dim = dim
        self.kind = kind
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        self.hnsw_ef_search = hnsw_ef_search
        self.ivf_nlist = ivf_nlist
        self.ivf_nprobe = ivf_nprobe
        self.use_gpu = use_gpu
        self._index: Any = None

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return 0 if self._index is None else int(self._index.ntotal)

    def _new_index(self, n: int) -> Any:
        import faiss

        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            idx: Any = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = self.hnsw_ef_construction
            idx.hnsw.efSearch = self.hnsw_ef_search
            return idx
        nlist = self.ivf_nlist or int(4 * math.sqrt(n))
        nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf: Any = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.nprobe = min(self.ivf_nprobe, nlist)
        self._quantizer = quantizer  # keep the quantizer alive as long as the index
        return ivf

    def _maybe_gpu(self, idx: Any) -> Any:
        if not self.use_gpu:
            return idx
        import faiss

        if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
            logger.warning("faiss has no GPU support here; keeping the %s index on CPU", self.kind)
            return idx
        if self.kind == "hnsw":
            logger.warning("faiss has no GPU HNSW; keeping the index on CPU")
            return idx
        self._gpu_res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_res, 0, idx)

    def build(self, vectors: np.ndarray) -> VectorIndex:
        """Index ``vectors`` (``[n, dim]``, unit rows), replacing any previous content."""
        v = _as_matrix(vectors, self.dim, "vectors")
        if v.shape[0] == 0:
            raise InputError("cannot build an index over zero vectors")
        idx = self._new_index(v.shape[0])
        if self.kind == "ivf":
            idx.train(v)
        idx.add(v)
        self._index = self._maybe_gpu(idx)
        logger.info("built a %s faiss index over %d vectors of dim %d", self.kind, v.shape[0], self.dim)
        return self

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product.

        Returns:
            ``(scores, ids)``, each ``[n_queries, k]``, best first, equal scores by position
            (:mod:`zjulab.skillrouter.ranking`); an approximate index may return ``-1`` ids
            (last) when it finds fewer than ``k`` vectors.

        Args:
            queries: ``[n_queries, dim]``.
            k: Results per query.
            allowed: Only these vector positions are candidates (a metadata filter applied
                before the top-``k`` cut); ``k`` must not exceed their number.

        Raises:
            InvalidKError: ``k`` is not in ``[1, ntotal]``.
        """
        if self._index is None:
            raise InputError("the index is empty: call build() first")
        q = _as_matrix(queries, self.dim, "queries")
        if not 0 < k <= self.ntotal:
            raise InvalidKError(f"k={k} must be in [1, {self.ntotal}]")
        n = self.ntotal
        params = None
        if allowed is not None:
            import faiss

            allowed = np.ascontiguousarray(np.asarray(allowed, dtype=np.int64))
            n = int(allowed.size)
            if not 0 < k <= n:
                raise InvalidKError(f"k={k} must be in [1, {n}] (skills passing the filter)")
            sel = faiss.IDSelectorBatch(allowed)
            if self.kind == "hnsw":
                params = faiss.SearchParametersHNSW(sel=sel)
            elif self.kind == "ivf":
                params = faiss.SearchParametersIVF(sel=sel, nprobe=self._index.nprobe)
            else:
                params = faiss.SearchParameters(sel=sel)
            self._sel = sel  # the selector must outlive the search call
        window = min(n, k + 8)
        while True:
            if self.kind == "hnsw":
                self._index.hnsw.efSearch = max(self.hnsw_ef_search, window)
                if params is not None:
                    params.efSearch = self._index.hnsw.efSearch
            if params is None:
                scores, ids = self._index.search(q, window)
            else:
                try:
                    scores, ids = self._index.search(q, window, params=params)
                except (RuntimeError, TypeError):  # an index without ID-selector support (GPU)
                    return self._filtered_exact(q, k, allowed)  # type: ignore[arg-type]
            # a tie that reaches the window's edge may continue past it: widen until it does not
            straddles = (ids[:, window - 1] >= 0) & (scores[:, k - 1] == scores[:, window - 1])
            if window >= n or not straddles.any():
                break
            window = min(n, 2 * window)
        scores, ids = order_hits(scores, ids)
        return scores[:, :k], ids[:, :k]

    def _filtered_exact(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the ``allowed`` positions only (numpy), ids mapped back."""
        sub = self.reconstruct_all()[allowed]
        s, i = brute_force_search(sub, q, k)
        return s, allowed[i]

    def add(self, vectors: np.ndarray) -> None:
        """Append vectors (positions ``ntotal .. ntotal + len - 1``)."""
        v = _as_matrix(vectors, self.dim, "vectors")
        if self._index is None:
            self.build(v)
            return
        self._index.add(v)

    def reconstruct_all(self) -> np.ndarray:
        """Every stored vector, ``[ntotal, dim]`` (flat and HNSW store them; IVF keeps a direct map)."""
        import faiss

        idx = self._index
        if self.use_gpu and hasattr(faiss, "index_gpu_to_cpu") and self.kind != "hnsw":
            with contextlib.suppress(RuntimeError, AttributeError):
                idx = faiss.index_gpu_to_cpu(idx)
        if self.kind == "ivf":
            idx.make_direct_map()
        return np.asarray(idx.reconstruct_n(0, self.ntotal), dtype=np.float32)

    def to_bytes(self) -> bytes:
        """Serialise the index (moved to CPU first) with faiss."""
        import faiss

        if self._index is None:
            raise InputError("the index is empty: nothing to serialise")
        idx = self._index
        if self.use_gpu and hasattr(faiss, "index_gpu_to_cpu") and self.kind != "hnsw":
            with contextlib.suppress(RuntimeError, AttributeError):  # already a CPU index
                idx = faiss.index_gpu_to_cpu(idx)
        return bytes(faiss.serialize_index(idx).tobytes())

    def load_bytes(self, data: bytes) -> VectorIndex:
        """Replace the content with a serialised index from :meth:`to_bytes`.

        Raises:
            IndexFormatError: The bytes are not a faiss index of this dimension.
        """
        import faiss

        try:
            idx: Any = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8).copy())
        except RuntimeError as exc:
            raise IndexFormatError(f"not a readable faiss index: {exc}") from None
        if int(idx.d) != self.dim:
            raise IndexFormatError(f"the saved faiss index has dim {idx.d}, expected {self.dim}")
        if self.kind == "ivf":
            idx.nprobe = min(self.ivf_nprobe, idx.nlist)
        self._index = self._maybe_gpu(idx)
        return self
