"""FluxMemory: the user-facing memory layer (Mem0-compatible surface).

Every memory lives in one SQLite store (:mod:`zjulab.fluxmem.store`): a file under the store
directory, or a private in-memory database when no path is given. Scope ids follow Mem0: the
``user_id``, ``agent_id`` and ``run_id`` given to a call are *combined filters* (every given id
must match), applied inside the vector and FTS5 queries themselves. Writes run Stage I
(connection formation); :meth:`FluxMemory.feedback` runs Stage II and
:meth:`FluxMemory.consolidate` Stage III.

What a user said is never rewritten by a stage: messages are stored verbatim and stay
addressable by the ids :meth:`FluxMemory.add` returned; stages only add *derived* nodes (facts,
split or merged units, skills) grounded in them by ``ground`` edges. Deleting or updating a
memory erases what was derived from it (facts, reshaped units, skills and their step text, the
trajectories that used it).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.io import place_new_file, temp_dir_beside
from zjulab.common.protocols import ChatModel, TextEncoder
from zjulab.fluxmem.config import FluxMemConfig
from zjulab.fluxmem.errors import (
    FluxStoreEncoderError,
    FluxStoreError,
    MemoryInputError,
    MemoryNotFoundError,
    ScopeError,
)
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode, NodeKind, Stage, new_id, now_iso
from zjulab.fluxmem.qdrant_backend import QDRANT_DIR
from zjulab.fluxmem.reasoner import MemoryReasoner
from zjulab.fluxmem.scoring import hybrid_scores
from zjulab.fluxmem.store import (
    _NODE_COLS,
    DB_NAME,
    FORMAT,
    HNSW_NAME,
    SCOPE_FIELDS,
    SQLiteStore,
    VectorCache,
    _node,
    where_scope,
)
from zjulab.fluxmem.validation import check_text, check_text_tree

__all__ = ["FluxMemory", "scope_filter", "scope_key", "validate_metadata"]

logger = logging.getLogger(__name__)

_CONTEXT_ORDER = {"ground": 0, "distill": 1, "step": 2, "next": 3, "associate": 4}
_NODE_FIELDS = ("kind", "speaker", "timestamp", "user_id", "agent_id", "run_id")


def scope_filter(
    user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
) -> dict[str, str]:
    """The combined scope filter of a call: every id given, none of those not given.

    Raises:
        ScopeError: None of the three is given, or one is not a non-empty string.
    """
    out: dict[str, str] = {}
    for name, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)):
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ScopeError(f"{name} must be a non-empty string, got {value!r}")
        try:
            check_text(value, name)
        except MemoryInputError as exc:
            raise ScopeError(str(exc)) from None
        out[name] = value
    if not out:
        raise ScopeError("one of user_id, agent_id or run_id is required")
    return out


def scope_key(user_id: str | None, agent_id: str | None, run_id: str | None) -> str:
    """A readable name of a combined scope filter, e.g. ``"user:ana|run:r1"``.

    Raises:
        ScopeError: See :func:`scope_filter`.
    """
    f = scope_filter(user_id, agent_id, run_id)
    return "|".join(f"{k.split('_')[0]}:{v}" for k, v in f.items())


def owner_filter(node: MemoryNode) -> dict[str, str]:
    """The partition Stage I links a node within: its user, else its agent, else its run."""
    for name in SCOPE_FIELDS:
        value = getattr(node, name)
        if value is not None:
            return {name: value}
    return {}


def in_scope(node: MemoryNode, scope: Mapping[str, str | None]) -> bool:
    """Whether ``node`` matches every id of a scope filter."""
    return all(getattr(node, k) == v for k, v in scope.items() if v is not None)


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise MemoryInputError(f"{where} nests deeper than 32 levels")
    if isinstance(value, str):
        check_text(value, where)
        return
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MemoryInputError(f"{where} is {value!r}; metadata numbers must be finite")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise MemoryInputError(f"{where} has a non-string key {k!r}; metadata keys must be strings")
            check_text(k, f"{where} key {k!r}")
            _check_json(v, f"{where}[{k!r}]", depth + 1)
        return
    raise MemoryInputError(
        f"{where} is a {type(value).__name__} ({value!r}); metadata values must be JSON "
        "(str, int, float, bool, None, list, dict) — convert it first, e.g. a date with .isoformat()"
    )


def validate_metadata(metadata: Any, where: str = "metadata") -> dict[str, Any]:
    """A plain-JSON copy of ``metadata`` (None → ``{}``).

    Raises:
        MemoryInputError: Not a mapping, a non-string key, or a non-JSON value (named by path).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise MemoryInputError(f"{where} must be a dict, got {type(metadata).__name__}")
    _check_json(metadata, where)
    return json.loads(json.dumps(dict(metadata), allow_nan=False))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MemoryInputError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise MemoryInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_threshold(value: Any) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not math.isfinite(value)
    ):
        raise MemoryInputError(
            f"threshold must be a finite number or None, got {type(value).__name__} {value!r}"
        )
    return float(value)


def _check_filters(filters: Any) -> dict[str, Any]:
    if filters is None:
        return {}
    if not isinstance(filters, Mapping) or not all(isinstance(k, str) for k in filters):
        raise MemoryInputError(f"filters must be a dict with string keys, got {filters!r}")
    out = dict(filters)
    check_text_tree(out, "filters")
    for key, want in out.items():
        if key in ("AND", "OR", "NOT"):
            raise MemoryInputError(
                f"filters: the logical operator {key} is not supported; give field conditions only"
            )
        if isinstance(want, Mapping):
            bad = sorted(set(want) - set(FILTER_OPERATORS))
            if bad or not want:
                raise MemoryInputError(
                    f"filters[{key!r}]: unknown operator(s) {bad or '{}'}; use {', '.join(FILTER_OPERATORS)}"
                )
            for op in ("in", "nin"):
                if op in want and not isinstance(want[op], (list, tuple)):
                    raise MemoryInputError(f"filters[{key!r}][{op!r}] must be a list, got {want[op]!r}")
            for op in ("contains", "icontains"):
                if op in want and not isinstance(want[op], str):
                    raise MemoryInputError(f"filters[{key!r}][{op!r}] must be a string, got {want[op]!r}")
    return out


# Mem0's metadata filter operators (mem0/memory/main.py, Memory.search)
FILTER_OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "contains", "icontains")


def _compare(have: Any, op: str, want: Any) -> bool:
    if op == "eq":
        return bool(have == want)
    if op == "ne":
        return bool(have != want)
    if op == "in":
        return have in want
    if op == "nin":
        return have not in want
    if op in ("contains", "icontains"):
        if not isinstance(have, str):
            return False
        return want.lower() in have.lower() if op == "icontains" else want in have
    try:  # gt, gte, lt, lte: a value of another type never matches
        return bool({"gt": have > want, "gte": have >= want, "lt": have < want, "lte": have <= want}[op])
    except TypeError:
        return False


RESERVED_METADATA = ("derived", "sources")


def _check_reserved(metadata: Mapping[str, Any], where: str) -> None:
    for key in RESERVED_METADATA:
        if key in metadata:
            raise MemoryInputError(
                f"{where} key {key!r} is reserved (the provenance of derived units); use another name"
            )


def _check_id(memory_id: Any, where: str = "memory_id") -> str:
    """A memory id that can be looked up: any other value is not found, bad text is bad input."""
    if not isinstance(memory_id, str):
        raise MemoryNotFoundError(f"memory ids are strings, got {memory_id!r}")
    return check_text(memory_id, where)


def encoder_name(encoder: Any) -> str:
    """The name a store records for an encoder: its ``model_id``, else its class name."""
    return str(getattr(encoder, "model_id", None) or type(encoder).__name__)


@dataclass
class _Message:
    content: str
    speaker: str | None
    timestamp: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


class FluxMemory:
    """A connectivity-evolving memory graph for agents.

    Args:
        encoder: Any :class:`~zjulab.common.protocols.TextEncoder` (unit-norm vectors): a
            served one (``zjulab.common.OpenAIEncoder``), the hashing encoder, or a local model.
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel`, or None to run every stage
            on its non-LLM path (no fact extraction or verification; heuristic repairs).
        config: Stage and search settings (stored in the store; None reads the stored ones).
        path: Store directory (``fluxmem.sqlite3`` inside it); None keeps the memory in a
            private in-memory database.
        reembed: The store was written with another encoder: re-embed every memory with this
            one instead of refusing to open.
        autosave: Accepted for compatibility; every change is committed in its own transaction.

    Raises:
        FluxStoreEncoderError: The store was written with another encoder (name or dimension)
            and ``reembed`` is False.
        FluxStoreVersionError: ``path`` holds a format-1 (JSONL) store: migrate it first.

    Example:
        ```python
        from zjulab.common.testing import HashingEncoder

        mem = FluxMemory(HashingEncoder(64))
        mem.add("I moved to Lisbon in May", user_id="ana")
        hits = mem.search("Where does Ana live?", user_id="ana")["results"]
        assert hits[0]["memory"] == "I moved to Lisbon in May"
        ```
    """

    def __init__(
        self,
        encoder: TextEncoder,
        chat_model: ChatModel | None = None,
        config: FluxMemConfig | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        reembed: bool = False,
        autosave: bool = True,
    ) -> None:
        if not callable(getattr(encoder, "encode", None)) or not hasattr(encoder, "dim"):
            raise MemoryInputError(f"encoder must be a TextEncoder, got {type(encoder).__name__}")
        if chat_model is not None and not callable(getattr(chat_model, "generate", None)):
            raise MemoryInputError(f"chat_model must be a ChatModel, got {type(chat_model).__name__}")
        if config is not None and not isinstance(config, FluxMemConfig):
            raise MemoryInputError(f"config must be a FluxMemConfig, got {type(config).__name__}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise MemoryInputError(f"path must be a path or None, got {type(path).__name__}")
        if not autosave:
            warnings.warn(
                "autosave=False has no effect: every change is committed in its own transaction",
                DeprecationWarning,
                stacklevel=2,
            )
        self.encoder = encoder
        self.chat_model = chat_model
        self.path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self.config = config or FluxMemConfig()  # provisional: the stored one is read below
        dim = int(encoder.dim)
        self.store = SQLiteStore(self.path, dim, vectors=False)  # the cache follows the config
        self.graph = self.store.graph
        stored_name, stored_dim = self.store.get_meta("encoder"), self.store.get_meta("dim")
        name = encoder_name(encoder)
        if stored_name is None:
            with self.store.write():
                self.store.set_meta("encoder", name)
                self.store.set_meta("dim", dim)
        elif stored_name != name or stored_dim != dim:
            if not reembed:
                self.store.close()
                raise FluxStoreEncoderError(
                    f"{self.path}: the store was embedded with {stored_name!r} ({stored_dim}-d), "
                    f"this encoder is {name!r} ({dim}-d); open with reembed=True to re-embed every memory"
                )
            self._reembed(name, dim)
        stored_cfg = self.store.get_meta("config")
        if config is None and stored_cfg is not None:
            config = FluxMemConfig.from_dict(stored_cfg)
        self.config = config or FluxMemConfig()
        if stored_cfg != self.config.to_dict():
            with self.store.write():
                self.store.set_meta("config", self.config.to_dict())
        if self.config.vector_backend == "faiss":
            cfg = self.config
            self.store.vectors = VectorCache(
                dim,
                cfg.ivf_min_nodes,
                cfg.ivf_nprobe,
                hnsw_min=cfg.hnsw_min_nodes,
                hnsw_m=cfg.hnsw_m,
                hnsw_ef_construction=cfg.hnsw_ef_construction,
                hnsw_ef_search=cfg.hnsw_ef_search,
                index_path=None if self.path is None else self.path / HNSW_NAME,
            )
        if self.config.vector_backend == "qdrant":
            from zjulab.fluxmem.qdrant_backend import QdrantVectors

            qv = QdrantVectors.from_config(self.config, dim, self.path)
            qv.bind(self.store.conn)
            self.store.vectors = qv  # type: ignore[assignment]
            with self.store.read():  # replay what the collection has not seen yet
                pass
        self.reasoner = MemoryReasoner(
            chat_model, max_new_tokens=self.config.llm_max_new_tokens, max_retries=self.config.llm_max_retries
        )

    # ------------------------------------------------------------------ persistence

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        encoder: TextEncoder,
        chat_model: ChatModel | None = None,
        config: FluxMemConfig | None = None,
        *,
        reembed: bool = False,
        autosave: bool = True,
    ) -> FluxMemory:
        """Open (or create) the store at ``path``; see the class arguments."""
        return cls(encoder, chat_model, config, path=path, reembed=reembed, autosave=autosave)

    @classmethod
    def from_pretrained(
        cls,
        encoder: str = "sentence-transformers/all-MiniLM-L6-v2",
        chat_model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        config: FluxMemConfig | None = None,
        path: str | Path | None = None,
        max_new_tokens: int = 256,
    ) -> FluxMemory:
        """Build a memory from hub ids (or local directories) of a local encoder and chat model.

        Needs the ``[torch]`` extra. For served models pass ``zjulab.common.OpenAIEncoder`` and
        ``zjulab.common.OpenAIChatModel`` to the constructor instead.

        Raises:
            MissingDependencyError: torch / transformers / sentence-transformers are missing.
            ModelNotAvailableError: A model is neither cached nor downloadable.
        """
        from zjulab.common.deps import require

        for module in ("torch", "transformers", "sentence_transformers"):
            require(module, "pip install 'zjulab-fluxmem[torch]'", feature="FluxMemory.from_pretrained")
        from zjulab.common.chat import TransformersChatModel
        from zjulab.common.encoders import SentenceTransformerEncoder

        enc: Any = SentenceTransformerEncoder(encoder, device=device, dtype=dtype)
        chat: Any = None
        if chat_model is not None:
            chat = TransformersChatModel(
                chat_model, device=device, dtype=dtype, max_new_tokens=max_new_tokens
            )
        return cls(enc, chat, config, path=path)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write a consistent copy of the store to another directory (``VACUUM INTO``).

        Every change is already committed, so without ``path`` this only checkpoints. The copy
        is made in a temporary folder inside the target directory; a new target gets it by a
        link (never replacing a file that appeared meanwhile). A target that already holds a
        FluxMem store gets it through SQLite's backup API, one transaction of the target's own,
        so a kill at any moment leaves the old content or the new one; that store must not be
        open anywhere (a process writing to it would lose what it writes), and it is refused
        while it is.

        Raises:
            MemoryInputError: No path given and none set; an empty path or one with a NUL.
            FluxStoreError: The target is not a folder, holds files that are not a FluxMem
                store, holds a database FluxMem did not create, is open in another handle or
                process, or cannot be written.
        """
        if path is None:
            if self.path is None:
                raise MemoryInputError("save() needs a path: none was given and the memory has none")
            with self._lock:
                self.store.checkpoint()
            return self.path
        if not isinstance(path, (str, os.PathLike)):
            raise MemoryInputError(f"path must be a path, got {type(path).__name__}")
        raw = os.fspath(path)
        if not raw or "\x00" in str(raw):
            raise MemoryInputError(f"save path must be a non-empty path without NUL characters, got {raw!r}")
        target = Path(path)
        check_text(str(target), "save path")
        if self.path is not None and target.resolve() == self.path.resolve():
            return self.save()
        dest = target / DB_NAME
        _check_save_target(target, dest)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FluxStoreError(f"cannot create the save folder {target}: {exc}") from exc
        # VACUUM INTO cannot run inside a transaction: the copy is its own consistent snapshot
        with self._lock, self.store.read(snapshot=False):
            # our own leftovers: the fixed-name file of older versions, and the temporary
            # folders of saves whose process was killed (named with their pid, as zjulab.common
            # names its temporaries; live saves' folders are never touched)
            legacy = target / f".{DB_NAME}.save-tmp"
            if legacy.is_file():
                legacy.unlink()
            try:
                work = temp_dir_beside(dest)
            except OSError as exc:
                raise FluxStoreError(f"cannot write in the save folder {target}: {exc}") from exc
            try:
                tmp = work / DB_NAME
                self.store.conn.execute("VACUUM INTO ?", (str(tmp),))
                # the copy is a store of its own from now on: a graph saved for one of the two
                # must never be taken for the other's once they diverge
                copy_id = uuid.uuid4().hex
                copy = sqlite3.connect(tmp, isolation_level=None)
                try:
                    copy.execute("INSERT OR REPLACE INTO meta VALUES ('store_id', ?)", (json.dumps(copy_id),))
                finally:
                    copy.close()
                _put_store(tmp, dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            # the copy's HNSW graph: ours (the copy keeps every rid and the change log), or
            # none, so that a graph of the store that was replaced is never reused
            save_graph = getattr(self.store.vectors, "save_graph", None)
            saved = save_graph is not None and save_graph(self.store.conn, target / HNSW_NAME, copy_id)
            if not saved and (target / HNSW_NAME).exists():
                (target / HNSW_NAME).unlink()
        return target

    def close(self) -> None:
        """Checkpoint and close the store."""
        with self._lock:
            self.store.close()

    def __enter__(self) -> FluxMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reembed(self, name: str, dim: int) -> None:
        store = self.store
        rows = store.conn.execute("SELECT rid, content FROM nodes ORDER BY rid").fetchall()
        store.conn.execute("BEGIN IMMEDIATE")
        try:
            bs = 256
            for i in range(0, len(rows), bs):
                chunk = rows[i : i + bs]
                vecs = self._encode([c for _, c in chunk])
                for (rid, _), v in zip(chunk, vecs):
                    store.conn.execute("UPDATE nodes SET vec = ? WHERE rid = ?", (v.tobytes(), rid))
                    store.conn.execute("INSERT INTO vec_log (rid, op) VALUES (?, 'del')", (rid,))
                    store.conn.execute("INSERT INTO vec_log (rid, op) VALUES (?, 'add')", (rid,))
            store.set_meta("encoder", name)
            store.set_meta("dim", dim)
            store.conn.execute("COMMIT")
        except BaseException:
            store.conn.execute("ROLLBACK")
            raise
        if store.vectors is not None:
            store.vectors.invalidate()
        logger.info("re-embedded %d memories with %s", len(rows), name)

    # ------------------------------------------------------------------ internals

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        dim = int(self.encoder.dim)
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        vecs = np.asarray(
            self.encoder.encode(list(texts), batch_size=self.config.encode_batch_size), dtype=np.float32
        )
        if vecs.ndim != 2 or vecs.shape != (len(texts), dim):
            raise MemoryInputError(f"encoder returned shape {vecs.shape}, expected ({len(texts)}, {dim})")
        if not np.isfinite(vecs).all():
            raise MemoryInputError("encoder returned non-finite values")
        return vecs

    def _record(
        self,
        memory_id: str,
        event: str,
        stage: Stage,
        *,
        old: str | None = None,
        new: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        self.store.conn.execute(
            "INSERT INTO history (id, memory_id, event, stage, old_memory, new_memory, detail, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (new_id(), memory_id, event, stage, old, new, json.dumps(dict(detail or {})), now_iso()),
        )

    def _insert_nodes(self, nodes: Sequence[MemoryNode], vecs: np.ndarray, stage: Stage) -> None:
        for node, vec in zip(nodes, vecs):
            self.store.insert_node(node, vec, json.dumps(node.metadata, allow_nan=False))
            self._record(node.id, "ADD", stage, new=node.content, detail={"kind": node.kind})

    def _link(self, source: str, target: str, kind: str, weight: float, stage: Stage) -> bool:
        """Add an edge and record it on both endpoints; False if it already existed."""
        if source == target:
            return False
        edge = MemoryEdge(source=source, target=target, kind=kind, weight=float(weight), stage=stage)  # type: ignore[arg-type]
        if not self.graph.add_edge(edge):
            return False
        detail = {"edge": kind, "source": source, "target": target, "weight": round(float(weight), 4)}
        self._record(source, "LINK", stage, detail=detail)
        self._record(target, "LINK", stage, detail=detail)
        return True

    def _unlink(self, source: str, target: str, kind: str, stage: Stage, reason: str = "") -> bool:
        edge = self.graph.remove_edge(source, target, kind)
        if edge is None:
            return False
        detail = {"edge": kind, "source": source, "target": target, "reason": reason}
        self._record(source, "UNLINK", stage, detail=detail)
        self._record(target, "UNLINK", stage, detail=detail)
        return True

    def _new_nodes(
        self,
        kind: NodeKind,
        contents: Sequence[str],
        template: MemoryNode,
        stage: Stage,
        *,
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> list[MemoryNode]:
        """Create nodes in ``template``'s scope, embed and index them (no links)."""
        nodes = [
            MemoryNode(
                id=new_id(),
                kind=kind,
                content=c,
                user_id=template.user_id,
                agent_id=template.agent_id,
                run_id=template.run_id,
                speaker=template.speaker if kind == "episodic" else None,
                timestamp=template.timestamp,
                metadata=dict(metadata[i]) if metadata else {},
            )
            for i, c in enumerate(contents)
        ]
        self._insert_nodes(nodes, self._encode([n.content for n in nodes]), stage)
        return nodes

    def _matches(
        self, node: MemoryNode, scope: Mapping[str, str | None], filters: Mapping[str, Any] | None
    ) -> bool:
        if not in_scope(node, scope):
            return False
        if filters:
            for key, want in filters.items():
                have = getattr(node, key) if key in _NODE_FIELDS else node.metadata.get(key)
                if want == "*":  # Mem0's wildcard: the field is present
                    if have is None:
                        return False
                elif isinstance(want, Mapping):
                    if not all(_compare(have, op, v) for op, v in want.items()):
                        return False
                elif isinstance(want, (list, tuple, set, frozenset)):
                    if have not in want:
                        return False
                elif have != want:
                    return False
        return True

    def _filtered_candidates(
        self,
        query: str,
        qv: np.ndarray,
        scope: Mapping[str, str | None],
        filters: Mapping[str, Any],
        m: int,
    ) -> list[str]:
        """Candidates of a filtered search: the ``m`` best admitted nodes by cosine and by bm25.

        The filters narrow the candidate set before ranking, as Mem0's vector stores apply
        them inside the search; filtering the unfiltered top candidates instead would miss a
        match ranked below them (a search for a rare tag would come back empty). First the
        scope's top ``10 m`` of each list are read and filtered: when each list yields ``m``
        admitted nodes (or was exhausted), those are the best admitted ones. Otherwise the
        scope's nodes are read once (with an SQL pre-filter on plain metadata equalities) and
        matched, and the best admitted ones are found among them.
        """
        k = 10 * m
        dense_top = [nid for nid, _ in self._dense(qv, k, scope)]
        lex_top = [nid for nid, _ in self.store.bm25_top(query, k, scope, self.config.bm25_scan_budget)]
        seen = self.graph.nodes_by_id(dense_top + lex_top)
        dense_ok = [n for n in dense_top if n in seen and self._matches(seen[n], scope, filters)]
        lex_ok = [n for n in lex_top if n in seen and self._matches(seen[n], scope, filters)]
        if (len(dense_ok) >= m or len(dense_top) < k) and (len(lex_ok) >= m or len(lex_top) < k):
            return list(dict.fromkeys(dense_ok[:m] + lex_ok[:m]))
        admitted = self._admitted(scope, filters)
        if len(admitted) <= 2 * m:
            return admitted
        out: dict[str, None] = {}
        dense = np.empty(len(admitted), dtype=np.float32)
        for i in range(0, len(admitted), 4096):
            dense[i : i + 4096] = self.store.vectors.vectors(admitted[i : i + 4096]) @ qv
        for i in np.argsort(-dense, kind="stable")[:m]:
            out[admitted[int(i)]] = None
        if len(admitted) <= _EXACT_LEXICAL_MAX:
            bm = self.store.bm25_scores(query, admitted)
            lexical = [admitted[int(i)] for i in np.argsort(-bm, kind="stable")[:m] if bm[int(i)] > 0]
        else:  # many admitted: the admitted ones among the scope's budgeted FTS5 candidates
            lexical = lex_ok[:m]
        for nid in lexical:
            out[nid] = None
        return list(out)

    def _admitted(self, scope: Mapping[str, str | None], filters: Mapping[str, Any]) -> list[str]:
        """Ids of the scope's nodes the filters admit, in insertion order.

        Plain equalities on metadata keys (a string or an int) become ``json_extract``
        conditions that narrow the rows read; every row read is still matched in Python, so
        the SQL part only ever drops rows the match would drop.
        """
        sql, params = where_scope(scope)
        for key, want in filters.items():
            if key in _NODE_FIELDS or not _SAFE_KEY.fullmatch(key):
                continue
            if (isinstance(want, str) and want != "*") or type(want) is int:
                sql += f""" AND json_extract(metadata, '$."{key}"') = ?"""
                params.append(want)
        cols = _NODE_COLS.replace("content", "''")
        rows = self.store.conn.execute(f"SELECT {cols} FROM nodes WHERE {sql} ORDER BY rid", params)
        return [row[1] for row in rows if self._matches(_node(row), scope, filters)]

    def _dense(self, qv: np.ndarray, k: int, scope: Mapping[str, str | None]) -> list[tuple[str, float]]:
        return self.store.vectors.search_scope(self.store.conn, qv, k, scope)[0]

    def node_dict(
        self,
        node: MemoryNode,
        score: float | None = None,
        *,
        context: bool = False,
        scope: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """The Mem0-style record of ``node`` (``memory`` holds the content)."""
        out: dict[str, Any] = {
            "id": node.id,
            "memory": node.content,
            "kind": node.kind,
            "user_id": node.user_id,
            "agent_id": node.agent_id,
            "run_id": node.run_id,
            "speaker": node.speaker,
            "timestamp": node.timestamp,
            "metadata": dict(node.metadata),
            "created_at": node.created_at,
            "updated_at": node.updated_at,
        }
        if score is not None:
            out["score"] = float(score)
        if context:
            out["context"] = self.context(node.id, scope=scope)
        return out

    def context(
        self, node_id: str, limit: int = 6, *, scope: Mapping[str, str | None] | None = None
    ) -> list[dict[str, Any]]:
        """The connected context of a node inside ``scope`` (all of it when None).

        Provenance links (ground, distill, step) come first, then temporal and associative ones
        by weight.
        """
        neigh = self.graph.neighbors(node_id)
        others = self.graph.nodes_by_id([o for o, _ in neigh])
        items = []
        for other, edge in neigh:
            n = others.get(other)
            if n is None or (scope and not in_scope(n, scope)):
                continue
            items.append((_CONTEXT_ORDER.get(edge.kind, 9), -edge.weight, other, edge))
        items.sort(key=lambda t: (t[0], t[1], t[2]))
        out = []
        for _, _, other, edge in items[:limit]:
            n = others[other]
            rel = edge.kind if edge.source == node_id else f"{edge.kind}_by"
            out.append({"id": n.id, "memory": n.content, "kind": n.kind, "relation": rel})
        return out

    # ------------------------------------------------------------------ Stage I: add

    @staticmethod
    def _normalise_messages(messages: Any, metadata: Mapping[str, Any] | None) -> list[_Message]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        elif isinstance(messages, Mapping):
            messages = [messages]
        if not isinstance(messages, Sequence) or isinstance(messages, (bytes, str)) or not messages:
            raise MemoryInputError(
                f"messages must be a string, a message dict or a non-empty list, got {messages!r}"
            )
        base_meta = validate_metadata(metadata)
        _check_reserved(base_meta, "metadata")
        out = []
        for i, m in enumerate(messages):
            if isinstance(m, str):
                m = {"role": "user", "content": m}
            if not isinstance(m, Mapping):
                raise MemoryInputError(f"message {i} is {type(m).__name__}, not a dict")
            content = m.get("content")
            if not isinstance(content, str) or not content.strip():
                raise MemoryInputError(f"message {i} has no text content: {m!r}")
            check_text(content, f"messages[{i}].content")
            name = m.get("name")
            if name is not None and not isinstance(name, str):
                raise MemoryInputError(f"message {i}: name must be a string, got {name!r}")
            if name is not None:
                check_text(name, f"messages[{i}].name")
            role = m.get("role")
            if role is not None and not isinstance(role, str):
                raise MemoryInputError(f"message {i}: role must be a string, got {role!r}")
            if role is not None:
                check_text(role, f"messages[{i}].role")
            speaker = name if name else role
            text = f"{name}: {content.strip()}" if name else content.strip()
            own = validate_metadata(m.get("metadata"), f"messages[{i}].metadata")
            _check_reserved(own, f"messages[{i}].metadata")
            meta = {**base_meta, **own}
            ts = m.get("timestamp", meta.get("timestamp"))
            if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (str, int, float))):
                raise MemoryInputError(f"message {i}: timestamp must be a string or number, got {ts!r}")
            if isinstance(ts, str):
                check_text(ts, f"messages[{i}].timestamp")
            out.append(_Message(text, speaker, None if ts is None else str(ts), meta))
        return out

    def add(
        self,
        messages: str | Mapping[str, Any] | Sequence[Mapping[str, Any] | str],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        infer: bool = True,
    ) -> dict[str, Any]:
        """Write messages as episodic memories and connect them (Stage I), in one transaction.

        Each message becomes an episodic node (``"name: content"`` when the message has a
        ``name``), stored verbatim with every given scope id. New nodes are linked to the best
        candidates of their owner (the user, else the agent, else the run) by the hybrid score;
        consecutive messages of one thread (same user, agent and run) get ``next`` links. With
        a chat model and ``infer``, facts are distilled into semantic nodes grounded in their
        source messages.

        Args:
            messages: A string, a ``{"role", "content"[, "name", "timestamp", "metadata"]}``
                dict, or a list of them.
            user_id: Owning user.
            agent_id: Owning agent.
            run_id: Owning run / session.
            metadata: Stored on every node written (plain JSON; checked before any change).
            infer: Distil semantic facts with the chat model.

        Returns:
            ``{"results": [{"id", "memory", "kind", "event": "ADD"}...], "relations": [...]}``.

        Raises:
            ScopeError: No user, agent or run id, or one that is not a non-empty string.
            MemoryInputError: Malformed messages or metadata (nothing is written).
        """
        scope = scope_filter(user_id, agent_id, run_id)
        if not isinstance(infer, bool):
            raise MemoryInputError(f"infer must be a bool, got {infer!r}")
        msgs = self._normalise_messages(messages, metadata)
        fact_meta = validate_metadata(metadata)
        vecs = self._encode([m.content for m in msgs])  # before the transaction: no lock held
        facts = []
        if infer and self.config.extract_facts and self.reasoner.enabled:
            facts = self.reasoner.extract_facts([[m.content for m in msgs]])[0] or []
        with self._lock, self.store.write():
            episodes = [
                MemoryNode(
                    id=new_id(),
                    kind="episodic",
                    content=m.content,
                    speaker=m.speaker,
                    timestamp=m.timestamp,
                    metadata=m.metadata,
                    **scope,
                )
                for m in msgs
            ]
            self._insert_nodes(episodes, vecs, "formation")
            relations: list[dict[str, Any]] = []
            if self.config.link_adjacent:
                tail_key = json.dumps([user_id, agent_id, run_id])
                row = self.store.conn.execute(
                    "SELECT node_id FROM tails WHERE key = ?", (tail_key,)
                ).fetchone()
                chain = ([row[0]] if row and row[0] in self.graph else []) + [n.id for n in episodes]
                for a, b in itertools.pairwise(chain):
                    if self._link(a, b, "next", 1.0, "formation"):
                        relations.append({"source": a, "target": b, "kind": "next"})
                self.store.conn.execute(
                    "INSERT OR REPLACE INTO tails VALUES (?, ?)", (tail_key, episodes[-1].id)
                )
            written = list(episodes)
            grounded = [f for f in facts if f.sources and all(0 <= s < len(episodes) for s in f.sources)]
            if grounded:
                fact_nodes = self._new_nodes(
                    "semantic",
                    [f.text for f in grounded],
                    episodes[0],
                    "formation",
                    metadata=[
                        {**fact_meta, "derived": "fact", "sources": [episodes[s].id for s in f.sources]}
                        for f in grounded
                    ],
                )
                for fnode, fact in zip(fact_nodes, grounded):
                    for s in fact.sources:
                        ep = episodes[s].id
                        self._link(fnode.id, ep, "ground", 1.0, "formation")
                        self._link(ep, fnode.id, "distill", 1.0, "formation")
                        relations.append({"source": fnode.id, "target": ep, "kind": "ground"})
                written.extend(fact_nodes)
            relations.extend(self._form_connections(written))
        return {
            "results": [{"id": n.id, "memory": n.content, "kind": n.kind, "event": "ADD"} for n in written],
            "relations": relations,
        }

    def _form_connections(self, nodes: Sequence[MemoryNode]) -> list[dict[str, Any]]:
        """Stage I: link each new node to its best hybrid-scored, verified candidates.

        Candidates are the node's owner's nearest units (see :func:`owner_filter`), ranked by
        :func:`link_scores`; a link's weight is the cosine of its endpoints (clipped to [0, 1]).
        """
        cfg = self.config
        if cfg.max_links == 0 or not nodes:
            return []
        new_ids = {n.id for n in nodes}
        plans: list[tuple[MemoryNode, list[str], np.ndarray, np.ndarray]] = []
        vc = self.store.vectors
        by_owner: dict[str, list[MemoryNode]] = {}
        for n in nodes:
            by_owner.setdefault(json.dumps(owner_filter(n)), []).append(n)
        for okey, group in by_owner.items():
            found = vc.search_scope(
                self.store.conn, vc.vectors([n.id for n in group]), cfg.candidate_k + 1, json.loads(okey)
            )
            for node, raw in zip(group, found):
                hits = [
                    (cid, cos)
                    for cid, cos in raw
                    if cid != node.id and cos >= cfg.link_min_cosine and not self.graph.has_link(node.id, cid)
                ]
                # a pair of batch-mates is judged from one side only (the smaller id)
                hits = [(cid, cos) for cid, cos in hits if cid not in new_ids or cid < node.id]
                if not hits:
                    continue
                ids = [cid for cid, _ in hits]
                dense = np.asarray([cos for _, cos in hits], dtype=np.float64)
                plans.append((node, ids, dense, self.store.bm25_scores(node.content, ids)))
        verified: list[list[float] | None] = [None] * len(plans)
        if self.reasoner.enabled and cfg.verify_links and plans:
            contents = self.graph.nodes_by_id([c for _, ids, _, _ in plans for c in ids])
            verified = self.reasoner.verify_links(
                [(node.content, [contents[c].content for c in ids]) for node, ids, _, _ in plans]
            )
        relations = []
        for (node, ids, dense, bm), ver in zip(plans, verified):
            scores = link_scores(dense, bm, ver, cfg)
            order = np.argsort(-scores, kind="stable")
            made = 0
            for j in order.tolist():
                if made >= cfg.max_links:
                    break
                if ver is not None and ver[j] < cfg.verify_threshold:
                    continue
                if self._link(node.id, ids[j], "associate", float(min(1.0, max(0.0, dense[j]))), "formation"):
                    relations.append({"source": node.id, "target": ids[j], "kind": "associate"})
                    made += 1
        return relations

    # ------------------------------------------------------------------ search

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        top_k: int = 10,
        filters: Mapping[str, Any] | None = None,
        threshold: float | None = None,
        with_context: bool = True,
    ) -> dict[str, Any]:
        """Rank the memories matching every given scope id for ``query``.

        Candidates are the scope's best dense (faiss, restricted to the scope inside the
        search) and FTS5 bm25 matches (the scope is part of the SQL query) plus their graph
        neighbours in the scope; each gets the hybrid score, then adds ``context_weight`` times
        its best linked neighbour's score times the link weight.

        Args:
            query: Query text.
            user_id: Scope filter.
            agent_id: Scope filter.
            run_id: Scope filter.
            top_k: Results returned at most (an int >= 1).
            filters: Conditions on node fields (``kind``, ``speaker``...) or metadata keys: a
                value means equality, a list "any of", ``"*"`` "present", and a dict Mem0's
                operators (``eq``, ``ne``, ``in``, ``nin``, ``gt``, ``gte``, ``lt``, ``lte``,
                ``contains``, ``icontains``); ``AND``/``OR``/``NOT`` are refused.
            threshold: Drop results scoring below this (a number).
            with_context: Attach each result's connected context (inside the scope).

        Returns:
            ``{"results": [record with "score" and "context"...]}``, best first.

        Raises:
            ScopeError: No scope given.
            MemoryInputError: Empty query, a non-int or non-positive ``top_k``, a non-number
                ``threshold``, malformed ``filters``.
        """
        if not isinstance(query, str) or not query.strip():
            raise MemoryInputError(f"query must be a non-empty string, got {query!r}")
        check_text(query, "query")
        top_k = _check_int("top_k", top_k, 1)
        thr = _check_threshold(threshold)
        flt = _check_filters(filters)
        scope = scope_filter(user_id, agent_id, run_id)
        with self._lock, self.store.read():
            ranked = self._rank(query, scope, top_k, flt)
            nodes = self.graph.nodes_by_id([n for n, _ in ranked])
            results = [
                self.node_dict(nodes[nid], score, context=with_context, scope=scope)
                for nid, score in ranked
                if thr is None or score >= thr
            ]
        return {"results": results}

    def _rank(
        self, query: str, scope: Mapping[str, str | None], top_k: int, filters: Mapping[str, Any] | None
    ) -> list[tuple[str, float]]:
        cfg = self.config
        m = max(cfg.search_candidates, top_k)
        qv = self._encode([query])[0]
        stats = self.store.lexical_stats(query)  # one read of the lexical statistics per search
        # ranking reads a candidate's content (scope checked in SQL rows); full nodes for filters
        content: dict[str, str] = {}
        if filters:
            ok = self._filtered_candidates(query, qv, scope, filters, m)
            content = {nid: n.content for nid, n in self.graph.nodes_by_id(ok, light=True).items()}
        else:
            seen: dict[str, None] = {}
            for nid, _ in self._dense(qv, m, scope):
                seen[nid] = None
            for nid, _ in self.store.bm25_top(query, m, scope, cfg.bm25_scan_budget, stats):
                seen[nid] = None
            content = self.graph.scoped_contents(list(seen), scope)
            ok = [n for n in seen if n in content]
        if not ok:
            return []
        cand: dict[str, None] = dict.fromkeys(ok)
        edges = self.graph.edges_touching(ok) if ok else []
        if cfg.context_weight > 0 and edges:
            others = [o for o in (e.target if e.source in cand else e.source for e in edges) if o not in cand]
            if filters:
                for o, n in self.graph.nodes_by_id(others).items():
                    if self._matches(n, scope, filters):
                        cand[o] = None
                        content[o] = n.content
            else:
                for o, text in self.graph.scoped_contents(others, scope).items():
                    cand[o] = None
                    content[o] = text
            edges = self.graph.edges_among(list(cand))
        known = getattr(self.store.vectors, "id_to_rid", None)
        if known is not None:  # rows committed by another process after this search's sync
            ids = [i for i in cand if i in known]
        else:
            ids = list(cand)
        if not ids:
            return []
        dense = self.store.vectors.vectors(ids) @ qv
        bm = self.store.bm25_scores(query, ids, [content[i] for i in ids], stats)
        llm = None
        if cfg.verify_on_search and self.reasoner.enabled:
            ver = self.reasoner.verify_links([(query, [content[i] for i in ids])])[0]
            llm = None if ver is None else np.asarray(ver)
        base = _hybrid(cfg, dense, bm, llm)
        final = propagate(ids, base, edges, cfg.context_weight)
        order = sorted(range(len(ids)), key=lambda i: (-final[i], ids[i]))
        return [(ids[i], float(final[i])) for i in order[:top_k]]

    # ------------------------------------------------------------------ CRUD

    def get(self, memory_id: str) -> dict[str, Any]:
        """The record of one memory, with its context inside the memory's own scope.

        The context lists only linked units matching every scope id the memory carries, so a
        planner's memory never shows a coder agent's or another run's text, though Stage I
        links a user's units across agents and runs.

        Raises:
            MemoryNotFoundError: No such id.
            MemoryInputError: An id UTF-8 cannot encode.
        """
        memory_id = _check_id(memory_id)
        with self._lock, self.store.snapshot():  # the memory and its context from one state
            node = self.graph.node(memory_id)
            own = {f: getattr(node, f) for f in SCOPE_FIELDS if getattr(node, f) is not None}
            return self.node_dict(node, context=True, scope=own or None)

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Every memory matching every given scope id, in insertion order, at most ``limit``.

        Raises:
            ScopeError: No scope given.
            MemoryInputError: A non-int or non-positive ``limit``, malformed ``filters``.
        """
        limit = _check_int("limit", limit, 1)
        flt = _check_filters(filters)
        scope = scope_filter(user_id, agent_id, run_id)
        with self._lock, self.store.snapshot():
            out = []
            for node in self.graph.nodes(scope, None if flt else limit):
                if self._matches(node, scope, flt):
                    out.append(self.node_dict(node))
                    if len(out) >= limit:
                        break
        return {"results": out}

    def update(
        self,
        memory_id: str,
        data: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        """Replace a memory's content, merge new metadata into it, or both (Mem0's ``update``).

        New content is re-embedded and re-indexed (links are kept), and what was derived from
        the old content (facts, reshaped units, skills, trajectories that used it) is erased, so
        no stale copy outranks the new text. ``metadata`` is merged key by key into the stored
        metadata (a key set to None stays, with the value None, as in Mem0); it is checked
        before any change.

        Args:
            memory_id: The memory.
            data: New content (``text`` is the same argument under Mem0's current name).
            metadata: Keys to set in the memory's metadata.
            text: See ``data``.

        Returns:
            ``{"message": "Memory updated successfully!", "id", "memory", "metadata", "event": "UPDATE"}``.

        Raises:
            MemoryNotFoundError: No such id.
            MemoryInputError: Neither content nor metadata given, empty content, text that
                cannot be encoded, or metadata that is not plain JSON or sets a reserved key
                (``derived``, ``sources``: the provenance of derived units).
        """
        memory_id = _check_id(memory_id)
        if text is not None and data is not None and text != data:
            raise MemoryInputError("update got both data and text with different values; pass one")
        data = text if text is not None else data
        if data is None and metadata is None:
            raise MemoryInputError("update needs new content (data/text), metadata, or both")
        content: str | None = None
        if data is not None:
            if not isinstance(data, str) or not data.strip():
                raise MemoryInputError(f"update text must be a non-empty string, got {data!r}")
            content = check_text(data, "text").strip()
        new_meta = validate_metadata(metadata) if metadata is not None else None
        if new_meta:
            _check_reserved(new_meta, "metadata")
        vec = self._encode([content])[0] if content is not None else None
        with self._lock, self.store.write():
            node = self.graph.node(memory_id)
            merged = dict(node.metadata)
            stamp = now_iso()
            if new_meta is not None:
                merged.update(new_meta)
                self.store.set_metadata(memory_id, json.dumps(merged, allow_nan=False))
                self.store.conn.execute("UPDATE nodes SET updated_at = ? WHERE id = ?", (stamp, memory_id))
            if content is not None and content != node.content:
                self.store.set_content(memory_id, content, vec, stamp)  # type: ignore[arg-type]
                self._record(
                    memory_id,
                    "UPDATE",
                    "user",
                    old=node.content,
                    new=content,
                    detail={"metadata": sorted(new_meta)} if new_meta else None,
                )
                derived = self._derived_closure({memory_id}) - {memory_id}
                self._erase(derived, {memory_id}, "user", reason=f"source {memory_id} updated")
                self._drop_trajectories({memory_id})  # their text copies the old content
            else:
                self._record(
                    memory_id,
                    "UPDATE",
                    "user",
                    old=node.content,
                    new=node.content,
                    detail={"metadata": sorted(new_meta or {})},
                )
            final = node.content if content is None else content
        self.store.checkpoint()
        return {
            "message": "Memory updated successfully!",
            "id": memory_id,
            "memory": final,
            "metadata": merged,
            "event": "UPDATE",
        }

    def delete(self, memory_id: str) -> dict[str, Any]:
        """Erase a memory and everything derived from it.

        Cascades to facts and reshaped units grounded in it, to skills (and their step nodes)
        built from trajectories that used it, and to those trajectories; the erased texts are
        also blanked in the history (events stay) and overwritten on disk.

        Raises:
            MemoryNotFoundError: No such id.
            MemoryInputError: An id UTF-8 cannot encode.
        """
        memory_id = _check_id(memory_id)
        with self._lock, self.store.write():
            self.graph.node(memory_id)
            gone = self._derived_closure({memory_id})
            self._erase(gone, {memory_id}, "user", reason="deleted")
        self.store.checkpoint()
        return {"id": memory_id, "event": "DELETE"}

    def delete_all(
        self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> int:
        """Erase every memory matching every given scope id (and what derives from them).

        Returns:
            How many memories matched the scope (derived ones erased with them not counted).
        """
        scope = scope_filter(user_id, agent_id, run_id)
        with self._lock, self.store.write():
            ids = {n.id for n in self.graph.nodes(scope)}
            gone = self._derived_closure(ids)
            self._erase(gone, ids, "user", reason="delete_all")
            sql, params = _traj_where(scope)
            self.store.conn.execute(f"DELETE FROM trajectories WHERE {sql}", params)
        self.store.checkpoint()
        return len(ids)

    def _derived_closure(self, ids: set[str]) -> set[str]:
        """``ids`` plus every node derived from them, transitively (facts, reshapes, skills)."""
        out = set(ids)
        frontier = list(ids)
        conn = self.store.conn
        while frontier:
            nxt: list[str] = []
            for i in range(0, len(frontier), 400):
                chunk = frontier[i : i + 400]
                q = ",".join("?" * len(chunk))
                # derived units point at their sources with `ground`; skills are `distill` targets
                rows = conn.execute(
                    f"SELECT source FROM edges WHERE kind = 'ground' AND target IN ({q}) "
                    f"UNION SELECT target FROM edges WHERE kind IN ('distill', 'step') AND source IN ({q})",
                    chunk + chunk,
                ).fetchall()
                for (nid,) in rows:
                    if nid not in out:
                        node = self.graph.nodes_by_id([nid]).get(nid)
                        if node is not None and (node.kind != "episodic" or node.metadata.get("derived")):
                            out.add(nid)
                            nxt.append(nid)
            frontier = nxt
        return out

    def _erase(self, gone: set[str], requested: set[str], stage: Stage, reason: str) -> None:
        """Delete ``gone`` (inside a write), its trajectories and its text in the history."""
        if not gone:
            return
        conn = self.store.conn
        for nid in sorted(gone):
            for edge in self.store.delete_node(nid):
                other = edge.target if edge.source == nid else edge.source
                if other not in gone:
                    self._record(
                        other,
                        "UNLINK",
                        stage,
                        detail={
                            "edge": edge.kind,
                            "source": edge.source,
                            "target": edge.target,
                            "reason": "erased",
                        },
                    )
        self._drop_trajectories(gone)
        for chunk in _chunks(sorted(gone), 400):
            q = ",".join("?" * len(chunk))
            conn.execute(
                f"UPDATE history SET old_memory = NULL, new_memory = NULL WHERE memory_id IN ({q})", chunk
            )
        for nid in sorted(gone):
            self._record(nid, "DELETE", stage, detail={"reason": reason, "cascade": nid not in requested})
        self.store.scrub()

    def _drop_trajectories(self, gone: set[str]) -> None:
        """Delete the trajectories whose text copies one of ``gone`` (inside a write).

        A trajectory's text copies its evidence, else its first three results: those go (an
        erased or rewritten memory must not come back through a later consolidation); the
        others only forget that one of ``gone`` was retrieved.
        """
        conn = self.store.conn
        rows = conn.execute("SELECT id, evidence, retrieved, skill_id FROM trajectories").fetchall()
        for tid, ev, ret, skill in rows:
            evidence, retrieved = json.loads(ev), json.loads(ret)
            if set(evidence or retrieved[:3]) & gone or (skill is not None and skill in gone):
                conn.execute("DELETE FROM trajectories WHERE id = ?", (tid,))
            elif set(retrieved) & gone:
                kept = [r for r in retrieved if r not in gone]
                conn.execute("UPDATE trajectories SET retrieved = ? WHERE id = ?", (json.dumps(kept), tid))

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        """Every change to a memory, oldest first, each with the stage that made it.

        Events: ``ADD``, ``UPDATE``, ``DELETE``, ``LINK``, ``UNLINK``, ``SPLIT``, ``MERGE``.
        The texts of an erased memory are blanked (``None``).

        Raises:
            MemoryNotFoundError: The id never existed.
        """
        memory_id = _check_id(memory_id)
        with self._lock:
            rows = self.store.conn.execute(
                "SELECT id, memory_id, event, stage, old_memory, new_memory, detail, created_at "
                "FROM history WHERE memory_id = ? ORDER BY seq",
                (memory_id,),
            ).fetchall()
        if not rows:
            raise MemoryNotFoundError(f"no memory with id {memory_id!r}")
        keys = ("id", "memory_id", "event", "stage", "old_memory", "new_memory", "detail", "created_at")
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["detail"] = json.loads(d["detail"])
            out.append(d)
        return out

    def reset(self) -> None:
        """Forget everything (committed at once)."""
        with self._lock, self.store.write():
            # one 'del' per live vector (every node has one): each process's vector view drops
            # exactly what it holds; a 'del' for every 'add' ever logged doubled the log per reset
            self.store.conn.execute("INSERT INTO vec_log (rid, op) SELECT rid, 'del' FROM nodes ORDER BY rid")
            for table in (
                "nodes",
                "edges",
                "history",
                "trajectories",
                "tails",
                "fts",
                "fts_stats",
                "fts_terms",
            ):
                self.store.conn.execute(f"DELETE FROM {table}")
            # a fresh full-text index structure (cheap when empty): the rebuild that every
            # OPTIMIZES_PER_REBUILD erasures get would otherwise never come, as the count restarts
            self.store.conn.execute("INSERT INTO fts (fts) VALUES ('rebuild')")
            self.store.vectors.invalidate()
            self.store.scrub()
        self.store.checkpoint()

    def trajectories(self, **scope: str | None) -> list[dict[str, Any]]:
        """Recorded feedback trajectories matching a scope filter (all when none is given).

        Raises:
            ScopeError: A key other than the three scope ids, or an id that is not a string.
        """
        unknown = sorted(set(scope) - set(SCOPE_FIELDS))
        if unknown:
            raise ScopeError(f"trajectories() takes user_id, agent_id and run_id, got {unknown}")
        given = {k: v for k, v in scope.items() if v is not None}
        if given:
            scope_filter(**given)
        sql, params = _traj_where(scope)
        rows = self.store.conn.execute(
            "SELECT id, user_id, agent_id, run_id, query, evidence, retrieved, text, success, consolidated, "
            f"skill_id, created_at FROM trajectories WHERE {sql} ORDER BY seq",
            params,
        ).fetchall()
        keys = (
            "id",
            "user_id",
            "agent_id",
            "run_id",
            "query",
            "evidence",
            "retrieved",
            "text",
            "success",
            "consolidated",
            "skill_id",
            "created_at",
        )
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["evidence"] = json.loads(d["evidence"])
            d["retrieved"] = json.loads(d["retrieved"])
            d["success"] = bool(d["success"])
            d["consolidated"] = bool(d["consolidated"])
            out.append(d)
        return out

    def stats(self) -> dict[str, Any]:
        """Counts of nodes by kind, edges by kind, scopes and trajectories."""
        c = self.store.conn
        with self._lock:
            nodes = dict(c.execute("SELECT kind, count(*) FROM nodes GROUP BY kind ORDER BY kind").fetchall())
            edges = dict(c.execute("SELECT kind, count(*) FROM edges GROUP BY kind ORDER BY kind").fetchall())
            scopes = c.execute(
                "SELECT count(*) FROM (SELECT DISTINCT user_id, agent_id, run_id FROM nodes)"
            ).fetchone()[0]
            trajs = c.execute(
                "SELECT count(*), coalesce(sum(success AND NOT consolidated), 0) FROM trajectories"
            ).fetchone()
        return {
            "nodes": nodes,
            "edges": edges,
            "scopes": int(scopes),
            "trajectories": int(trajs[0]),
            "pending_trajectories": int(trajs[1]),
        }

    # ------------------------------------------------------------------ Stages II and III

    def feedback(
        self,
        query: str,
        outcome: bool | str,
        evidence: Iterable[str] | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        reason: str = "",
        action: str | None = None,
        check: Callable[[list[dict[str, Any]]], bool] | None = None,
        top_k: int = 10,
    ) -> Any:
        """Report a task outcome; a failure triggers Stage II repairs inside the scope filter.

        See :func:`zjulab.fluxmem.refinement.refine` for the repair loop.

        Args:
            query: The task or question that was answered from memory.
            outcome: ``True``/``"success"`` or ``False``/``"failure"``.
            evidence: Ids of the memories the answer needed, when known (each must match the
                scope filter).
            user_id: Scope filter.
            agent_id: Scope filter.
            run_id: Scope filter.
            reason: What went wrong, in words (helps attribution and pruning).
            action: Force ``"expand"``, ``"prune"`` or ``"reshape"`` instead of attributing.
            check: Judges a round's search results (True = fixed); by default a round is fixed
                when every evidence id is retrieved (or a unit grounded in it).
            top_k: Results per search inside the loop.

        Returns:
            A :class:`~zjulab.fluxmem.refinement.FeedbackReport`.
        """
        from zjulab.fluxmem.refinement import refine

        if evidence is not None and (
            isinstance(evidence, (str, bytes)) or not isinstance(evidence, Iterable)
        ):
            raise MemoryInputError(f"evidence must be a list of memory ids, got {evidence!r}")
        ev = list(evidence or [])
        if not all(isinstance(e, str) for e in ev):
            raise MemoryInputError(f"evidence ids must be strings, got {ev!r}")
        for i, e in enumerate(ev):
            check_text(e, f"evidence[{i}]")
        if isinstance(query, str):
            check_text(query, "query")
        if not isinstance(reason, str):
            raise MemoryInputError(f"reason must be a string, got {reason!r}")
        check_text(reason, "reason")
        if check is not None and not callable(check):
            raise MemoryInputError("check must be callable")
        top_k = _check_int("top_k", top_k, 1)
        scope = scope_filter(user_id, agent_id, run_id)
        with self._lock, self.store.write():
            report = refine(
                self, query, outcome, ev, scope=scope, reason=reason, action=action, check=check, top_k=top_k
            )
        return report

    def consolidate(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        replay: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> Any:
        """Distil the scope's successful trajectories into procedural circuits (Stage III).

        See :func:`zjulab.fluxmem.consolidation.consolidate`.

        Returns:
            A :class:`~zjulab.fluxmem.consolidation.ConsolidationReport`.
        """
        from zjulab.fluxmem.consolidation import consolidate

        if replay is not None and not callable(replay):
            raise MemoryInputError("replay must be callable")
        scope = scope_filter(user_id, agent_id, run_id)
        with self._lock, self.store.write():
            report = consolidate(self, scope, replay=replay)
        return report


_EXACT_LEXICAL_MAX = 20_000  # admitted nodes up to which a filtered search scores bm25 exactly
_SAFE_KEY = re.compile(r"[A-Za-z0-9_\- ]+")  # metadata keys usable in a json_extract path


def _chunks(items: Sequence[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def _traj_where(scope: Mapping[str, str | None]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for name in SCOPE_FIELDS:
        value = scope.get(name)
        if value is not None:
            parts.append(f"{name} = ?")
            params.append(value)
    return (" AND ".join(parts) or "1"), params


def _hybrid(cfg: FluxMemConfig, dense: np.ndarray, bm25: np.ndarray, llm: np.ndarray | None) -> np.ndarray:
    return hybrid_scores(
        dense,
        bm25,
        llm,
        dense_weight=cfg.dense_weight,
        bm25_weight=cfg.bm25_weight,
        llm_weight=cfg.llm_weight,
    )


def link_scores(
    dense: np.ndarray, bm25: np.ndarray, verified: Sequence[float] | None, cfg: FluxMemConfig
) -> np.ndarray:
    """Stage I candidate ranking in [0, 1]: the hybrid score divided by the weights in play."""
    llm = None if verified is None else np.asarray(verified, dtype=np.float64)
    raw = _hybrid(cfg, dense, bm25, llm)
    total = cfg.dense_weight + cfg.bm25_weight + (cfg.llm_weight if llm is not None else 0.0)
    return raw / total if total > 0 else raw


def propagate(
    ids: Sequence[str], base: np.ndarray, edges: Iterable[MemoryEdge] | Any, weight: float
) -> np.ndarray:
    """``final(v) = base(v) + weight · max_{u linked to v} base(u) · w(u, v)`` over ``ids``.

    ``edges`` is an iterable of edges (or a graph, whose edges among ``ids`` are used).
    """
    final = np.asarray(base, dtype=np.float64).copy()
    if weight <= 0:
        return final
    if hasattr(edges, "edges_touching"):
        edges = edges.edges_touching(list(ids))
    elif hasattr(edges, "edges") and callable(edges.edges):
        edges = list(edges.edges())
    pos = {nid: i for i, nid in enumerate(ids)}
    best = np.zeros(len(ids), dtype=np.float64)
    for e in edges:
        i, j = pos.get(e.source), pos.get(e.target)
        if i is None or j is None:
            continue
        best[i] = max(best[i], float(base[j]) * e.weight)
        best[j] = max(best[j], float(base[i]) * e.weight)
    return final + weight * best


def _check_save_target(target: Path, dest: Path) -> None:
    """Refuse a save target that is not a FluxMem store folder (or a new one), before any write."""
    if target.is_symlink() and not target.exists():
        raise FluxStoreError(f"{target} is a symlink to a missing path; save into a folder")
    if target.exists() and not target.is_dir():
        raise FluxStoreError(f"{target} exists and is not a directory")
    blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise FluxStoreError(f"{target} cannot be created: {blocker} is a file, not a folder")
    if not target.exists():
        return
    ours = (DB_NAME, HNSW_NAME, QDRANT_DIR)
    foreign = [
        p for p in os.listdir(target) if not any(p == n or p.startswith((n + "-", f".{n}.")) for n in ours)
    ]
    if foreign:
        raise FluxStoreError(f"{target} holds files that are not a FluxMem store: {sorted(foreign)[:5]}")
    for name in (DB_NAME, HNSW_NAME):
        if (target / name).is_dir() or ((target / name).is_symlink() and not (target / name).exists()):
            raise FluxStoreError(f"{target / name} is not a FluxMem file (a folder or a broken link)")
    if (target / QDRANT_DIR).exists() and not dest.exists():
        raise FluxStoreError(f"{target} holds a {QDRANT_DIR!r} entry but no FluxMem store")


def _put_store(copy: Path, dest: Path) -> None:
    """Make the finished copy the store at ``dest`` without ever tearing or replacing a user's file."""
    if not dest.exists() and place_new_file(copy, dest):
        return  # a new store; when another save got there first, it is written over below
    try:
        conn = sqlite3.connect(dest, isolation_level=None, timeout=5.0)
    except sqlite3.Error as exc:
        raise FluxStoreError(f"{dest}: cannot be opened ({exc}); nothing was written") from exc
    try:
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            fmt = (
                conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if "meta" in tables
                else None
            )
        except sqlite3.DatabaseError as exc:
            raise FluxStoreError(f"{dest} is not a FluxMem store ({exc}); it was left untouched") from exc
        if fmt is None or json.loads(fmt[0]) != FORMAT:
            raise FluxStoreError(
                f"{dest} is an SQLite database that FluxMem did not create (tables: {sorted(tables)[:5]}); "
                "it was left untouched"
            )
        # leaving WAL mode needs the only connection to the file: it fails while the store is open
        # anywhere, and it first moves every commit still in the WAL into the database file; the
        # exclusive lock taken then is held (locking_mode EXCLUSIVE) until the copy is written,
        # so no process can open the store in between
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
            if str(mode).lower() == "delete":
                conn.execute("BEGIN EXCLUSIVE")
                conn.execute("COMMIT")
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.OperationalError as exc:
            mode = f"unchanged ({exc})"
        if str(mode).lower() != "delete":
            raise FluxStoreError(
                f"{dest} is open in another handle or process (journal mode {mode}); close it before "
                "saving over it: nothing was written"
            )
        src = sqlite3.connect(copy)
        try:
            src.backup(conn)  # one write transaction of the target's: a kill rolls it back
        except sqlite3.Error as exc:
            raise FluxStoreError(
                f"{dest}: the copy could not be written ({exc}); the old store is intact"
            ) from exc
        finally:
            src.close()
    finally:
        conn.close()
