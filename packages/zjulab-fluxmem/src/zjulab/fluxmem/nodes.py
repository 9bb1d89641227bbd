"""Memory units (nodes) and the typed links between them (edges)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from zjulab.fluxmem.errors import FluxStoreError

__all__ = ["EdgeKind", "MemoryEdge", "MemoryNode", "NodeKind", "Stage", "new_id", "now_iso"]

NodeKind = Literal["episodic", "semantic", "procedural"]
"""Episodic: a raw turn or observation. Semantic: a distilled fact. Procedural: a skill or step."""

EdgeKind = Literal["ground", "distill", "associate", "next", "step"]
"""``ground``: fact -> the episode it rests on. ``distill``: episode -> the fact or skill made from
it. ``associate``: two related units (formation or expansion). ``next``: episode -> the following
episode. ``step``: skill -> first step, step -> next step."""

Stage = Literal["formation", "refinement", "consolidation", "user"]
"""Which part of the method made a change: the three FluxMem stages, or a direct user call."""

NODE_KINDS: tuple[str, ...] = get_args(NodeKind)
EDGE_KINDS: tuple[str, ...] = get_args(EdgeKind)


def now_iso() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


def new_id() -> str:
    """A fresh random node id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass
class MemoryNode:
    """One memory unit.

    Args:
        id: Unique id.
        kind: Episodic, semantic or procedural.
        content: The text that is embedded, indexed and returned.
        user_id: Owning user (the primary scope).
        agent_id: Owning agent.
        run_id: Owning run or session.
        speaker: Who said it (episodic nodes from chat messages).
        timestamp: When it happened, as given by the caller (free text or ISO time).
        metadata: Caller metadata, stored verbatim (must be JSON-serialisable).
        created_at: When the node was written.
        updated_at: When the node's content last changed.
    """

    id: str
    kind: NodeKind
    content: str
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    speaker: str | None = None
    timestamp: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryNode:
        """Inverse of :meth:`to_dict`.

        Raises:
            FluxStoreError: A required key is missing or the kind is unknown.
        """
        try:
            node = cls(**{k: data[k] for k in data if k in _NODE_FIELDS})
        except TypeError as exc:
            raise FluxStoreError(f"bad node record {data.get('id')!r}: {exc}") from exc
        if node.kind not in NODE_KINDS:
            raise FluxStoreError(f"node {node.id!r} has unknown kind {node.kind!r}")
        return node


@dataclass
class MemoryEdge:
    """A directed, typed link between two nodes.

    Args:
        source: Id of the node the edge leaves.
        target: Id of the node the edge enters.
        kind: What the link means (see :data:`EdgeKind`).
        weight: Strength in [0, 1] (the hybrid score that made it, 1.0 for provenance links).
        stage: The stage that made it.
        created_at: When it was made.
    """

    source: str
    target: str
    kind: EdgeKind
    weight: float = 1.0
    stage: Stage = "formation"
    created_at: str = field(default_factory=now_iso)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryEdge:
        """Inverse of :meth:`to_dict`.

        Raises:
            FluxStoreError: A required key is missing or the kind is unknown.
        """
        try:
            edge = cls(**{k: data[k] for k in data if k in _EDGE_FIELDS})
        except TypeError as exc:
            raise FluxStoreError(f"bad edge record {data!r}: {exc}") from exc
        if edge.kind not in EDGE_KINDS:
            raise FluxStoreError(f"edge {edge.source}->{edge.target} has unknown kind {edge.kind!r}")
        return edge


_NODE_FIELDS = set(MemoryNode.__dataclass_fields__)
_EDGE_FIELDS = set(MemoryEdge.__dataclass_fields__)
