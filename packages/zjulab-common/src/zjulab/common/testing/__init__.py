"""Offline test doubles for every zjulab package.

Tiny random-weight models with a BPE tokenizer trained on the fly (built in well under a
second, no network), a deterministic hashing encoder, and a scripted chat model. The pytest
plugin :mod:`zjulab.common.testing.pytest_plugin` (registered automatically through the
``pytest11`` entry point) exposes them as fixtures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The doubles and the stub server need no torch; the tiny models do, and load on first use.
from zjulab.common.testing.doubles import HashingEncoder, ScriptedChatModel
from zjulab.common.testing.server import ChatServer

_TINY = {
    "TINY_CHAT_TEMPLATE",
    "save_tiny",
    "tiny_causal_lm",
    "tiny_cross_encoder",
    "tiny_encoder",
    "tiny_tokenizer",
}

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "ChatServer",
    "HashingEncoder",
    "ScriptedChatModel",
    "save_tiny",
    "tiny_causal_lm",
    "tiny_cross_encoder",
    "tiny_encoder",
    "tiny_tokenizer",
]


def __getattr__(name: str) -> Any:
    if name in _TINY or name == "tiny":
        from zjulab.common.deps import require

        require("torch", feature="the tiny test models")
        require("transformers", feature="the tiny test models")
        module = importlib.import_module("zjulab.common.testing.tiny")
        return module if name == "tiny" else getattr(module, name)
    raise AttributeError(f"module 'zjulab.common.testing' has no attribute {name!r}")


if TYPE_CHECKING:
    from zjulab.common.testing.tiny import (
        TINY_CHAT_TEMPLATE,
        save_tiny,
        tiny_causal_lm,
        tiny_cross_encoder,
        tiny_encoder,
        tiny_tokenizer,
    )
