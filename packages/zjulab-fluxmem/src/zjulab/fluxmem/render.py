"""Pictures of a memory neighbourhood: Graphviz DOT text and a self-contained HTML page."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zjulab.fluxmem.memory import FluxMemory

__all__ = ["neighbourhood", "to_dot", "to_html"]

_COLOURS = {"episodic": "#9ecae1", "semantic": "#a1d99b", "procedural": "#fdae6b"}
_STYLES = {"ground": "bold", "distill": "dashed", "associate": "solid", "next": "dotted", "step": "bold"}


def neighbourhood(mem: FluxMemory, centre: str, hops: int = 1, limit: int = 60) -> list[str]:
    """Node ids within ``hops`` links of ``centre`` (breadth first, at most ``limit``)."""
    mem.graph.node(centre)
    seen = [centre]
    frontier = [centre]
    for _ in range(hops):
        nxt = []
        for nid in frontier:
            for other, _edge in mem.graph.neighbors(nid):
                if other not in seen and len(seen) < limit:
                    seen.append(other)
                    nxt.append(other)
        frontier = nxt
    return seen


def _label(text: str, width: int = 40) -> str:
    short = text if len(text) <= width else text[: width - 1] + "…"
    return short.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def to_dot(mem: FluxMemory, ids: list[str]) -> str:
    """Graphviz DOT of the sub-graph induced by ``ids`` (colour = node kind, style = edge kind)."""
    keep = set(ids)
    lines = ["digraph fluxmem {", '  node [shape=box, style="rounded,filled", fontsize=10];']
    for nid in ids:
        n = mem.graph.node(nid)
        lines.append(
            f'  "{nid[:8]}" [label="{n.kind[0].upper()}: {_label(n.content)}", fillcolor="{_COLOURS[n.kind]}"];'
        )
    for nid in ids:
        for e in mem.graph.out_edges(nid):
            if e.target in keep:
                lines.append(
                    f'  "{e.source[:8]}" -> "{e.target[:8]}" [label="{e.kind} {e.weight:.2f}", style={_STYLES[e.kind]}, fontsize=8];'
                )
    lines.append("}")
    return "\n".join(lines)


def to_html(mem: FluxMemory, ids: list[str], title: str = "FluxMem neighbourhood") -> str:
    """A standalone HTML page: node table (kind-coloured) and edge table of the sub-graph."""
    keep = set(ids)
    rows = []
    for nid in ids:
        n = mem.graph.node(nid)
        rows.append(
            f'<tr style="background:{_COLOURS[n.kind]}"><td><code>{nid[:8]}</code></td><td>{n.kind}</td>'
            f"<td>{html.escape(n.content)}</td></tr>"
        )
    erows = []
    for nid in ids:
        for e in mem.graph.out_edges(nid):
            if e.target in keep:
                erows.append(
                    f"<tr><td><code>{e.source[:8]}</code></td><td>{e.kind}</td><td><code>{e.target[:8]}</code></td>"
                    f"<td>{e.weight:.2f}</td><td>{e.stage}</td></tr>"
                )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #999;padding:3px 6px;font-size:13px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Nodes</h2><table><tr><th>id</th><th>kind</th><th>content</th></tr>"
        + "".join(rows)
        + "</table><h2>Edges</h2><table><tr><th>source</th><th>kind</th><th>target</th><th>weight</th><th>stage</th></tr>"
        + "".join(erows)
        + "</table></body></html>\n"
    )
