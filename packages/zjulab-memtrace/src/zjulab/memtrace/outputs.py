"""Output files: a path is replaced only when it holds an earlier output of this library.

Every file zjulab-memtrace writes carries a signature: a trace or attribution JSON its
``schema`` field, an HTML page a ``generator`` meta tag, a DOT file a first-line comment.
Before a write, :func:`check_replaceable` refuses (:class:`~zjulab.memtrace.errors.OutputExistsError`)
a target that is a folder or an existing file without the signature — a user's own
``report.html`` or ``trace.json`` beside the output is never overwritten. Writes themselves
are atomic (:mod:`zjulab.common.io`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from zjulab.memtrace.errors import OutputExistsError

__all__ = [
    "ATTRIBUTION_SCHEMA",
    "DOT_SIGNATURE",
    "HTML_SIGNATURE",
    "check_replaceable",
    "utf8_safe",
    "written_here",
]

ATTRIBUTION_SCHEMA = "zjulab.memtrace.attribution"
"""``schema`` field of an attribution JSON document."""
HTML_SIGNATURE = '<meta name="generator" content="zjulab-memtrace">'
"""Meta tag in every HTML page this library writes."""
DOT_SIGNATURE = "// written by zjulab-memtrace"
"""First line of every DOT file this library writes."""

_TRACE_SCHEMA = "zjulab.memtrace.trace"
# what pictures and attributions written before the signatures existed look like
_OLD_HTML = "Variables are rounded; operations are boxes."
_OLD_DOT = '  rankdir=LR;\n  node [fontname="Helvetica", fontsize=10];'
_OLD_ATTRIBUTION_KEYS = frozenset({"method", "failed", "answer", "gold", "decisive", "verdicts", "replays"})


def written_here(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` is an output of this library (trace, attribution, picture)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    text = head.decode("utf-8", "replace")
    if p.suffix == ".html":
        return HTML_SIGNATURE in text or _OLD_HTML in text
    if p.suffix == ".dot":
        return text.startswith(DOT_SIGNATURE) or (text.startswith("digraph ") and _OLD_DOT in text)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return doc.get("schema") in (_TRACE_SCHEMA, ATTRIBUTION_SCHEMA) or doc.keys() >= _OLD_ATTRIBUTION_KEYS


def check_replaceable(path: str | os.PathLike[str]) -> Path:
    """Refuse to write ``path`` when that would replace something this library did not write.

    Returns:
        The path.

    Raises:
        OutputExistsError: ``path`` is a folder, or an existing file (or a link to one) that is
            not an output of this library.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputExistsError(f"{p}: is a folder; give a file path for this output")
    if (p.exists() or p.is_symlink()) and not written_here(p):
        raise OutputExistsError(
            f"{p}: exists and was not written by zjulab-memtrace; refusing to replace it "
            "(choose another output path, or move the file away)"
        )
    if p.parent.exists() and not p.parent.is_dir():
        raise OutputExistsError(f"{p.parent}: is a file, not a folder; cannot write {p.name} inside it")
    return p


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_safe(value: Any) -> Any:
    """``value`` (a string or JSON-shaped) with lone surrogates replaced by U+FFFD.

    A string decoded with ``surrogateescape`` (file names, bytes from a subprocess) or cut
    through a surrogate pair cannot be written as UTF-8; every output replaces those code
    points rather than fail and lose the whole file.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        return {utf8_safe(k): utf8_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [utf8_safe(v) for v in value]
    return value
