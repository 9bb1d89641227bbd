"""Configuration of a :class:`~zjulab.fluxmem.memory.FluxMemory`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from zjulab.fluxmem.errors import FluxMemConfigError

__all__ = ["FluxMemConfig"]


@dataclass
class FluxMemConfig:
    """Settings of the three FluxMem stages and of search.

    The lexical side is SQLite FTS5's ``bm25()`` (k1 = 1.2, b = 0.75, fixed by SQLite), computed
    from the FTS5 index's postings and row sizes.

    Args:
        dense_weight: Weight of the (min-max normalised) cosine similarity in the hybrid score.
        bm25_weight: Weight of the (min-max normalised) BM25 score in the hybrid score.
        llm_weight: Weight of the (min-max normalised) chat-model verification score.
        candidate_k: Dense candidates looked at when a new unit is linked (Stage I).
        max_links: Associative links made per new unit at most (Stage I).
        link_min_cosine: Candidates below this cosine are never linked on write.
        verify_threshold: A chat-model verification score (0-1) below this rejects a link.
        verify_links: Verify Stage I link candidates with the chat model (when one is attached).
        extract_facts: Distil semantic facts from new messages with the chat model on ``add``.
        link_adjacent: Link consecutive messages of one ``add`` call (and run) with ``next`` edges.
        search_candidates: Dense and BM25 candidates gathered per search before graph expansion.
        context_weight: Share of a linked neighbour's score a node receives in search.
        verify_on_search: Also score search candidates with the chat model (slow; off by default).
        expand_top_k: Semantic neighbours linked by one *expand* edit (Stage II).
        prune_threshold: Verification score above which an interfering link is pruned (Stage II).
        max_refinement_rounds: Feedback repair rounds at most (Stage II).
        max_consolidation_rounds: Skill refinement rounds at most (Stage III).
        pems_epsilon: Consolidation stops when ``|ΔPEMS|`` falls below this (Stage III).
        num_clusters: Fixed k for trajectory clustering; ``None`` uses ``max(1, ⌊√(n/2)⌋)``.
        kmeans_iters: Lloyd iterations of the trajectory clustering.
        seed: Seed of the k-means initialisation.
        llm_max_new_tokens: Generation budget of one structured chat-model call.
        llm_max_retries: Re-asks of a chat-model call whose answer does not parse.
        encode_batch_size: Batch size handed to the text encoder.
        bm25_scan_budget: Lexical candidate generation uses the rarest query terms whose
            document frequencies sum to at most this (the rarest always); candidates are then
            scored with every term.
        ivf_min_nodes: With faiss, a store opened with at least this many memories is searched
            with an approximate inverted-file index (``IndexIVFFlat``, about ``4·√n`` lists)
            instead of the exact flat one; None (default) keeps search exact at any size.
        ivf_nprobe: Inverted lists an IVF search visits (recall against speed). When
            ``ivf_min_nodes`` is set, IVF replaces the HNSW index below.
        hnsw_min_nodes: With faiss, a store of at least this many memories is searched with
            an HNSW graph index (``IndexHNSWFlat``) instead of the exact scan: chosen when the
            store is opened and switched to in-process once a growing store reaches the size;
            its graph is kept in ``STORE_DIR/fluxmem.hnsw`` (vectors are read from the
            database). None keeps search exact at any size.
        hnsw_m: Neighbours per node of the HNSW graph (faiss's ``M``).
        hnsw_ef_construction: Candidate list length while inserting into the HNSW graph.
        hnsw_ef_search: Candidate list length of an HNSW search (recall against speed; at least
            the number of results asked for).
        vector_backend: ``"faiss"`` (an in-process index kept consistent with the store) or
            ``"qdrant"`` (a Qdrant collection: local mode under the store directory, or a server).
        qdrant_url: Qdrant server URL; None runs Qdrant's local mode (``QdrantClient(path=...)``).
        qdrant_collection: Name of the Qdrant collection.
    """

    dense_weight: float = 1.0  # the paper's weighting: cosine dominates
    bm25_weight: float = 0.5  # lexical match adds names and rare words cosine blurs
    llm_weight: float = 0.3  # verification breaks ties; weak models must not dominate
    candidate_k: int = 20  # enough to find the handful of true links in a dialogue
    max_links: int = 3  # keeps the graph sparse: degree grows linearly, not quadratically
    link_min_cosine: float = 0.3  # below this MiniLM pairs are mostly unrelated
    verify_threshold: float = 0.5  # the midpoint of the 0-1 verification scale
    verify_links: bool = True  # the paper verifies every new connection
    extract_facts: bool = True  # semantic nodes are the paper's second memory type
    link_adjacent: bool = True  # a reply is usually grounded in the turn before it
    search_candidates: int = 50  # 5x a top-10 request leaves room for graph re-ranking
    context_weight: float = 0.3  # neighbours lift a node without outranking direct matches
    verify_on_search: bool = False  # one chat call per candidate is too slow for a hot path
    expand_top_k: int = 3  # the paper's expansion size
    prune_threshold: float = 0.7  # only clearly interfering links are dropped
    max_refinement_rounds: int = 5  # the paper's T
    max_consolidation_rounds: int = 5  # the paper's round budget
    pems_epsilon: float = 0.01  # the paper's convergence threshold
    num_clusters: int | None = None  # None: the paper's k = max(1, floor(sqrt(n/2)))
    kmeans_iters: int = 50  # Lloyd converges in a few iterations at these sizes
    seed: int = 0  # deterministic clustering
    llm_max_new_tokens: int = 256  # a JSON list of a few facts fits
    llm_max_retries: int = 2  # the common structured-output default
    encode_batch_size: int = 64  # fits MiniLM on CPU without memory spikes

    bm25_scan_budget: int = 500  # bounds the FTS5 postings ranked per search at any size
    ivf_min_nodes: int | None = None  # exact search by default; an IVF index from this size on open
    ivf_nprobe: int = 64  # inverted lists an IVF search visits (90% of the exact top-10 at 100K)
    hnsw_min_nodes: int | None = 20_000  # below this the exact scan costs < 2 ms; above it grows O(n)
    hnsw_m: int = 32  # faiss's recommended range is 16-64; 32 keeps recall high at 384-768 dims
    hnsw_ef_construction: int = 80  # building 100K nodes in ~30 s on one core
    hnsw_ef_search: int = 256  # 96% of the exact dense top-10 at 100K for ~1 ms a search
    vector_backend: str = (
        "faiss"  # in-process (exact, HNSW from hnsw_min_nodes); "qdrant" for a Qdrant collection
    )
    qdrant_url: str | None = None  # None: Qdrant local mode inside the store directory
    qdrant_collection: str = "fluxmem"

    def __post_init__(self) -> None:
        if self.vector_backend not in ("faiss", "qdrant"):
            raise FluxMemConfigError(
                f"vector_backend must be 'faiss' or 'qdrant', got {self.vector_backend!r}"
            )
        for name in ("dense_weight", "bm25_weight", "llm_weight", "context_weight"):
            value = getattr(self, name)
            if value < 0:
                raise FluxMemConfigError(f"{name} must be >= 0, got {value}")
        if self.dense_weight + self.bm25_weight + self.llm_weight <= 0:
            raise FluxMemConfigError("dense_weight + bm25_weight + llm_weight must be > 0")
        for name in (
            "candidate_k",
            "search_candidates",
            "max_refinement_rounds",
            "max_consolidation_rounds",
            "kmeans_iters",
            "llm_max_new_tokens",
            "encode_batch_size",
            "bm25_scan_budget",
        ):
            value = getattr(self, name)
            if value < 1:
                raise FluxMemConfigError(f"{name} must be >= 1, got {value}")
        for name in ("max_links", "expand_top_k", "llm_max_retries"):
            value = getattr(self, name)
            if value < 0:
                raise FluxMemConfigError(f"{name} must be >= 0, got {value}")
        for name in ("link_min_cosine",):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise FluxMemConfigError(f"{name} must be in [-1, 1], got {value}")
        for name in ("verify_threshold", "prune_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FluxMemConfigError(f"{name} must be in [0, 1], got {value}")
        if self.pems_epsilon <= 0:
            raise FluxMemConfigError(f"pems_epsilon must be > 0, got {self.pems_epsilon}")
        if self.ivf_min_nodes is not None and self.ivf_min_nodes < 1:
            raise FluxMemConfigError(f"ivf_min_nodes must be >= 1 or None, got {self.ivf_min_nodes}")
        if self.ivf_nprobe < 1:
            raise FluxMemConfigError(f"ivf_nprobe must be >= 1, got {self.ivf_nprobe}")
        if self.hnsw_min_nodes is not None and self.hnsw_min_nodes < 1:
            raise FluxMemConfigError(f"hnsw_min_nodes must be >= 1 or None, got {self.hnsw_min_nodes}")
        for name in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise FluxMemConfigError(f"{name} must be an int >= 2, got {value!r}")
        if self.num_clusters is not None and self.num_clusters < 1:
            raise FluxMemConfigError(f"num_clusters must be >= 1 or None, got {self.num_clusters}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (stored in a memory directory's manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FluxMemConfig:
        """Build from :meth:`to_dict` output, ignoring unknown keys (newer versions)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
