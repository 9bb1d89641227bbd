"""Keyword helpers that keep trainer arguments working across transformers versions."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["warmup_kwargs"]


def warmup_kwargs(args_cls: Any, ratio: float) -> dict[str, Any]:
    """``{"warmup_ratio": r}`` where the arguments class has it, else ``{"warmup_steps": r}``.

    transformers 5 folded the ratio into ``warmup_steps`` (a float below 1 is a ratio).
    """
    params = inspect.signature(args_cls.__init__).parameters
    if "warmup_ratio" in params:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": float(ratio)}
