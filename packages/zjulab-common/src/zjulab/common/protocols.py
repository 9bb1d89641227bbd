"""The three model protocols every zjulab library programs against.

Libraries accept any object with the right method, so a user can pass a local transformers
model, a served model over HTTP, or a scripted fake in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

__all__ = ["ChatModel", "Conversation", "Message", "PairScorer", "TextEncoder"]


class Message(TypedDict):
    """One chat turn: ``{"role": "system" | "user" | "assistant", "content": str}``."""

    role: str
    content: str


Conversation = list[Message]
"""A list of messages in order, as accepted by chat templates and the OpenAI API."""


@runtime_checkable
class ChatModel(Protocol):
    """Anything that answers a batch of conversations.

    ``generate`` returns one string per conversation, in order. Sampling keywords follow the
    OpenAI names: ``max_new_tokens`` (alias ``max_tokens``), ``temperature``, ``top_p``,
    ``stop``, ``seed``. ``temperature=0`` means greedy decoding. An option a model cannot
    honour is refused with :class:`~zjulab.common.errors.ConfigError`, never dropped.

    A model may also offer ``generate_results(conversations, **sampling)`` returning one
    :class:`~zjulab.common.chat.ChatResult` per conversation (text, ``finish_reason``, token
    counts, error); :func:`~zjulab.common.structured.generate_structured` uses it to tell a
    cut-off answer from a complete one. Both zjulab chat models and the test doubles have it.
    """

    model_id: str

    def generate(self, conversations: Sequence[Conversation], **sampling: Any) -> list[str]:
        """Answer each conversation with the assistant's next message."""
        ...


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that maps texts to L2-normalised float32 vectors of a fixed dimension."""

    model_id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Return an array of shape ``[len(texts), dim]`` with unit-norm rows."""
        ...


@runtime_checkable
class PairScorer(Protocol):
    """Anything that scores (query, document) pairs; higher means more relevant."""

    model_id: str

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> np.ndarray:
        """Return a float32 array of shape ``[len(pairs)]``."""
        ...
