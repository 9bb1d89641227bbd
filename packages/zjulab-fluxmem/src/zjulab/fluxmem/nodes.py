"""Memory units (nodes) and the typed links between them (edges)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, TypeVar, get_args

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


_R = TypeVar("_R", bound="_Record")


def now_iso() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


def new_id() -> str:
    """A fresh random node id (32 hex digits)."""
    return uuid.uuid4().hex


class _Record:
    """Plain-JSON round trip shared by nodes and edges."""

    _KINDS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls: type[_R], data: dict[str, Any]) -> _R:
        """Inverse of :meth:`to_dict`; unknown keys (from newer versions) are ignored.

        Raises:
            FluxStoreError: A required key is missing or the kind is unknown.
        """
        try:
            obj = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})  # type: ignore[attr-defined]
        except TypeError as exc:
            raise FluxStoreError(f"bad {cls.__name__} record {data!r}: {exc}") from exc
        if obj.kind not in cls._KINDS:  # type: ignore[attr-defined]
            raise FluxStoreError(f"{cls.__name__} record {data!r} has unknown kind {obj.kind!r}")  # type: ignore[attr-defined]
        return obj


@dataclass
class MemoryNode(_Record):
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

    _KINDS: ClassVar[tuple[str, ...]] = NODE_KINDS


@dataclass
class MemoryEdge(_Record):
    """A directed, typed link between two nodes.

    Args:
        source: Id of the node the edge leaves.
        target: Id of the node the edge enters.
        kind: What the link means (see :data:`EdgeKind`).
        weight: Strength in [0, 1] (the cosine of its endpoints for associative links, 1.0 for
            provenance, temporal and evidence links).
        stage: The stage that made it.
        created_at: When it was made.
    """

    source: str
    target: str
    kind: EdgeKind
    weight: float = 1.0
    stage: Stage = "formation"
    created_at: str = field(default_factory=now_iso)

    _KINDS: ClassVar[tuple[str, ...]] = EDGE_KINDS
