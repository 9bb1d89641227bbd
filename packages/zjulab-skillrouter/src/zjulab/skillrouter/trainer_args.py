"""Keyword helpers that keep trainer arguments working across transformers versions."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["warmup_kwargs"]


def warmup_kwargs(args_cls: Any, ratio: float) -> dict[str, Any]:
    """``{"warmup_ratio": r}`` where the arguments class has it, else ``{"warmup_steps": r}``.

    transformers 5 folded the ratio into ``warmup_steps`` (a float below 1 is a ratio).
    """
    from transformers import TrainingArguments

    # sentence-transformers still accepts warmup_ratio on transformers 5 but deprecates it, so
    # follow what transformers itself takes.
    base = TrainingArguments if issubclass(args_cls, TrainingArguments) else args_cls
    params = inspect.signature(base.__init__).parameters
    if "warmup_ratio" in params:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": float(ratio)}
