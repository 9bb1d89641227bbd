"""FluxMemory: the user-facing memory layer (Mem0-compatible surface).

Memories live in one :class:`~zjulab.fluxmem.graph.MemoryGraph`; every scope (a user, or an
agent or run without a user) has its own faiss index and BM25 index, so a search can only ever
see its own scope's nodes. Writes run Stage I (connection formation); :meth:`FluxMemory.feedback`
runs Stage II and :meth:`FluxMemory.consolidate` Stage III.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zjulab.common.protocols import ChatModel, TextEncoder
from zjulab.fluxmem.bm25 import BM25Index
from zjulab.fluxmem.config import FluxMemConfig
from zjulab.fluxmem.errors import MemoryInputError, MemoryNotFoundError, ScopeError
from zjulab.fluxmem.graph import MemoryGraph
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode, NodeKind, Stage, new_id, now_iso
from zjulab.fluxmem.reasoner import MemoryReasoner
from zjulab.fluxmem.scoring import hybrid_scores
from zjulab.fluxmem.vector_index import VectorIndex

__all__ = ["FluxMemory", "scope_key"]

logger = logging.getLogger(__name__)

_CONTEXT_ORDER = {"ground": 0, "distill": 1, "step": 2, "next": 3, "associate": 4}


def scope_key(user_id: str | None, agent_id: str | None, run_id: str | None) -> str:
    """The partition a memory or a search belongs to.

    A user id, when given, decides alone (so one user's memories never surface in another's
    search); otherwise the agent id, otherwise the run id.

    Raises:
        ScopeError: None of the three is given, or one is not a non-empty string.
    """
    for name, value in (("user_id", user_id), ("agent_id", agent_id), ("run_id", run_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ScopeError(f"{name} must be a non-empty string, got {value!r}")
    if user_id:
        return f"user:{user_id}"
    if agent_id:
        return f"agent:{agent_id}"
    if run_id:
        return f"run:{run_id}"
    raise ScopeError("one of user_id, agent_id or run_id is required")


def node_scope(node: MemoryNode) -> str:
    """The scope key of a stored node."""
    return scope_key(node.user_id, node.agent_id, node.run_id)


@dataclass
class _Scope:
    index: VectorIndex
    bm25: BM25Index


@dataclass
class _Message:
    content: str
    speaker: str | None
    timestamp: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


class FluxMemory:
    """A connectivity-evolving memory graph for agents.

    Args:
        encoder: Any :class:`~zjulab.common.protocols.TextEncoder` (unit-norm vectors).
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel`, or None to run every stage
            on its non-LLM path (no fact extraction or verification; heuristic repairs).
        config: Stage and search settings.
        path: Directory store this memory commits to (see :meth:`open`).
        autosave: With a ``path``, commit after every change.

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
        path: str | Path | None = None,
        autosave: bool = True,
    ) -> None:
        if not hasattr(encoder, "encode") or not hasattr(encoder, "dim"):
            raise MemoryInputError(f"encoder must be a TextEncoder, got {type(encoder).__name__}")
        if chat_model is not None and not callable(getattr(chat_model, "generate", None)):
            raise MemoryInputError(f"chat_model must be a ChatModel, got {type(chat_model).__name__}")
        if config is not None and not isinstance(config, FluxMemConfig):
            raise MemoryInputError(f"config must be a FluxMemConfig, got {type(config).__name__}")
        self.encoder = encoder
        self.chat_model = chat_model
        self.config = config or FluxMemConfig()
        self.reasoner = MemoryReasoner(
            chat_model, max_new_tokens=self.config.llm_max_new_tokens, max_retries=self.config.llm_max_retries
        )
        self.graph = MemoryGraph()
        self.path = Path(path) if path is not None else None
        self.autosave = autosave
        self._scopes: dict[str, _Scope] = {}
        self._history: dict[str, list[dict[str, Any]]] = {}
        self._trajectories: list[dict[str, Any]] = []
        self._tails: dict[str, str] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ persistence

    @classmethod
    def open(
        cls,
        path: str | Path,
        encoder: TextEncoder,
        chat_model: ChatModel | None = None,
        config: FluxMemConfig | None = None,
        *,
        autosave: bool = True,
    ) -> FluxMemory:
        """Open the directory store at ``path`` (created on first commit if absent).

        Args:
            path: Store directory.
            encoder: Must produce vectors of the stored dimension.
            chat_model: Optional chat model.
            config: Overrides the stored configuration when given.
            autosave: Commit after every change.

        Raises:
            FluxStoreError: The store is unreadable or inconsistent (subclasses name why).
        """
        from zjulab.fluxmem.store import load_into

        mem = cls(encoder, chat_model, config, path=path, autosave=autosave)
        load_into(mem, Path(path), keep_config=config is not None)
        return mem

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
        """Build a memory from hub ids (or local directories) of an encoder and a chat model.

        The encoder loads now (sentence-transformers); the chat model, when given, is a
        :class:`~zjulab.common.chat.TransformersChatModel` that loads on first use. For a served
        model pass an :class:`~zjulab.common.chat.OpenAIChatModel` to the constructor instead.

        Args:
            encoder: Sentence-transformers model id or path.
            chat_model: Causal chat model id or path, or None for the non-LLM paths.
            device: ``"auto"``, ``"cpu"``, ``"cuda:0"``...
            dtype: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
            config: Stage and search settings.
            path: Directory store to open (see :meth:`open`).
            max_new_tokens: Generation budget of the chat model.

        Raises:
            ModelNotAvailableError: A model is neither cached nor downloadable.
        """
        from zjulab.common.chat import TransformersChatModel
        from zjulab.common.encoders import SentenceTransformerEncoder

        enc: Any = SentenceTransformerEncoder(encoder, device=device, dtype=dtype)
        chat: Any = None
        if chat_model is not None:
            chat = TransformersChatModel(
                chat_model, device=device, dtype=dtype, max_new_tokens=max_new_tokens
            )
        if path is not None:
            return cls.open(path, enc, chat, config)
        return cls(enc, chat, config)

    def save(self, path: str | Path | None = None) -> Path:
        """Commit the whole memory to a directory store, atomically.

        Args:
            path: Target directory; defaults to the path the memory was opened with.

        Returns:
            The directory written.

        Raises:
            MemoryInputError: No path given and none set.
        """
        from zjulab.fluxmem.store import save_memory

        target = Path(path) if path is not None else self.path
        if target is None:
            raise MemoryInputError("save() needs a path: none was given and the memory has none")
        with self._lock:
            save_memory(self, target)
        return target

    def _changed(self) -> None:
        if self.path is not None and self.autosave:
            self.save()

    # ------------------------------------------------------------------ internals

    def _scope(self, key: str) -> _Scope:
        sc = self._scopes.get(key)
        if sc is None:
            sc = _Scope(
                VectorIndex(int(self.encoder.dim)), BM25Index(self.config.bm25_k1, self.config.bm25_b)
            )
            self._scopes[key] = sc
        return sc

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, int(self.encoder.dim)), dtype=np.float32)
        vecs = np.asarray(
            self.encoder.encode(list(texts), batch_size=self.config.encode_batch_size), dtype=np.float32
        )
        if vecs.ndim != 2 or vecs.shape != (len(texts), int(self.encoder.dim)):
            raise MemoryInputError(
                f"encoder returned shape {vecs.shape}, expected ({len(texts)}, {self.encoder.dim})"
            )
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
        self._history.setdefault(memory_id, []).append(
            {
                "id": new_id(),
                "memory_id": memory_id,
                "event": event,
                "stage": stage,
                "old_memory": old,
                "new_memory": new,
                "detail": dict(detail or {}),
                "created_at": now_iso(),
            }
        )

    def _insert_nodes(self, nodes: Sequence[MemoryNode], vecs: np.ndarray, stage: Stage) -> None:
        by_scope: dict[str, list[int]] = {}
        for i, node in enumerate(nodes):
            self.graph.add_node(node)
            by_scope.setdefault(node_scope(node), []).append(i)
            self._record(node.id, "ADD", stage, new=node.content, detail={"kind": node.kind})
        for key, rows in by_scope.items():
            sc = self._scope(key)
            sc.index.add([nodes[i].id for i in rows], vecs[rows])
            for i in rows:
                sc.bm25.add(nodes[i].id, nodes[i].content)

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

    def _remove(
        self, node_id: str, stage: Stage, event: str = "DELETE", detail: Mapping[str, Any] | None = None
    ) -> None:
        node = self.graph.node(node_id)
        sc = self._scopes.get(node_scope(node))
        if sc is not None:
            sc.index.remove([node_id])
            sc.bm25.remove(node_id)
        for edge in self.graph.remove_node(node_id):
            other = edge.target if edge.source == node_id else edge.source
            self._record(
                other,
                "UNLINK",
                stage,
                detail={
                    "edge": edge.kind,
                    "source": edge.source,
                    "target": edge.target,
                    "reason": event.lower(),
                },
            )
        self._tails = {k: v for k, v in self._tails.items() if v != node_id}
        self._record(node_id, event, stage, old=node.content, detail=detail)

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
        self,
        node: MemoryNode,
        agent_id: str | None,
        run_id: str | None,
        filters: Mapping[str, Any] | None,
    ) -> bool:
        if agent_id is not None and node.agent_id != agent_id:
            return False
        if run_id is not None and node.run_id != run_id:
            return False
        if filters:
            for key, want in filters.items():
                if key in ("kind", "speaker", "timestamp", "user_id", "agent_id", "run_id"):
                    have = getattr(node, key)
                else:
                    have = node.metadata.get(key)
                if isinstance(want, (list, tuple, set, frozenset)):
                    if have not in want:
                        return False
                elif have != want:
                    return False
        return True

    def node_dict(
        self, node: MemoryNode, score: float | None = None, *, context: bool = False
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
            out["context"] = self.context(node.id)
        return out

    def context(self, node_id: str, limit: int = 6) -> list[dict[str, Any]]:
        """The connected context of a node: grounding episodes, linked facts, steps, neighbours.

        Provenance links (ground, distill, step) come first, then temporal and associative ones
        by weight.
        """
        items = []
        for other, edge in self.graph.neighbors(node_id):
            items.append((_CONTEXT_ORDER.get(edge.kind, 9), -edge.weight, other, edge))
        items.sort(key=lambda t: (t[0], t[1], t[2]))
        out = []
        for _, _, other, edge in items[:limit]:
            n = self.graph.node(other)
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
        if not isinstance(messages, Sequence) or not messages:
            raise MemoryInputError(
                f"messages must be a string, a message dict or a non-empty list, got {messages!r}"
            )
        base_meta = dict(metadata or {})
        out = []
        for i, m in enumerate(messages):
            if isinstance(m, str):
                m = {"role": "user", "content": m}
            if not isinstance(m, Mapping):
                raise MemoryInputError(f"message {i} is {type(m).__name__}, not a dict")
            content = m.get("content")
            if not isinstance(content, str) or not content.strip():
                raise MemoryInputError(f"message {i} has no text content: {m!r}")
            name = m.get("name")
            speaker = name if isinstance(name, str) and name else m.get("role")
            text = f"{name}: {content.strip()}" if isinstance(name, str) and name else content.strip()
            meta = {**base_meta, **dict(m.get("metadata") or {})}
            ts = m.get("timestamp", meta.get("timestamp"))
            out.append(
                _Message(
                    text, speaker if isinstance(speaker, str) else None, None if ts is None else str(ts), meta
                )
            )
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
        """Write messages as episodic memories and connect them (Stage I).

        Each message becomes an episodic node (``"name: content"`` when the message has a
        ``name``). New nodes are linked to the best candidates of their scope by the hybrid
        score (cosine, BM25, and the chat model's verification when one is attached);
        consecutive messages get ``next`` links. With a chat model and ``infer``, facts are
        distilled into semantic nodes grounded in their source messages.

        Args:
            messages: A string, a ``{"role", "content"[, "name", "timestamp", "metadata"]}``
                dict, or a list of them.
            user_id: Owning user.
            agent_id: Owning agent.
            run_id: Owning run / session.
            metadata: Stored on every node written (JSON-serialisable).
            infer: Distil semantic facts with the chat model.

        Returns:
            ``{"results": [{"id", "memory", "kind", "event": "ADD"}...], "relations": [...]}``.

        Raises:
            ScopeError: No user, agent or run id.
            MemoryInputError: Malformed messages.
        """
        key = scope_key(user_id, agent_id, run_id)
        msgs = self._normalise_messages(messages, metadata)
        with self._lock:
            episodes = [
                MemoryNode(
                    id=new_id(),
                    kind="episodic",
                    content=m.content,
                    user_id=user_id,
                    agent_id=agent_id,
                    run_id=run_id,
                    speaker=m.speaker,
                    timestamp=m.timestamp,
                    metadata=m.metadata,
                )
                for m in msgs
            ]
            self._insert_nodes(episodes, self._encode([n.content for n in episodes]), "formation")
            relations: list[dict[str, Any]] = []
            if self.config.link_adjacent:
                tail_key = f"{key}|{agent_id}|{run_id}"
                chain = (
                    [self._tails[tail_key]]
                    if tail_key in self._tails and self._tails[tail_key] in self.graph
                    else []
                ) + [n.id for n in episodes]
                for a, b in itertools.pairwise(chain):
                    if self._link(a, b, "next", 1.0, "formation"):
                        relations.append({"source": a, "target": b, "kind": "next"})
                self._tails[tail_key] = episodes[-1].id
            written = list(episodes)
            if infer and self.config.extract_facts and self.reasoner.enabled:
                facts = self.reasoner.extract_facts([[m.content for m in msgs]])[0]
                if facts:
                    fact_nodes = self._new_nodes(
                        "semantic",
                        [f.text for f in facts],
                        episodes[0],
                        "formation",
                        metadata=[dict(metadata or {})] * len(facts),
                    )
                    for fnode, fact in zip(fact_nodes, facts):
                        for s in fact.sources:
                            ep = episodes[s].id
                            self._link(fnode.id, ep, "ground", 1.0, "formation")
                            self._link(ep, fnode.id, "distill", 1.0, "formation")
                            relations.append({"source": fnode.id, "target": ep, "kind": "ground"})
                    written.extend(fact_nodes)
            relations.extend(self._form_connections(written, key))
            self._changed()
        return {
            "results": [{"id": n.id, "memory": n.content, "kind": n.kind, "event": "ADD"} for n in written],
            "relations": relations,
        }

    def _form_connections(self, nodes: Sequence[MemoryNode], key: str) -> list[dict[str, Any]]:
        """Stage I: link each new node to its best hybrid-scored, verified candidates.

        Candidates are ranked by :func:`link_scores`; a link's weight is the cosine of its
        endpoints (clipped to [0, 1]), an absolute similarity that search propagation can use.
        """
        cfg = self.config
        if cfg.max_links == 0 or not nodes:
            return []
        sc = self._scope(key)
        new_ids = {n.id for n in nodes}
        plans: list[tuple[MemoryNode, list[str], np.ndarray, np.ndarray]] = []
        found = sc.index.search_many(sc.index.vectors([n.id for n in nodes]), cfg.candidate_k + 1)
        for node, raw in zip(nodes, found):
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
            plans.append((node, ids, dense, sc.bm25.score(node.content, ids)))
        verified: list[list[float] | None] = [None] * len(plans)
        if self.reasoner.enabled and cfg.verify_links and plans:
            verified = self.reasoner.verify_links(
                [(node.content, [self.graph.node(c).content for c in ids]) for node, ids, _, _ in plans]
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
        """Rank the scope's memories for ``query``.

        Candidates are the scope's best dense (faiss) and BM25 matches plus their graph
        neighbours; each gets the hybrid score, then adds ``context_weight`` times its best
        linked neighbour's score times the link weight, so connected evidence rises together.

        Args:
            query: Query text.
            user_id: Scope (see :func:`scope_key`).
            agent_id: Scope, or a filter within a user's scope.
            run_id: Scope, or a filter within a user's or agent's scope.
            top_k: Results returned at most.
            filters: Equality filters on node fields (``kind``, ``speaker``...) or metadata keys;
                a list value means "any of".
            threshold: Drop results scoring below this.
            with_context: Attach each result's connected context.

        Returns:
            ``{"results": [record with "score" and "context"...]}``, best first.

        Raises:
            ScopeError: No scope given.
            MemoryInputError: Empty query or non-positive ``top_k``.
        """
        if not isinstance(query, str) or not query.strip():
            raise MemoryInputError(f"query must be a non-empty string, got {query!r}")
        if top_k < 1:
            raise MemoryInputError(f"top_k must be >= 1, got {top_k}")
        key = scope_key(user_id, agent_id, run_id)
        narrow_agent = agent_id if user_id else None
        narrow_run = run_id if (user_id or agent_id) else None
        with self._lock:
            ranked = self._rank(query, key, top_k, narrow_agent, narrow_run, filters)
            results = []
            for nid, score in ranked:
                if threshold is not None and score < threshold:
                    continue
                results.append(self.node_dict(self.graph.node(nid), score, context=with_context))
        return {"results": results}

    def _rank(
        self,
        query: str,
        key: str,
        top_k: int,
        agent_id: str | None,
        run_id: str | None,
        filters: Mapping[str, Any] | None,
    ) -> list[tuple[str, float]]:
        cfg = self.config
        sc = self._scopes.get(key)
        if sc is None or not len(sc.index):
            return []
        narrowed = agent_id is not None or run_id is not None or bool(filters)
        m = max(cfg.search_candidates, top_k)
        qv = self._encode([query])[0]
        k_dense = min(len(sc.index), m * 10 if narrowed else m)
        seen: dict[str, None] = {}
        for nid, _ in sc.index.search(qv, k_dense):
            seen[nid] = None
        for nid, _ in sc.bm25.top(query, m, max_df=cfg.bm25_max_df, scan_budget=cfg.bm25_scan_budget):
            seen[nid] = None
        ok = [n for n in seen if self._matches(self.graph.node(n), agent_id, run_id, filters)]
        if narrowed:
            ok = ok[: 2 * m]
        cand: dict[str, None] = dict.fromkeys(ok)
        if cfg.context_weight > 0:
            for nid in ok:
                for other, _ in self.graph.neighbors(nid):
                    if (
                        other not in cand
                        and other in sc.index
                        and self._matches(self.graph.node(other), agent_id, run_id, filters)
                    ):
                        cand[other] = None
        ids = list(cand)
        if not ids:
            return []
        dense = sc.index.vectors(ids) @ qv
        bm = sc.bm25.score(query, ids)
        llm = None
        if cfg.verify_on_search and self.reasoner.enabled:
            ver = self.reasoner.verify_links([(query, [self.graph.node(i).content for i in ids])])[0]
            llm = None if ver is None else np.asarray(ver)
        base = _hybrid(cfg, dense, bm, llm)
        final = propagate(ids, base, self.graph, cfg.context_weight)
        order = sorted(range(len(ids)), key=lambda i: (-final[i], ids[i]))
        return [(ids[i], float(final[i])) for i in order[:top_k]]

    # ------------------------------------------------------------------ CRUD

    def get(self, memory_id: str) -> dict[str, Any]:
        """The record of one memory, with its context.

        Raises:
            MemoryNotFoundError: No such id.
        """
        with self._lock:
            return self.node_dict(self.graph.node(memory_id), context=True)

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Every memory of a scope (oldest first), at most ``limit``."""
        key = scope_key(user_id, agent_id, run_id)
        narrow_agent = agent_id if user_id else None
        narrow_run = run_id if (user_id or agent_id) else None
        with self._lock:
            out = []
            for node in self.graph.nodes():
                if node_scope(node) == key and self._matches(node, narrow_agent, narrow_run, filters):
                    out.append(self.node_dict(node))
                    if len(out) >= limit:
                        break
        return {"results": out}

    def update(self, memory_id: str, data: str) -> dict[str, Any]:
        """Replace a memory's content (re-embedded and re-indexed; links are kept).

        Raises:
            MemoryNotFoundError: No such id.
            MemoryInputError: Empty content.
        """
        if not isinstance(data, str) or not data.strip():
            raise MemoryInputError(f"update data must be a non-empty string, got {data!r}")
        with self._lock:
            self._set_content(memory_id, data.strip(), "user")
            self._changed()
            node = self.graph.node(memory_id)
        return {"id": memory_id, "memory": node.content, "event": "UPDATE"}

    def _set_content(self, memory_id: str, content: str, stage: Stage) -> None:
        node = self.graph.node(memory_id)
        old = node.content
        node.content = content
        node.updated_at = now_iso()
        sc = self._scope(node_scope(node))
        sc.index.add([memory_id], self._encode([content]))
        sc.bm25.add(memory_id, content)
        self._record(memory_id, "UPDATE", stage, old=old, new=content)

    def delete(self, memory_id: str) -> dict[str, Any]:
        """Delete a memory and its links (its history stays readable).

        Raises:
            MemoryNotFoundError: No such id.
        """
        with self._lock:
            self._remove(memory_id, "user")
            self._changed()
        return {"id": memory_id, "event": "DELETE"}

    def delete_all(
        self, *, user_id: str | None = None, agent_id: str | None = None, run_id: str | None = None
    ) -> int:
        """Delete every memory of a scope; returns how many."""
        key = scope_key(user_id, agent_id, run_id)
        with self._lock:
            ids = [n.id for n in self.graph.nodes() if node_scope(n) == key]
            for nid in ids:
                self._remove(nid, "user")
            self._trajectories = [t for t in self._trajectories if t["scope"] != key]
            self._scopes.pop(key, None)
            self._changed()
        return len(ids)

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        """Every change to a memory, oldest first, each with the stage that made it.

        Events: ``ADD``, ``UPDATE``, ``DELETE``, ``LINK``, ``UNLINK``, ``SPLIT``, ``MERGE``.

        Raises:
            MemoryNotFoundError: The id never existed.
        """
        with self._lock:
            if memory_id not in self._history:
                raise MemoryNotFoundError(f"no memory with id {memory_id!r}")
            return [dict(e) for e in self._history[memory_id]]

    def reset(self) -> None:
        """Forget everything (and commit the empty store when a path is set)."""
        with self._lock:
            self.graph.clear()
            self._scopes.clear()
            self._history.clear()
            self._trajectories.clear()
            self._tails.clear()
            self._changed()

    def stats(self) -> dict[str, Any]:
        """Counts of nodes by kind, edges by kind, scopes and trajectories."""
        with self._lock:
            nodes: dict[str, int] = {}
            for n in self.graph.nodes():
                nodes[n.kind] = nodes.get(n.kind, 0) + 1
            edges: dict[str, int] = {}
            for e in self.graph.edges():
                edges[e.kind] = edges.get(e.kind, 0) + 1
            return {
                "nodes": dict(sorted(nodes.items())),
                "edges": dict(sorted(edges.items())),
                "scopes": len(self._scopes),
                "trajectories": len(self._trajectories),
                "pending_trajectories": sum(
                    1 for t in self._trajectories if t.get("success") and not t.get("consolidated")
                ),
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
        """Report a task outcome; a failure triggers Stage II repairs.

        See :func:`zjulab.fluxmem.refinement.refine` for the repair loop.

        Args:
            query: The task or question that was answered from memory.
            outcome: ``True``/``"success"`` or ``False``/``"failure"``.
            evidence: Ids of the memories the answer needed, when known.
            user_id: Scope.
            agent_id: Scope.
            run_id: Scope.
            reason: What went wrong, in words (helps attribution and pruning).
            action: Force ``"expand"``, ``"prune"`` or ``"reshape"`` instead of attributing.
            check: Judges a round's search results (True = fixed); by default a round is fixed
                when every evidence id is retrieved.
            top_k: Results per search inside the loop.

        Returns:
            A :class:`~zjulab.fluxmem.refinement.FeedbackReport`.
        """
        from zjulab.fluxmem.refinement import refine

        with self._lock:
            report = refine(
                self,
                query,
                outcome,
                list(evidence or []),
                user_id=user_id,
                agent_id=agent_id,
                run_id=run_id,
                reason=reason,
                action=action,
                check=check,
                top_k=top_k,
            )
            self._changed()
        return report

    def consolidate(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        run_id: str | None = None,
        replay: Callable[[str, dict[str, Any]], bool] | None = None,
    ) -> Any:
        """Distil successful trajectories into procedural circuits (Stage III).

        See :func:`zjulab.fluxmem.consolidation.consolidate`.

        Returns:
            A :class:`~zjulab.fluxmem.consolidation.ConsolidationReport`.
        """
        from zjulab.fluxmem.consolidation import consolidate

        with self._lock:
            report = consolidate(self, scope_key(user_id, agent_id, run_id), replay=replay)
            self._changed()
        return report


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


def propagate(ids: Sequence[str], base: np.ndarray, graph: MemoryGraph, weight: float) -> np.ndarray:
    """``final(v) = base(v) + weight · max_{u linked to v} base(u) · w(u, v)`` over ``ids``."""
    final = np.asarray(base, dtype=np.float64).copy()
    if weight <= 0:
        return final
    pos = {nid: i for i, nid in enumerate(ids)}
    for i, nid in enumerate(ids):
        best = 0.0
        for other, edge in graph.neighbors(nid):
            j = pos.get(other)
            if j is not None:
                best = max(best, float(base[j]) * edge.weight)
        final[i] += weight * best
    return final
