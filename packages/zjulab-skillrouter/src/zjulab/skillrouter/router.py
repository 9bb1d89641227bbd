"""The two-stage skill router: first-stage retrieval (dense / BM25 / hybrid), then reranking."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.device import DeviceLike, DtypeLike
from zjulab.common.errors import ConfigError, InputError, SchemaVersionError
from zjulab.common.io import (
    atomic_directory,
    atomic_write_bytes,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)
from zjulab.common.progress import progress
from zjulab.common.protocols import PairScorer, TextEncoder
from zjulab.skillrouter.bm25 import BM25Index
from zjulab.skillrouter.config import RouterConfig
from zjulab.skillrouter.errors import (
    EncoderMismatchError,
    IndexFormatError,
    InvalidKError,
    NotIndexedError,
)
from zjulab.skillrouter.formatting import format_query, format_skill
from zjulab.skillrouter.fusion import reciprocal_rank_fusion
from zjulab.skillrouter.models import (
    DEFAULT_ENCODER_ID,
    DEFAULT_RERANKER_ID,
    QUERY_PROMPT,
    describe_encoder,
    embedded_encoder,
    embedded_reranker,
    load_skill_encoder,
    load_skill_reranker,
)
from zjulab.skillrouter.skill import Skill, skills_from_records, validate_pool
from zjulab.skillrouter.vector_index import VectorIndex

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "RoutedSkill", "SkillRouter"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "zjulab-skillrouter-index"
FORMAT_VERSION = 1
_ENCODE_CHUNK = 2048


@dataclass(frozen=True)
class RoutedSkill:
    """One routed skill.

    Args:
        skill: The skill.
        rank: 1-based position in the final ranking.
        retrieval_score: First-stage score (cosine, BM25 or fused RRF score).
        rerank_score: Second-stage score, ``None`` when the skill was not reranked.
    """

    skill: Skill
    rank: int
    retrieval_score: float
    rerank_score: float | None = None

    @property
    def score(self) -> float:
        """The score the ranking used: the rerank score when there is one."""
        return self.rerank_score if self.rerank_score is not None else self.retrieval_score


class SkillRouter:
    """Route a task to the skills an agent should load, out of a large pool.

    Stage 1 retrieves ``retrieve_k`` candidates with a bi-encoder over faiss (or BM25, or
    their reciprocal-rank fusion) from ``name | description | body`` texts; stage 2 reranks the
    top ``rerank_k`` with a pair scorer that also reads the body.

    Args:
        encoder: A :class:`~zjulab.common.protocols.TextEncoder`, a hub id / path (loaded on
            first use), or ``None`` for the SkillRouter encoder
            (:data:`~zjulab.skillrouter.models.DEFAULT_ENCODER_ID`).
        reranker: A :class:`~zjulab.common.protocols.PairScorer`, a hub id / path (loaded on
            first use), or ``None`` for the SkillRouter reranker
            (:data:`~zjulab.skillrouter.models.DEFAULT_RERANKER_ID`).
        config: Router settings.
        device: Device for models loaded by name.
        dtype: Weight dtype for models loaded by name.

    Example:
        >>> router = SkillRouter.embedded()  # doctest: +SKIP
        >>> router.index(load_skills("skills/"))  # doctest: +SKIP
        >>> [r.skill.name for r in router.route("merge two PDFs", k=3)]  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        reranker: PairScorer | str | os.PathLike[str] | None = None,
        config: RouterConfig | None = None,
        *,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
    ) -> None:
        self.config = config or RouterConfig()
        if not isinstance(self.config, RouterConfig):
            raise ConfigError(f"config must be a RouterConfig, got {type(self.config).__name__}")
        self.device = device
        self.dtype = dtype
        self._encoder_spec = encoder
        self._encoder: TextEncoder | None = (
            None if encoder is None or isinstance(encoder, (str, os.PathLike)) else encoder
        )
        self._reranker_spec = reranker
        self._reranker: PairScorer | None = (
            None if reranker is None or isinstance(reranker, (str, os.PathLike)) else reranker
        )
        self._query_prompt = self.config.query_prompt if self.config.query_prompt is not None else ""
        self._skills: list[Skill] = []
        self._vindex: VectorIndex | None = None
        self._bm25: BM25Index | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def embedded(cls, config: RouterConfig | None = None, *, device: DeviceLike = "auto") -> SkillRouter:
        """A router on the embedded offline models (MiniLM-L6 encoder, SmolLM2-135M yes/no reranker).

        Raises:
            ModelNotAvailableError: The embedded models are not installed.
        """
        cfg = config or RouterConfig()
        enc = embedded_encoder(device=device, show_progress=cfg.show_progress) if cfg.needs_encoder else None
        rr = (
            embedded_reranker(
                device=device, batch_size=cfg.rerank_batch_size, show_progress=cfg.show_progress
            )
            if cfg.rerank
            else None
        )
        return cls(enc, rr, cfg, device=device)

    @property
    def encoder(self) -> TextEncoder:
        """The first-stage encoder, loaded on first access when given by name."""
        if self._encoder is None:
            name = str(self._encoder_spec or DEFAULT_ENCODER_ID)
            enc = load_skill_encoder(
                name, device=self.device, dtype=self.dtype, show_progress=self.config.show_progress
            )
            if self.config.query_prompt is None and getattr(enc, "pooling", "") == "last":
                self._query_prompt = QUERY_PROMPT
            self._encoder = enc
        return self._encoder

    @property
    def reranker(self) -> PairScorer:
        """The second-stage scorer, loaded on first access when given by name."""
        if self._reranker is None:
            name = str(self._reranker_spec or DEFAULT_RERANKER_ID)
            self._reranker = load_skill_reranker(
                name,
                batch_size=self.config.rerank_batch_size,
                device=self.device,
                dtype=self.dtype,
                show_progress=self.config.show_progress,
            )
        return self._reranker

    @property
    def skills(self) -> list[Skill]:
        """The indexed skills, in index order."""
        return list(self._skills)

    def __len__(self) -> int:
        return len(self._skills)

    # ------------------------------------------------------------------ indexing
    def skill_texts(self, skills: Sequence[Skill] | None = None) -> list[str]:
        """The first-stage texts (``name | description | body`` with the index budgets)."""
        c = self.config
        return [
            format_skill(s, fields=c.fields, desc_max=c.index_desc_max, body_max=c.index_body_max)
            for s in (self._skills if skills is None else skills)
        ]

    def encode_skills(self, skills: Sequence[Skill]) -> np.ndarray:
        """Encode skills' first-stage texts in chunks, with a progress bar on large pools."""
        texts = self.skill_texts(skills)
        enc = self.encoder
        chunks = [texts[i : i + _ENCODE_CHUNK] for i in range(0, len(texts), _ENCODE_CHUNK)]
        parts = [
            np.asarray(enc.encode(chunk, batch_size=self.config.encode_batch_size), dtype=np.float32)
            for chunk in progress(
                chunks, desc="Encoding skills", show=self.config.show_progress, unit="chunk"
            )
        ]
        emb = np.concatenate(parts, axis=0)
        if emb.shape != (len(texts), enc.dim):
            raise InputError(f"the encoder returned shape {emb.shape}, expected {(len(texts), enc.dim)}")
        return emb

    def _new_vindex(self, dim: int) -> VectorIndex:
        c = self.config
        return VectorIndex(
            dim,
            c.index_type,
            hnsw_m=c.hnsw_m,
            hnsw_ef_construction=c.hnsw_ef_construction,
            hnsw_ef_search=c.hnsw_ef_search,
            ivf_nlist=c.ivf_nlist,
            ivf_nprobe=c.ivf_nprobe,
            use_gpu=c.faiss_gpu,
        )

    def index(
        self,
        skills: Iterable[Skill | Mapping[str, Any]],
        *,
        embeddings: np.ndarray | None = None,
    ) -> SkillRouter:
        """Index a pool, replacing any previous one.

        Args:
            skills: :class:`~zjulab.skillrouter.skill.Skill` objects or dicts.
            embeddings: Precomputed unit vectors of the skills' first-stage texts
                (``[n, encoder.dim]``); encoded here when omitted.

        Returns:
            ``self``.

        Raises:
            EmptyPoolError: No skills.
            DuplicateSkillError: Two skills share an id.
            InvalidSkillError: A skill has an empty body or a malformed field.
        """
        pool = validate_pool(skills_from_records(skills))
        vindex = bm25 = None
        if self.config.needs_encoder:
            emb = self.encode_skills(pool) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
            if emb.shape != (len(pool), self.encoder.dim):
                raise InputError(
                    f"embeddings have shape {emb.shape}, expected {(len(pool), self.encoder.dim)}"
                )
            vindex = self._new_vindex(emb.shape[1]).build(emb)
        if self.config.retriever in ("bm25", "hybrid"):
            bm25 = BM25Index(self.config.bm25_k1, self.config.bm25_b).build(self.skill_texts(pool))
        self._skills, self._vindex, self._bm25 = pool, vindex, bm25
        logger.info(
            "indexed %d skills (retriever=%s, fields=%s)",
            len(pool),
            self.config.retriever,
            self.config.fields,
        )
        return self

    # ------------------------------------------------------------------ routing
    def _check(self, queries: Sequence[str], k: int) -> None:
        if not self._skills:
            raise NotIndexedError("no skills indexed: call index() or SkillRouter.load() first")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidKError(f"k must be an integer, got {k!r}")
        if not 0 < k <= len(self._skills):
            raise InvalidKError(f"k={k} must be in [1, {len(self._skills)}] (the pool size)")
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise InputError(f"query {i} must be a non-empty string, got {q!r}")

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """First stage only: ``(skill position, score)`` lists, best first, one per query.

        Raises:
            NotIndexedError: Nothing indexed.
            InvalidKError: ``k`` not in ``[1, pool size]``.
        """
        qs = list(queries)
        self._check(qs, k)
        c = self.config
        dense: list[list[tuple[int, float]]] = []
        lexical: list[list[tuple[int, float]]] = []
        if c.needs_encoder:
            assert self._vindex is not None
            qtexts = [format_query(q, prompt=self._query_prompt, max_chars=c.query_max_chars) for q in qs]
            qv = np.asarray(self.encoder.encode(qtexts, batch_size=c.encode_batch_size), dtype=np.float32)
            scores, ids = self._vindex.search(qv, k)
            dense = [[(int(i), float(s)) for s, i in zip(sr, ir) if i >= 0] for sr, ir in zip(scores, ids)]
        if c.retriever in ("bm25", "hybrid"):
            assert self._bm25 is not None
            scores, ids = self._bm25.search([q[: c.query_max_chars] for q in qs], k)
            lexical = [[(int(i), float(s)) for s, i in zip(sr, ir)] for sr, ir in zip(scores, ids)]
        if c.retriever == "dense":
            return dense
        if c.retriever == "bm25":
            return lexical
        fused = []
        for d, b in zip(dense, lexical):
            ranked = reciprocal_rank_fusion([[i for i, _ in d], [i for i, _ in b]], k=c.rrf_k)
            fused.append([(int(i), float(s)) for i, s in ranked[:k]])
        return fused

    def route_many(
        self, queries: Sequence[str], k: int = 5, *, rerank: bool | None = None
    ) -> list[list[RoutedSkill]]:
        """Route a batch of tasks; one ranking of ``k`` skills per task.

        The first stage retrieves ``max(retrieve_k, k)`` candidates (capped at the pool
        size); the reranker scores the first ``rerank_k`` of them; candidates beyond
        ``rerank_k`` follow in retrieval order.

        Args:
            queries: Task texts.
            k: Skills returned per task.
            rerank: Override ``config.rerank`` for this call.

        Raises:
            NotIndexedError: Nothing indexed.
            InvalidKError: ``k`` not in ``[1, pool size]``.
            InputError: An empty query.
        """
        qs = list(queries)
        self._check(qs, k)
        if not qs:
            return []
        c = self.config
        depth = min(max(c.retrieve_k, k), len(self._skills))
        cands = self.retrieve(qs, depth)
        do_rerank = c.rerank if rerank is None else rerank
        rerank_scores: list[list[float]] = [[] for _ in qs]
        if do_rerank:
            pairs, owners = [], []
            for qi, (q, cand) in enumerate(zip(qs, cands)):
                for pos, _ in cand[: c.rerank_k]:
                    doc = format_skill(
                        self._skills[pos],
                        fields=c.fields,
                        desc_max=c.rerank_desc_max,
                        body_max=c.rerank_body_max,
                    )
                    pairs.append((q[: c.query_max_chars], doc))
                    owners.append(qi)
            flat = np.asarray(self.reranker.score(pairs, batch_size=c.rerank_batch_size), dtype=np.float32)
            for qi, s in zip(owners, flat):
                rerank_scores[qi].append(float(s))
        out = []
        for cand, rs in zip(cands, rerank_scores):
            head = [(pos, ret, r) for (pos, ret), r in zip(cand, rs)]
            head.sort(key=lambda t: -t[2])  # stable: ties keep retrieval order
            tail = [(pos, ret, None) for pos, ret in cand[len(rs) :]]
            ranked = (head + tail)[:k]
            out.append(
                [
                    RoutedSkill(self._skills[pos], rank, ret, r)  # type: ignore[arg-type]
                    for rank, (pos, ret, r) in enumerate(ranked, start=1)
                ]
            )
        return out

    def route(self, query: str, k: int = 5, *, rerank: bool | None = None) -> list[RoutedSkill]:
        """Route one task: the ``k`` skills to load, best first (see :meth:`route_many`)."""
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        return self.route_many([query], k, rerank=rerank)[0]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index, the skill store and the configuration to a directory, atomically.

        Layout: ``router.json`` (format name and version, config, encoder id and dim,
        reranker id), ``skills.jsonl``, and ``dense.faiss`` when the first stage is dense.
        BM25 is rebuilt from the skills on load (it is deterministic and fast).

        Raises:
            NotIndexedError: Nothing indexed.
        """
        if not self._skills:
            raise NotIndexedError("nothing to save: call index() first")
        target = Path(path)
        meta: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": asdict(self.config),
            "query_prompt": self._query_prompt,
            "n_skills": len(self._skills),
            "encoder": describe_encoder(self.encoder) if self.config.needs_encoder else None,
            "reranker": self._reranker_id(),
        }
        with atomic_directory(target) as tmp:
            write_jsonl(tmp / "skills.jsonl", (s.to_dict() for s in self._skills))
            if self._vindex is not None:
                atomic_write_bytes(tmp / "dense.faiss", self._vindex.to_bytes())
            write_json(tmp / "router.json", meta)
        logger.info("saved %d skills to %s", len(self._skills), target)
        return target

    def _reranker_id(self) -> str | None:
        if self._reranker is not None:
            return str(getattr(self._reranker, "model_id", type(self._reranker).__name__))
        if self.config.rerank:
            return str(self._reranker_spec or DEFAULT_RERANKER_ID)
        return None

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        encoder: TextEncoder | str | os.PathLike[str] | None = None,
        reranker: PairScorer | str | os.PathLike[str] | None = None,
        *,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
    ) -> SkillRouter:
        """Load a router written by :meth:`save`.

        Args:
            path: The saved directory.
            encoder: The encoder to query with; ``None`` loads the saved encoder id (the
                embedded MiniLM id maps to the embedded model). It must be the encoder the
                index was built with.
            reranker: The reranker; ``None`` loads the saved reranker id lazily.
            device: Device for models loaded by name.
            dtype: Weight dtype for models loaded by name.

        Raises:
            IndexFormatError: Files missing or corrupt.
            SchemaVersionError: Written by a newer format version.
            EncoderMismatchError: ``encoder`` differs from the one the index was built with.
        """
        from zjulab.common.defaults import EMBEDDED_CHAT_ID

        root = Path(path)
        meta_path = root / "router.json"
        if not meta_path.is_file():
            raise IndexFormatError(f"{root} is not a saved skill router: {meta_path.name} is missing")
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{meta_path}: not a {FORMAT_NAME} file")
        version = meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise SchemaVersionError(
                f"{meta_path}: format version {version!r}; this library reads <= {FORMAT_VERSION}"
            )
        try:
            config = RouterConfig(**meta["config"])
        except (KeyError, TypeError) as exc:
            raise IndexFormatError(f"{meta_path}: bad config: {exc}") from None
        saved_enc = meta.get("encoder")
        if config.needs_encoder:
            if not isinstance(saved_enc, dict):
                raise IndexFormatError(f"{meta_path}: no encoder recorded for a dense index")
            encoder = cls._matching_encoder(encoder, saved_enc, device)
        saved_rr = meta.get("reranker")
        if config.rerank and reranker is None and saved_rr == EMBEDDED_CHAT_ID:
            reranker = embedded_reranker(device=device, batch_size=config.rerank_batch_size)
        elif config.rerank and reranker is None:
            reranker = saved_rr
        router = cls(encoder, reranker, config, device=device, dtype=dtype)
        router._query_prompt = str(meta.get("query_prompt", ""))
        skills_path = root / "skills.jsonl"
        if not skills_path.is_file():
            raise IndexFormatError(f"{root}: skills.jsonl is missing")
        pool = validate_pool(skills_from_records(read_jsonl(skills_path)))
        if len(pool) != meta.get("n_skills"):
            raise IndexFormatError(
                f"{skills_path}: {len(pool)} skills, router.json says {meta.get('n_skills')}"
            )
        router._skills = pool
        if config.needs_encoder:
            fpath = root / "dense.faiss"
            if not fpath.is_file():
                raise IndexFormatError(f"{root}: dense.faiss is missing")
            vindex = router._new_vindex(int(saved_enc["dim"])).load_bytes(fpath.read_bytes())  # type: ignore[index]
            if vindex.ntotal != len(pool):
                raise IndexFormatError(f"{fpath}: {vindex.ntotal} vectors for {len(pool)} skills")
            router._vindex = vindex
        if config.retriever in ("bm25", "hybrid"):
            router._bm25 = BM25Index(config.bm25_k1, config.bm25_b).build(router.skill_texts(pool))
        return router

    @staticmethod
    def _matching_encoder(encoder: Any, saved: dict[str, Any], device: DeviceLike) -> Any:
        from zjulab.common.defaults import EMBEDDED_ENCODER_ID

        saved_id, saved_dim = str(saved.get("model_id")), int(saved.get("dim", 0))
        if encoder is None:
            if saved_id == EMBEDDED_ENCODER_ID:
                return embedded_encoder(device=device)
            return saved_id
        if isinstance(encoder, (str, os.PathLike)):
            if str(encoder) != saved_id:
                raise EncoderMismatchError(
                    f"the index was built with encoder {saved_id!r}, not {str(encoder)!r}"
                )
            return encoder
        got = describe_encoder(encoder)
        if got["model_id"] != saved_id or got["dim"] != saved_dim:
            raise EncoderMismatchError(
                f"the index was built with encoder {saved_id!r} (dim {saved_dim}), "
                f"but {got['model_id']!r} (dim {got['dim']}) was given"
            )
        return encoder
