"""Offline test doubles for every zjulab package.

Tiny random-weight models with a BPE tokenizer trained on the fly (built in well under a
second, no network), a deterministic hashing encoder, and a scripted chat model. The pytest
plugin :mod:`zjulab.common.testing.pytest_plugin` (registered automatically through the
``pytest11`` entry point) exposes them as fixtures.
"""

from zjulab.common.testing.doubles import HashingEncoder, ScriptedChatModel
from zjulab.common.testing.server import ChatServer
from zjulab.common.testing.tiny import (
    TINY_CHAT_TEMPLATE,
    save_tiny,
    tiny_causal_lm,
    tiny_cross_encoder,
    tiny_encoder,
    tiny_tokenizer,
)

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
