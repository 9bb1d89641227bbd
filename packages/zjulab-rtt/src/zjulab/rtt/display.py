"""Show per-token credit as a coloured line in a terminal (ANSI 24-bit colour)."""

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
    pieces: Sequence[str], credit: Sequence[float] | torch.Tensor, *, scale: float | None = None
) -> str:
    """Paint each piece on a background from red (negative) through white to green (positive).

    Args:
        pieces: Token texts.
        credit: One value per piece.
        scale: Value painted at full strength; default: the largest absolute value.

    Returns:
        A string with ANSI escape codes (ends with a reset).
    """
    values = [float(v) for v in (credit.tolist() if isinstance(credit, torch.Tensor) else credit)]
    top = scale if scale is not None else max((abs(v) for v in values), default=0.0)
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
