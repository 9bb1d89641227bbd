"""Show per-token credit: a coloured line in a terminal (ANSI 24-bit colour), or marked plain text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zjulab.rtt.relevance import token_char_offsets

__all__ = ["colorize_credit", "token_pieces"]


def token_pieces(ids: Sequence[int], tokenizer: Any) -> list[str]:
    """The text each token contributes to the decoded response (empty for partial bytes)."""
    text, offsets = token_char_offsets(ids, tokenizer)
    return [text[a:b] for a, b in offsets]


def colorize_credit(
    pieces: Sequence[str],
    credit: Sequence[float] | torch.Tensor,
    *,
    scale: float | None = None,
    color: bool = True,
    threshold: float = 0.05,
) -> str:
    """Paint each piece on a background from red (negative) through white to green (positive).

    Args:
        pieces: Token texts.
        credit: One value per piece.
        scale: Value painted at full strength; default: the largest absolute value.
        color: ``False`` gives plain text without escape codes (for a pipe, a file or
            ``NO_COLOR``; see :func:`zjulab.common.cli.use_color`): each piece whose credit
            reaches ``threshold`` of the scale is written ``«piece»(+1.23)``.
        threshold: Share of the scale from which a piece is marked in plain text.

    Returns:
        A string with ANSI escape codes ending with a reset, or plain text when ``color`` is false.
    """
    values = [float(v) for v in (credit.tolist() if isinstance(credit, torch.Tensor) else credit)]
    top = scale if scale is not None else max((abs(v) for v in values), default=0.0)
    if not color:
        return _plain(pieces, values, top, threshold)
    out = []
    for piece, v in zip(pieces, values):
        a = 0.0 if top <= 0 else max(-1.0, min(1.0, v / top))
        if a >= 0:
            r, g, b = int(255 - 155 * a), 255, int(255 - 155 * a)
        else:
            r, g, b = 255, int(255 + 155 * a), int(255 + 155 * a)
        shown = piece.replace("\n", "\u21b5\n")
        out.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{shown}")
    out.append("\x1b[0m")
    return "".join(out)


def _plain(pieces: Sequence[str], values: list[float], top: float, threshold: float) -> str:
    out = []
    for piece, v in zip(pieces, values):
        if top > 0 and abs(v) >= threshold * top and piece.strip():
            core = piece.strip()
            lead = piece[: len(piece) - len(piece.lstrip())]
            tail = piece[len(piece.rstrip()) :]
            out.append(f"{lead}\u00ab{core}\u00bb({v:+.2f}){tail}")
        else:
            out.append(piece)
    return "".join(out)
