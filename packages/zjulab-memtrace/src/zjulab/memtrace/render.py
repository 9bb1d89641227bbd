"""Pictures of an evolution graph: Graphviz DOT text and a self-contained HTML page.

The HTML page needs nothing from the network: nodes are laid out in Python (a layered layout —
each node's column is its longest path from a source) and drawn as inline SVG, with each
node's full value in a tooltip. Decisive errors are drawn in red, other operations judged
faulty in orange. Values are redacted before they are drawn (on by default).
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import rustworkx as rx

from zjulab.common.io import atomic_write_text
from zjulab.memtrace.attribution import Attribution
from zjulab.memtrace.graph import Trace
from zjulab.memtrace.judges import describe_value
from zjulab.memtrace.outputs import DOT_SIGNATURE, HTML_SIGNATURE, check_replaceable, utf8_safe
from zjulab.memtrace.redaction import DEFAULT_REDACTOR, RedactFn, apply_redaction, redact_text

__all__ = ["layered_layout", "to_dot", "to_html", "write_picture"]

_RED = "#d62728"
_ORANGE = "#ff7f0e"


def _dot_escape(text: str) -> str:
    """Escape any string for use inside a double-quoted DOT string.

    Every string in a trace may come from an untrusted file: backslashes (which start DOT
    label escapes), quotes, line breaks and other control characters are neutralised, so
    a value or id can never close the string and add attributes (``URL="javascript:..."``).
    """
    out = []
    for ch in str(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def _q(text: str) -> str:
    return f'"{_dot_escape(text)}"'


def _shown(value: object, redact: RedactFn | None, max_chars: int) -> str:
    # redact the value, then its rendering (a repr can hold what the walk could not reach)
    return redact_text(describe_value(apply_redaction(value, redact), max_chars), redact)


def _flags(attribution: Attribution | None) -> tuple[set[str], set[str]]:
    if attribution is None:
        return set(), set()
    decisive = set(attribution.decisive_ops)
    faulty = {k for k, v in attribution.verdicts.items() if v.faulty} - decisive
    return decisive, faulty


def to_dot(
    trace: Trace,
    attribution: Attribution | None = None,
    *,
    redact: RedactFn | None = DEFAULT_REDACTOR,
    max_chars: int = 48,
) -> str:
    """The graph as Graphviz DOT (variables as ellipses, operations as boxes).

    Args:
        trace: The trace.
        attribution: Highlights its decisive errors (red) and other faulty operations (orange).
        redact: Redaction of every value shown (on by default; ``None`` turns it off).
        max_chars: Characters of each value shown in a label.

    Returns:
        DOT source.
    """
    decisive, faulty = _flags(attribution)
    lines = [
        DOT_SIGNATURE,
        f'digraph "{_dot_escape(redact_text(trace.name, redact))}" {{',
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
    ]
    for v in trace.variables.values():
        val = _shown(v.value, redact, max_chars)
        lines.append(f'  {_q(v.id)} [shape=ellipse, label="{_dot_escape(v.label)}\\n{_dot_escape(val)}"];')
    for op in trace.operations.values():
        style = ""
        if op.id in decisive:
            style = f', style="filled,bold", fillcolor="{_RED}", fontcolor="white"'
        elif op.id in faulty:
            style = f', style=filled, fillcolor="{_ORANGE}"'
        lines.append(f"  {_q(op.id)} [shape=box, label={_q(trace.operation_label(op.id))}{style}];")
    for a, b in trace.edges():
        lines.append(f"  {_q(a)} -> {_q(b)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def layered_layout(trace: Trace) -> dict[str, tuple[int, int]]:
    """Column (longest path from a source) and row of every node."""
    g = trace.graph
    layer: dict[int, int] = {}
    for n in rx.topological_sort(g):
        preds = list(g.predecessor_indices(n))
        layer[n] = 1 + max((layer[p] for p in preds), default=-1)
    rows: dict[int, int] = defaultdict(int)
    out: dict[str, tuple[int, int]] = {}
    order = {nid: i for i, nid in enumerate([*trace.variables, *trace.operations])}
    for n in sorted(layer, key=lambda n: (layer[n], order.get(g[n][1], 0))):
        col = layer[n]
        out[g[n][1]] = (col, rows[col])
        rows[col] += 1
    return out


def to_html(
    trace: Trace,
    attribution: Attribution | None = None,
    *,
    redact: RedactFn | None = DEFAULT_REDACTOR,
    title: str | None = None,
) -> str:
    """A self-contained HTML page (inline SVG, no scripts from the network).

    Args:
        trace: The trace.
        attribution: Highlights decisive errors and lists them above the picture.
        redact: Redaction of every value shown (on by default; ``None`` turns it off).
        title: Page title (the trace name by default).

    Returns:
        The HTML text.
    """
    decisive, faulty = _flags(attribution)
    pos = layered_layout(trace)
    col_w, row_h, node_w, node_h, pad = 210, 64, 180, 44, 20
    ncols = 1 + max((c for c, _ in pos.values()), default=0)
    nrows = 1 + max((r for _, r in pos.values()), default=0)
    width, height = pad * 2 + ncols * col_w, pad * 2 + nrows * row_h

    def xy(nid: str) -> tuple[int, int]:
        c, r = pos[nid]
        return pad + c * col_w, pad + r * row_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica,Arial,sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>',
    ]
    for a, b in trace.edges():
        (x1, y1), (x2, y2) = xy(a), xy(b)
        parts.append(
            f'<line x1="{x1 + node_w}" y1="{y1 + node_h // 2}" x2="{x2}" y2="{y2 + node_h // 2}" '
            'stroke="#999" marker-end="url(#arrow)"/>'
        )
    for vid, v in trace.variables.items():
        x, y = xy(vid)
        full = html.escape(_shown(v.value, redact, 2000))
        short = html.escape(_shown(v.value, redact, 30))
        parts.append(
            f'<g class="var" id="{html.escape(vid)}"><title>{html.escape(v.label)}: {full}</title>'
            f'<rect x="{x}" y="{y}" rx="20" ry="20" width="{node_w}" height="{node_h}" fill="#eef4fb" stroke="#4a78b0"/>'
            f'<text x="{x + 10}" y="{y + 17}" font-weight="bold">{html.escape(v.label)}</text>'
            f'<text x="{x + 10}" y="{y + 33}" fill="#333">{short}</text></g>'
        )
    for oid, op in trace.operations.items():
        x, y = xy(oid)
        fill, color = "#f4f4f4", "#222"
        cls = "op"
        if oid in decisive:
            fill, color, cls = _RED, "#fff", "op decisive"
        elif oid in faulty:
            fill, cls = _ORANGE, "op faulty"
        tip = [f"{trace.operation_label(oid)} ({oid}), kind {op.kind}", f"{op.duration_ms:.2f} ms"]
        if op.model_id:
            tip.append(f"model: {redact_text(op.model_id, redact)}")
        if op.prompt:
            tip.append(f"prompt: {_shown(op.prompt, redact, 500)}")
        if attribution is not None and oid in attribution.verdicts:
            tip.append(f"judge: {redact_text(attribution.verdicts[oid].rationale, redact)}")
        if op.error:
            tip.append(f"error: {redact_text(op.error, redact)}")
        parts.append(
            f'<g class="{cls}" id="{html.escape(oid)}"><title>{html.escape(chr(10).join(tip))}</title>'
            f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" fill="{fill}" stroke="#333"/>'
            f'<text x="{x + 10}" y="{y + 27}" fill="{color}" font-weight="bold">'
            f"{html.escape(trace.operation_label(oid))} ({html.escape(oid)})</text></g>"
        )
    parts.append("</svg>")
    head = html.escape(redact_text(title or trace.name, redact))
    summary = ""
    if attribution is not None:
        items = "".join(
            f"<li><b>{html.escape(d.label)}</b> ({html.escape(d.op_id)}): {html.escape(d.mode)} — "
            f"{html.escape(redact_text(d.rationale, redact))}</li>"
            for d in attribution.decisive
        )
        summary = (
            f"<p>Answer: <code>{html.escape(_shown(attribution.answer, redact, 300))}</code>; "
            f"gold: <code>{html.escape(redact_text(attribution.gold.answer, redact))}</code></p>"
            f"<p>{html.escape(redact_text(attribution.summary(), redact))}</p><ul>{items}</ul>"
        )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'>{HTML_SIGNATURE}"
        f"<title>{head}</title><style>body{{font-family:Helvetica,Arial,sans-serif;margin:16px}}"
        "svg g:hover rect{stroke-width:3}</style></head>"
        f"<body><h2>{head}</h2>{summary}<p>Variables are rounded; operations are boxes. "
        "Hover a node for its value. Red: decisive error; orange: judged faulty.</p>"
        f"{''.join(parts)}</body></html>\n"
    )


def write_picture(
    trace: Trace,
    path: str | os.PathLike[str],
    attribution: Attribution | None = None,
    *,
    redact: RedactFn | None = DEFAULT_REDACTOR,
    formats: Iterable[str] = ("html", "dot"),
) -> list[Path]:
    """Write the picture next to ``path`` (``path.html`` / ``path.dot``), atomically.

    Returns:
        The files written.

    Raises:
        OutputExistsError: A target is a folder or a file this library did not write.
    """
    base = Path(path)
    formats = list(formats)
    for fmt in formats:  # nothing is written when any target is a user's file
        check_replaceable(base.with_suffix(f".{fmt}"))
    out = []
    for fmt in formats:
        target = base.with_suffix(f".{fmt}")
        text = (
            to_html(trace, attribution, redact=redact)
            if fmt == "html"
            else to_dot(trace, attribution, redact=redact)
        )
        atomic_write_text(target, utf8_safe(text))
        out.append(target)
    return out
