"""The heterogeneous memory graph, stored in a :class:`rustworkx.PyDiGraph`.

Nodes carry :class:`~zjulab.fluxmem.nodes.MemoryNode` payloads, edges carry
:class:`~zjulab.fluxmem.nodes.MemoryEdge` payloads. At most one edge of each kind joins an
ordered pair of nodes; neighbourhoods are read in both directions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import rustworkx as rx

from zjulab.fluxmem.errors import MemoryNotFoundError
from zjulab.fluxmem.nodes import MemoryEdge, MemoryNode

__all__ = ["MemoryGraph"]

logger = logging.getLogger(__name__)


class MemoryGraph:
    """A directed multigraph of memory units keyed by node id."""

    def __init__(self) -> None:
        self._g: rx.PyDiGraph = rx.PyDiGraph(multigraph=True)
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    @property
    def num_edges(self) -> int:
        """Number of edges."""
        return int(self._g.num_edges())

    def add_node(self, node: MemoryNode) -> None:
        """Insert ``node`` (its id must be new)."""
        if node.id in self._index:
            raise ValueError(f"node {node.id!r} already in the graph")
        self._index[node.id] = self._g.add_node(node)

    def node(self, node_id: str) -> MemoryNode:
        """The node with id ``node_id``.

        Raises:
            MemoryNotFoundError: No such node.
        """
        idx = self._index.get(node_id)
        if idx is None:
            raise MemoryNotFoundError(f"no memory with id {node_id!r}")
        node: MemoryNode = self._g[idx]
        return node

    def nodes(self) -> Iterator[MemoryNode]:
        """All nodes, in insertion order of their graph index."""
        for idx in sorted(self._index.values()):
            yield self._g[idx]

    def remove_node(self, node_id: str) -> list[MemoryEdge]:
        """Remove a node and its edges; returns the removed edges."""
        idx = self._index.pop(node_id, None)
        if idx is None:
            raise MemoryNotFoundError(f"no memory with id {node_id!r}")
        removed = [e for _, _, e in self._g.out_edges(idx)] + [e for _, _, e in self._g.in_edges(idx)]
        self._g.remove_node(idx)
        return removed

    def find_edge(self, source: str, target: str, kind: str) -> MemoryEdge | None:
        """The edge ``source -> target`` of ``kind``, or None."""
        s, t = self._index.get(source), self._index.get(target)
        if s is None or t is None:
            return None
        for _, dst, edge in self._g.out_edges(s):
            if dst == t and edge.kind == kind:
                return edge  # type: ignore[no-any-return]
        return None

    def has_link(self, a: str, b: str) -> bool:
        """Whether any edge joins ``a`` and ``b`` in either direction."""
        s, t = self._index.get(a), self._index.get(b)
        if s is None or t is None:
            return False
        return bool(self._g.has_edge(s, t) or self._g.has_edge(t, s))

    def add_edge(self, edge: MemoryEdge) -> bool:
        """Insert ``edge``; returns False (and changes nothing) if an equal-kind edge exists.

        Raises:
            MemoryNotFoundError: An endpoint is missing.
            ValueError: The edge is a self-loop.
        """
        if edge.source == edge.target:
            raise ValueError(f"self-loop on {edge.source!r}")
        s = self._index.get(edge.source)
        t = self._index.get(edge.target)
        if s is None or t is None:
            missing = edge.source if s is None else edge.target
            raise MemoryNotFoundError(f"no memory with id {missing!r}")
        if self.find_edge(edge.source, edge.target, edge.kind) is not None:
            return False
        self._g.add_edge(s, t, edge)
        return True

    def remove_edge(self, source: str, target: str, kind: str) -> MemoryEdge | None:
        """Remove the edge ``source -> target`` of ``kind``; returns it, or None if absent."""
        s, t = self._index.get(source), self._index.get(target)
        if s is None or t is None:
            return None
        for eidx in list(self._g.edge_indices_from_endpoints(s, t)):
            edge = self._g.get_edge_data_by_index(eidx)
            if edge.kind == kind:
                self._g.remove_edge_from_index(eidx)
                return edge  # type: ignore[no-any-return]
        return None

    def out_edges(self, node_id: str) -> list[MemoryEdge]:
        """Edges leaving ``node_id``."""
        return [e for _, _, e in self._g.out_edges(self._idx(node_id))]

    def in_edges(self, node_id: str) -> list[MemoryEdge]:
        """Edges entering ``node_id``."""
        return [e for _, _, e in self._g.in_edges(self._idx(node_id))]

    def incident_edges(self, node_id: str) -> list[MemoryEdge]:
        """Edges touching ``node_id`` in either direction."""
        return self.out_edges(node_id) + self.in_edges(node_id)

    def neighbors(self, node_id: str, kinds: Iterable[str] | None = None) -> list[tuple[str, MemoryEdge]]:
        """``(other node id, edge)`` for every edge touching ``node_id``, optionally by kind."""
        wanted = set(kinds) if kinds is not None else None
        out: list[tuple[str, MemoryEdge]] = []
        for e in self.incident_edges(node_id):
            if wanted is None or e.kind in wanted:
                out.append((e.target if e.source == node_id else e.source, e))
        return out

    def edges(self) -> Iterator[MemoryEdge]:
        """All edges."""
        yield from self._g.edges()

    def clear(self) -> None:
        """Remove everything."""
        self._g = rx.PyDiGraph(multigraph=True)
        self._index.clear()

    def _idx(self, node_id: str) -> int:
        idx = self._index.get(node_id)
        if idx is None:
            raise MemoryNotFoundError(f"no memory with id {node_id!r}")
        return idx
