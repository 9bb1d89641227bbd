r"""Lines of a UTF-8 text file as its writer meant them.

``str.splitlines`` also breaks at U+2028, U+2029, U+0085, form feeds and other separators that
JSON allows raw inside strings (``json.dumps(..., ensure_ascii=False)`` writes them so), which
cuts a valid JSONL row in two. A file's lines end at ``\n`` (``\r\n`` too); a byte-order mark
at the start is an encoding mark, not text.
"""

from __future__ import annotations


def file_lines(text: str) -> list[str]:
    r"""``text`` split at ``\n`` only, each ``\r\n`` ending and a leading BOM removed."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]
