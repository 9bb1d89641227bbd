"""The two-stage skill router: first-stage retrieval (dense / BM25 / hybrid), then reranking."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.device import DeviceLike, DtypeLike
from zjulab.common.errors import ConfigError, InputError, SchemaVersionError
from zjulab.common.io import (
    atomic_directory,
    atomic_write_bytes,
    directory_lock,
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
    IndexExistsError,
    IndexFormatError,
    IndexIntegrityError,
    InvalidKError,
    NotAnIndexError,
    NotIndexedError,
)
from zjulab.skillrouter.formatting import format_query, format_skill
from zjulab.skillrouter.integrity import encoder_fingerprint, fingerprint_mismatch, order_hash, skill_hash
from zjulab.skillrouter.models import (
    DEFAULT_ENCODER_ID,
    DEFAULT_RERANKER_ID,
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
FORMAT_VERSION = 2
INDEX_MARKER = ".zjulab-skillrouter-index"
"""The file that marks a folder as an index this library wrote (``save`` replaces no other)."""
INDEX_FILES = frozenset({INDEX_MARKER, "router.json", "skills.jsonl", "dense.faiss"})
_ENCODE_CHUNK = 2048


@dataclass(frozen=True)
class RoutedSkill:
    """One routed skill.

    Args:
        skill: The skill.
        rank: 1-based position in the final ranking.
        retrieval_score: First-stage score (cosine, BM25, or the fused RRF score for hybrid).
        rerank_score: Second-stage score (``logit(yes) - logit(no)`` or the cross-encoder
            logit), ``None`` when the skill was not reranked.
        score: The score of the final ranking, non-increasing in ``rank``: the rerank score for
            reranked skills, the retrieval score when nothing was reranked. Skills ranked after
            the reranked head (``k > rerank_k``) were not reranked: they keep retrieval order and
            carry the head's lowest rerank score.
    """

    skill: Skill
    rank: int
    retrieval_score: float
    rerank_score: float | None = None
    score: float = field(default=math.nan)

    def __post_init__(self) -> None:
        if math.isnan(self.score):
            object.__setattr__(
                self, "score", self.rerank_score if self.rerank_score is not None else self.retrieval_score
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: id, name, rank, score, the stage scores and the source path."""
        return {
            "id": self.skill.id,
            "name": self.skill.name,
            "rank": self.rank,
            "score": self.score,
            "retrieval_score": self.retrieval_score,
            "rerank_score": self.rerank_score,
            "path": self.skill.metadata.get("source_path"),
        }


# filter keys read from the skill itself; any other key is looked up in its metadata
_FIELD_FILTERS = frozenset({"id", "name", "category"})


def _matches(skill: Skill, where: Mapping[str, Any]) -> bool:
    for key, want in where.items():
        have = getattr(skill, key) if key in _FIELD_FILTERS else skill.metadata.get(key)
        wants = set(map(str, want)) if isinstance(want, (list, tuple, set, frozenset)) else {str(want)}
        haves = set(map(str, have)) if isinstance(have, (list, tuple, set, frozenset)) else {str(have)}
        if have is None or have == "" or not wants & haves:
            return False
    return True


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
        self._query_prompt = str(self.config.query_prompt)  # the profile's unless set
        self._skills: list[Skill] = []
        self._hashes: list[str] = []
        self._pos: dict[str, int] = {}
        self._vindex: VectorIndex | None = None
        self._bm25: BM25Index | None = None
        self._expected_fp: dict[str, Any] | None = None  # checked when a lazy encoder loads
        # one lock around model calls and index changes: tokenizers and models are shared
        # mutable state (padding side, caches), so concurrent routes serialise there
        self._lock = threading.RLock()
        self.encoded_texts = 0  # skill texts sent to the encoder so far (incremental updates count)

    # ------------------------------------------------------------------ construction
    @classmethod
    def embedded(cls, config: RouterConfig | None = None, *, device: DeviceLike = "auto") -> SkillRouter:
        """A router on the embedded offline models: MiniLM-L6 dense retrieval, no reranker by default.

        Without a ``config`` the second stage is off: the embedded zero-shot SmolLM2-135M
        yes/no reranker makes routing worse than dense retrieval alone (on the held-out demo
        tasks, BENCHMARKS.md), so the default does not use it. Pass
        ``RouterConfig(rerank=True)`` to run it anyway (e.g. to exercise the pipeline).

        Raises:
            MissingDependencyError: torch is not installed (``zjulab-skillrouter[embedded]``).
            ModelNotAvailableError: The embedded models are not installed.
        """
        if config is None:
            cfg = RouterConfig(profile="embedded", rerank=False)
            logger.info(
                "embedded router: reranking is off by default because the zero-shot SmolLM2-135M "
                "reranker ranks worse than MiniLM dense retrieval alone; pass RouterConfig(rerank=True) to use it"
            )
        elif config.profile != "embedded":
            # budgets, token limits and the query prompt come from the embedded profile
            derived = {
                "profile",
                "index_desc_max",
                "index_body_max",
                "rerank_desc_max",
                "rerank_body_max",
                "query_max_chars",
                "query_prompt",
                "encoder_max_length",
                "reranker_max_length",
            }
            kept = {k: v for k, v in asdict(config).items() if k not in derived}
            cfg = RouterConfig(profile="embedded", **kept)
        else:
            cfg = config
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
                name,
                profile=self.config.profile,
                max_length=self.config.encoder_max_length,
                device=self.device,
                dtype=self.dtype,
                show_progress=self.config.show_progress,
            )
            self._encoder = enc
            if self._expected_fp is not None:
                self._check_fingerprint(self._expected_fp, str(self._encoder_spec))
        return self._encoder

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(
                self.encoder.encode(list(texts), batch_size=self.config.encode_batch_size), dtype=np.float32
            )

    def _check_fingerprint(self, saved: dict[str, Any], where: str) -> None:
        current = encoder_fingerprint(self.encoder, self._encode)
        why = fingerprint_mismatch(saved, current)
        if why:
            raise EncoderMismatchError(
                f"{where}: the encoder is not the one the index was built with ({why}); "
                "rebuild the index or pass the original encoder"
            )

    @property
    def reranker(self) -> PairScorer:
        """The second-stage scorer, loaded on first access when given by name."""
        if self._reranker is None:
            name = str(self._reranker_spec or DEFAULT_RERANKER_ID)
            self._reranker = load_skill_reranker(
                name,
                profile=self.config.profile,
                max_length=self.config.reranker_max_length,
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
        self.encoded_texts += len(texts)
        chunks = [texts[i : i + _ENCODE_CHUNK] for i in range(0, len(texts), _ENCODE_CHUNK)]
        parts = [
            self._encode(chunk)
            for chunk in progress(
                chunks, desc="Encoding skills", show=self.config.show_progress, unit="chunk"
            )
        ]
        emb = np.concatenate(parts, axis=0) if parts else np.zeros((0, enc.dim), dtype=np.float32)
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
            InvalidSkillError: A skill has a malformed field.
        """
        pool = validate_pool(skills_from_records(skills))
        emb = None
        if self.config.needs_encoder:
            emb = self.encode_skills(pool) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
            if emb.shape != (len(pool), self.encoder.dim):
                raise InputError(
                    f"embeddings have shape {emb.shape}, expected {(len(pool), self.encoder.dim)}"
                )
        self._install(pool, emb)
        logger.info(
            "indexed %d skills (retriever=%s, fields=%s)",
            len(pool),
            self.config.retriever,
            self.config.fields,
        )
        return self

    def _install(self, pool: list[Skill], emb: np.ndarray | None) -> None:
        vindex = bm25 = None
        if emb is not None:
            vindex = self._new_vindex(emb.shape[1]).build(emb)
        if self.config.retriever in ("bm25", "hybrid"):
            bm25 = BM25Index(self.config.bm25_k1, self.config.bm25_b).build(self.skill_texts(pool))
        with self._lock:
            self._skills, self._vindex, self._bm25 = pool, vindex, bm25
            self._hashes = [skill_hash(s) for s in pool]
            self._pos = {s.id: i for i, s in enumerate(pool)}

    # ------------------------------------------------------------------ incremental updates
    def upsert(self, skills: Iterable[Skill | Mapping[str, Any]]) -> dict[str, int]:
        """Add new skills and replace changed ones; unchanged skills are not re-encoded.

        A skill is "changed" when its content hash (every field) differs from the indexed
        one with the same id. Changed skills keep their pool position; new ones are appended.
        The result equals a full :meth:`index` of the updated pool.

        Returns:
            ``{"added": n, "updated": n, "unchanged": n}``.
        """
        incoming = validate_pool(skills_from_records(skills))
        if not self._skills:
            self.index(incoming)
            return {"added": len(incoming), "updated": 0, "unchanged": 0}
        with self._lock:
            pool = list(self._skills)
            pos = dict(self._pos)
            changed: list[int] = []
            unchanged = 0
            for s in incoming:
                i = pos.get(s.id)
                if i is None:
                    pos[s.id] = len(pool)
                    pool.append(s)
                    changed.append(pos[s.id])
                elif skill_hash(s) != self._hashes[i]:
                    pool[i] = s
                    changed.append(i)
                else:
                    unchanged += 1
            n_added = len(pool) - len(self._skills)
            if changed:
                emb = None
                if self._vindex is not None:
                    old = self._vindex.reconstruct_all()
                    emb = np.zeros((len(pool), old.shape[1]), dtype=np.float32)
                    emb[: old.shape[0]] = old
                    emb[changed] = self.encode_skills([pool[i] for i in changed])
                self._install(pool, emb)
        logger.info("upsert: %d added, %d updated, %d unchanged", n_added, len(changed) - n_added, unchanged)
        return {"added": n_added, "updated": len(changed) - n_added, "unchanged": unchanged}

    def remove(self, ids: Iterable[str]) -> int:
        """Remove skills by id (unknown ids are an error); nothing is re-encoded.

        Returns:
            How many were removed.

        Raises:
            NotFoundError: An id is not indexed.
            EmptyPoolError: Removing would leave the pool empty.
        """
        from zjulab.common.errors import NotFoundError
        from zjulab.skillrouter.errors import EmptyPoolError

        drop = set(ids)
        with self._lock:
            missing = sorted(drop - set(self._pos))
            if missing:
                raise NotFoundError(f"not indexed: {missing[:5]}")
            keep = [i for i, s in enumerate(self._skills) if s.id not in drop]
            if not keep:
                raise EmptyPoolError("removing these skills would leave the pool empty")
            emb = self._vindex.reconstruct_all()[keep] if self._vindex is not None else None
            self._install([self._skills[i] for i in keep], emb)
        return len(drop)

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

    def _allowed(self, where: Mapping[str, Any] | None) -> np.ndarray | None:
        if not where:
            return None
        if not isinstance(where, Mapping):
            raise InputError(f"where must be a mapping of field -> value(s), got {type(where).__name__}")
        return np.asarray([i for i, s in enumerate(self._skills) if _matches(s, where)], dtype=np.int64)

    def retrieve(
        self, queries: Sequence[str], k: int, *, where: Mapping[str, Any] | None = None
    ) -> list[list[tuple[int, float]]]:
        """First stage only: ``(skill position, score)`` lists, best first, one per query.

        Dense retrieval returns ``k`` skills; BM25 returns only skills that share a term with
        the query (possibly none); hybrid fuses the two by reciprocal rank over what each
        found, so a retriever that found nothing adds nothing. Equal scores are ordered by pool
        position (:mod:`zjulab.skillrouter.ranking`). ``where`` keeps only matching skills
        before the top-``k`` cut.

        Raises:
            NotIndexedError: Nothing indexed.
            InvalidKError: ``k`` not in ``[1, pool size]``.
        """
        qs = list(queries)
        self._check(qs, k)
        c = self.config
        allowed = self._allowed(where)
        if allowed is not None and allowed.size == 0:
            return [[] for _ in qs]
        kk = k if allowed is None else min(k, int(allowed.size))
        with self._lock:
            vindex, bm25 = self._vindex, self._bm25
        dense: list[list[tuple[int, float]]] = []
        lexical: list[list[tuple[int, float]]] = []
        if c.needs_encoder:
            assert vindex is not None
            qtexts = [format_query(q, prompt=self._query_prompt, max_chars=c.query_max_chars) for q in qs]
            qv = self._encode(qtexts)
            scores, ids = vindex.search(qv, kk, allowed=allowed)
            dense = [[(int(i), float(s)) for s, i in zip(sr, ir) if i >= 0] for sr, ir in zip(scores, ids)]
        if c.retriever in ("bm25", "hybrid"):
            assert bm25 is not None
            scores, ids = bm25.search([q[: c.query_max_chars] for q in qs], kk, allowed=allowed)
            lexical = [[(int(i), float(s)) for s, i in zip(sr, ir) if i >= 0] for sr, ir in zip(scores, ids)]
        if c.retriever == "dense":
            return dense
        if c.retriever == "bm25":
            return lexical
        fused = []
        for d, b in zip(dense, lexical):
            acc: dict[int, float] = {}
            for ranking in (d, b):
                for rank, (pos, _) in enumerate(ranking, start=1):
                    acc[pos] = acc.get(pos, 0.0) + 1.0 / (c.rrf_k + rank)
            ranked = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))  # the tie rule
            fused.append([(int(i), float(s)) for i, s in ranked[:kk]])
        return fused

    def route_many(
        self,
        queries: Sequence[str],
        k: int = 5,
        *,
        rerank: bool | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[list[RoutedSkill]]:
        """Route a batch of tasks; one ranking of up to ``k`` skills per task.

        The first stage retrieves ``max(retrieve_k, k)`` candidates (capped at the pool
        size); the reranker scores the first ``rerank_k`` of them and they are sorted by that
        score (ties keep retrieval order); candidates beyond ``rerank_k`` follow in retrieval
        order. Fewer than ``k`` come back only when fewer skills match (BM25 with no shared
        term, or a ``where`` filter matching fewer than ``k``).

        Args:
            queries: Task texts.
            k: Skills returned per task.
            rerank: Override ``config.rerank`` for this call.
            where: Metadata filter, applied before the top-``k`` cut: ``{"category": "pdf"}``,
                ``{"tags": ["ocr", "scan"]}`` (a skill matches when the field equals the value,
                or a list field contains it; a list of values means any of them). ``id``,
                ``name`` and ``category`` read the skill's fields, other keys its metadata.

        Raises:
            NotIndexedError: Nothing indexed.
            InvalidKError: ``k`` not in ``[1, pool size]``.
            InputError: An empty query.
        """
        with self._lock:  # one consistent pool for the whole call, even during an upsert
            return self._route_many(list(queries), k, rerank, where)

    def _route_many(
        self, qs: list[str], k: int, rerank: bool | None, where: Mapping[str, Any] | None
    ) -> list[list[RoutedSkill]]:
        self._check(qs, k)
        if not qs:
            return []
        c = self.config
        depth = min(max(c.retrieve_k, k), len(self._skills))
        cands = self.retrieve(qs, depth, where=where)
        skills = self._skills
        do_rerank = c.rerank if rerank is None else rerank
        rerank_scores: list[list[float]] = [[] for _ in qs]
        if do_rerank:
            pairs, owners = [], []
            for qi, (q, cand) in enumerate(zip(qs, cands)):
                for pos, _ in cand[: c.rerank_k]:
                    doc = format_skill(
                        skills[pos],
                        fields=c.fields,
                        desc_max=c.rerank_desc_max,
                        body_max=c.rerank_body_max,
                    )
                    pairs.append((q[: c.query_max_chars], doc))
                    owners.append(qi)
            if pairs:
                with self._lock:
                    flat = np.asarray(
                        self.reranker.score(pairs, batch_size=c.rerank_batch_size), dtype=np.float32
                    )
                for qi, sc in zip(owners, flat):
                    rerank_scores[qi].append(float(sc))
        out = []
        for cand, rs in zip(cands, rerank_scores):
            head = [(pos, ret, r) for (pos, ret), r in zip(cand, rs)]
            head.sort(key=lambda t: -t[2])  # stable: ties keep retrieval order
            tail = [(pos, ret, None) for pos, ret in cand[len(rs) :]]
            floor = head[-1][2] if head else None
            routed = []
            for rank, (pos, ret, r) in enumerate((head + tail)[:k], start=1):
                final = r if r is not None else (floor if floor is not None else ret)
                routed.append(RoutedSkill(skills[pos], rank, ret, r, final))
            out.append(routed)
        return out

    def route(
        self,
        query: str,
        k: int = 5,
        *,
        rerank: bool | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[RoutedSkill]:
        """Route one task: the ``k`` skills to load, best first (see :meth:`route_many`)."""
        if not isinstance(query, str):
            raise InputError(f"query must be a string, got {type(query).__name__}")
        return self.route_many([query], k, rerank=rerank, where=where)[0]

    # ------------------------------------------------------------------ persistence
    @staticmethod
    def _check_target(target: Path, overwrite: bool) -> None:
        from zjulab.skillrouter.outputs import _refuse_foreign_leftover

        if target.exists() and not target.is_dir():
            raise NotAnIndexError(f"{target} exists and is not a folder; refusing to replace it")
        _refuse_foreign_leftover(target, INDEX_MARKER, INDEX_FILES)
        if not target.is_dir():
            return
        entries = sorted(p.name for p in target.iterdir())
        if not entries:
            return
        if INDEX_MARKER not in entries:
            raise NotAnIndexError(
                f"{target} is a non-empty folder that holds no skill-router index "
                f"({len(entries)} entries, no {INDEX_MARKER}); refusing to replace it. "
                "Choose a new or empty folder for --out."
            )
        foreign = [e for e in entries if e not in INDEX_FILES]
        if foreign:
            raise NotAnIndexError(
                f"{target} holds an index and other files ({', '.join(foreign[:5])}); "
                "refusing to replace it: move them out first"
            )
        if not overwrite:
            raise IndexExistsError(f"{target} already holds an index; pass overwrite=True (--overwrite)")

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the index, the skill store and the configuration to a folder, atomically.

        Layout: ``.zjulab-skillrouter-index`` (the marker), ``router.json`` (format name and
        version, config, encoder id, dim and fingerprint, reranker id, the skills' content
        hashes and their order hash), ``skills.jsonl``, and ``dense.faiss`` when the first
        stage is dense. BM25 is rebuilt from the skills on load.

        The folder is built beside ``path`` and swapped in (:func:`zjulab.common.io.atomic_directory`):
        a kill at any point leaves the previous index whole, and temporaries a killed save left
        behind are removed by the next save.

        Args:
            path: A new or empty folder, or (with ``overwrite``) a folder holding an index
                written by this library and nothing else.
            overwrite: Replace an existing index.

        Raises:
            NotIndexedError: Nothing indexed.
            NotAnIndexError: ``path`` holds anything but an index of this library (never replaced).
            IndexExistsError: ``path`` holds an index and ``overwrite`` is false.
        """
        if not self._skills:
            raise NotIndexedError("nothing to save: call index() first")
        target = Path(path)
        self._check_target(target, overwrite)
        with self._lock:
            skills, hashes, vindex = list(self._skills), list(self._hashes), self._vindex
        enc_meta = None
        if self.config.needs_encoder:
            enc_meta = describe_encoder(self.encoder)
            enc_meta["fingerprint"] = encoder_fingerprint(self.encoder, self._encode)
        meta: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "config": asdict(self.config),
            "query_prompt": self._query_prompt,
            "n_skills": len(skills),
            "encoder": enc_meta,
            "reranker": self._reranker_id(),
            "skill_hashes": hashes,
            "order_hash": order_hash(hashes),
        }
        with atomic_directory(target) as tmp:
            self._check_target(target, overwrite)  # re-checked: the folder may have changed meanwhile
            (tmp / INDEX_MARKER).write_text(f"{FORMAT_NAME} {FORMAT_VERSION}\n", encoding="utf-8")
            write_jsonl(tmp / "skills.jsonl", (s.to_dict() for s in skills))
            if vindex is not None:
                atomic_write_bytes(tmp / "dense.faiss", vindex.to_bytes())
            write_json(tmp / "router.json", meta)
        logger.info("saved %d skills to %s", len(skills), target)
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
            path: The saved folder.
            encoder: The encoder to query with; ``None`` loads the saved encoder id (the
                embedded MiniLM id maps to the embedded model). Its fingerprint (weights hash,
                probe embeddings) must match the one recorded at save time.
            reranker: The reranker; ``None`` loads the saved reranker id lazily.
            device: Device for models loaded by name.
            dtype: Weight dtype for models loaded by name.

        Raises:
            IndexFormatError: Files missing or corrupt (the file is named).
            IndexIntegrityError: ``skills.jsonl`` was edited or shuffled since the save.
            SchemaVersionError: Written by a newer format version.
            EncoderMismatchError: The encoder differs from the one the index was built with
                (checked here for a given encoder, on first use for one loaded by name).
        """
        from zjulab.common.defaults import EMBEDDED_CHAT_ID
        from zjulab.common.errors import StoreError
        from zjulab.common.io import recover_directory, remove_stale_temps
        from zjulab.skillrouter.outputs import foreign_leftover

        root = Path(path)
        leftover = foreign_leftover(root, INDEX_MARKER, INDEX_FILES)
        if leftover is not None:  # a user's folder, not a save's parked copy: leave it alone
            logger.warning("%s exists and is not an index this library wrote; not tidying it", leftover)
        try:  # finish a save a kill cut short, and drop its leftovers (not possible read-only)
            if leftover is None:
                recover_directory(root)
            remove_stale_temps(root)
        except OSError as exc:
            logger.warning("%s: could not tidy after an interrupted save (%s)", root, exc)
        meta_path = root / "router.json"
        skills_path = root / "skills.jsonl"
        fpath = root / "dense.faiss"
        if not meta_path.is_file():
            raise IndexFormatError(f"{root} is not a saved skill router: {meta_path.name} is missing")
        with _read_lock(root):  # every file from one save, never a mix across a concurrent swap
            try:
                meta = read_json(meta_path)
            except (StoreError, ValueError, UnicodeDecodeError) as exc:
                raise IndexFormatError(f"{meta_path}: unreadable ({exc})") from None
            if not skills_path.is_file():
                raise IndexFormatError(f"{root}: skills.jsonl is missing")
            try:
                records = read_jsonl(skills_path)
            except (StoreError, ValueError) as exc:
                raise IndexFormatError(f"{skills_path}: unreadable ({exc})") from None
            faiss_bytes = fpath.read_bytes() if fpath.is_file() else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{meta_path}: not a {FORMAT_NAME} file")
        version = meta.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise SchemaVersionError(
                f"{meta_path}: format version {version!r}; this library reads <= {FORMAT_VERSION}"
            )
        try:
            config = RouterConfig(**meta["config"])
        except (KeyError, TypeError, ValueError) as exc:
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
        pool = validate_pool(skills_from_records(records))
        if len(pool) != meta.get("n_skills"):
            raise IndexFormatError(
                f"{skills_path}: {len(pool)} skills, router.json says {meta.get('n_skills')}"
            )
        hashes = [skill_hash(s) for s in pool]
        cls._check_integrity(skills_path, pool, hashes, meta)
        vindex = None
        if config.needs_encoder:
            if faiss_bytes is None:
                raise IndexFormatError(f"{root}: dense.faiss is missing")
            try:
                vindex = router._new_vindex(int(saved_enc["dim"])).load_bytes(faiss_bytes)  # type: ignore[index]
            except IndexFormatError as exc:
                raise IndexFormatError(f"{fpath}: {exc}") from None
            if vindex.ntotal != len(pool):
                raise IndexFormatError(f"{fpath}: {vindex.ntotal} vectors for {len(pool)} skills")
        router._skills, router._hashes = pool, hashes
        router._pos = {s.id: i for i, s in enumerate(pool)}
        router._vindex = vindex
        if config.retriever in ("bm25", "hybrid"):
            router._bm25 = BM25Index(config.bm25_k1, config.bm25_b).build(router.skill_texts(pool))
        fp = (saved_enc or {}).get("fingerprint") if config.needs_encoder else None
        if fp:
            if router._encoder is not None:
                router._check_fingerprint(fp, str(meta_path))
            else:
                router._expected_fp = fp  # checked when the encoder is first loaded
        return router

    @staticmethod
    def _check_integrity(path: Path, pool: list[Skill], hashes: list[str], meta: dict[str, Any]) -> None:
        saved = meta.get("skill_hashes")
        if saved is None:
            logger.warning("%s: written before skill hashes were recorded; integrity not checked", path)
            return
        if not isinstance(saved, list) or len(saved) != len(hashes):
            raise IndexFormatError(f"{path.with_name('router.json')}: skill_hashes is malformed")
        if saved == hashes and meta.get("order_hash") == order_hash(hashes):
            return
        if sorted(saved) == sorted(hashes):
            raise IndexIntegrityError(
                f"{path}: the skills are in a different order than when the index was saved; "
                "the vectors would be attributed to the wrong skills. Restore the file or rebuild the index"
            )
        edited = [pool[i].id for i, (a, b) in enumerate(zip(saved, hashes)) if a != b]
        raise IndexIntegrityError(
            f"{path}: {len(edited)} skill(s) changed since the index was saved "
            f"({', '.join(map(repr, edited[:5]))}); rebuild or `index --update` the index"
        )

    @staticmethod
    def _matching_encoder(encoder: Any, saved: dict[str, Any], device: DeviceLike) -> Any:
        from zjulab.common.defaults import EMBEDDED_ENCODER_ID

        saved_id, saved_dim = str(saved.get("model_id")), int(saved.get("dim", 0))
        if encoder is None:
            if saved_id == EMBEDDED_ENCODER_ID:
                return embedded_encoder(device=device)
            return saved_id
        if isinstance(encoder, (str, os.PathLike)):
            given = _resolve_id(encoder)
            if given != saved_id:
                raise EncoderMismatchError(f"the index was built with encoder {saved_id!r}, not {given!r}")
            return given
        got = describe_encoder(encoder)
        if got["model_id"] != saved_id or got["dim"] != saved_dim:
            raise EncoderMismatchError(
                f"the index was built with encoder {saved_id!r} (dim {saved_dim}), "
                f"but {got['model_id']!r} (dim {got['dim']}) was given"
            )
        return encoder


@contextlib.contextmanager
def _read_lock(root: Path) -> Iterator[None]:
    """The index folder's cross-process lock while a load reads it.

    Skipped where it cannot be taken (a read-only location: there no save can swap the folder
    either).
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(directory_lock(root))
        except OSError as exc:
            logger.debug("%s: reading without the folder lock (%s)", root, exc)
        yield


def _resolve_id(name: str | os.PathLike[str]) -> str:
    """A hub id as given; a local path made absolute (so a saved index survives a ``cd``)."""
    p = Path(name)
    return str(p.resolve()) if p.exists() else str(name)
