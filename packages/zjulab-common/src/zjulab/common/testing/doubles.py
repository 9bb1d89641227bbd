"""Deterministic stand-ins for models: a hashing encoder and a scripted chat model."""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from zjulab.common.chat import ChatResult, Usage, cut_at_stop, validate_conversations
from zjulab.common.encoders import l2_normalize
from zjulab.common.errors import ConfigError, InputError
from zjulab.common.protocols import Conversation

__all__ = ["HashingEncoder", "ScriptedChatModel"]

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """A bag-of-words encoder hashing words and word bigrams into signed buckets.

    Each lower-cased word (and adjacent word pair) adds +1 or -1 to one bucket; the sum is
    L2-normalised.

    Deterministic across processes and platforms (md5, not Python's salted ``hash``), instant,
    and lexical: texts that share words get a positive cosine. Useful in tests and as a
    no-model fallback; it satisfies :class:`~zjulab.common.protocols.TextEncoder`.

    Args:
        dim: Output dimension.
        bigrams: Also hash adjacent word pairs.
    """

    def __init__(self, dim: int = 256, *, bigrams: bool = True) -> None:
        if dim <= 0:
            raise ConfigError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.bigrams = bigrams
        self.model_id = f"hashing-{dim}{'-bigram' if bigrams else ''}"

    def _features(self, text: str) -> Iterable[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        yield from words
        if self.bigrams:
            yield from (f"{a} {b}" for a, b in itertools.pairwise(words))

    def encode(self, texts: Sequence[str], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        """Encode ``texts`` to unit-norm float32 rows (empty texts give zero rows)."""
        if isinstance(texts, str):
            raise InputError("encode() takes a list of texts, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, not str")
            for feat in self._features(text):
                h = int.from_bytes(hashlib.md5(feat.encode("utf-8")).digest()[:8], "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return l2_normalize(out)


Responder = Callable[[Conversation], "str | ChatResult"]


class ScriptedChatModel:
    """A chat model that answers from a script, recording every conversation it is asked.

    A reply may be a string (``finish_reason "stop"``) or a :class:`~zjulab.common.chat.ChatResult`
    to script how it ended (``ChatResult("The capital of Fr", finish_reason="length")``) or a
    failure (``ChatResult(error=RemoteModelError(...))``). ``stop`` strings cut replies as a
    server would. Token counts in :meth:`generate_results` and :attr:`usage` are
    whitespace-separated words (prompt: every message's content).

    Args:
        replies: Answers handed out in order, one per conversation, or a function computing
            the answer from the conversation.
        default: Answer used once a list of replies is exhausted; without it, running out
            raises :class:`~zjulab.common.errors.InputError`.
        model_id: Name reported as ``model_id``.

    Attributes:
        calls: Every conversation answered, in order.
        sampling: The sampling keywords of every ``generate`` call.
    """

    def __init__(
        self,
        replies: Sequence[str | ChatResult] | Responder = (),
        *,
        default: str | None = None,
        model_id: str = "scripted",
    ) -> None:
        self._fn: Responder | None = replies if callable(replies) else None
        self._queue: deque[str | ChatResult] = deque([] if callable(replies) else list(replies))
        self.default = default
        self.model_id = model_id
        self.calls: list[Conversation] = []
        self.sampling: list[dict[str, Any]] = []
        self.usage = Usage()
        self._lock = threading.Lock()

    def push(self, *replies: str | ChatResult) -> None:
        """Append replies to the script."""
        self._queue.extend(replies)

    def generate_results(self, conversations: Sequence[Conversation], **sampling: Any) -> list[ChatResult]:
        """Answer each conversation from the script, saying how each answer ended."""
        validate_conversations(conversations)
        stop = sampling.get("stop")
        stop = [stop] if isinstance(stop, str) else stop
        out: list[ChatResult] = []
        with self._lock:
            self.sampling.append(dict(sampling))
            for conv in conversations:
                self.calls.append([dict(m) for m in conv])  # type: ignore[misc]
                if self._fn is not None:
                    reply: str | ChatResult = self._fn(conv)
                elif self._queue:
                    reply = self._queue.popleft()
                elif self.default is not None:
                    reply = self.default
                else:
                    raise InputError(
                        f"ScriptedChatModel ran out of replies after {len(self.calls) - 1} calls"
                    )
                prompt = sum(len(str(m["content"]).split()) for m in conv)
                if isinstance(reply, ChatResult):
                    res = ChatResult(**{k: getattr(reply, k) for k in reply.__dataclass_fields__})
                    res.prompt_tokens = res.prompt_tokens or (prompt if res.ok else 0)
                    res.completion_tokens = res.completion_tokens or len(res.text.split())
                else:
                    text, _ = cut_at_stop(str(reply), stop)
                    res = ChatResult(text, "stop", prompt, len(text.split()))
                res.attempts = 1
                out.append(res)
            ok = [r for r in out if r.ok]
            self.usage.add(
                len(ok),
                sum(r.prompt_tokens for r in ok),
                sum(r.completion_tokens for r in ok),
                failed=len(out) - len(ok),
            )
        return out

    def generate(self, conversations: Sequence[Conversation], **sampling: Any) -> list[str]:
        """Answer each conversation from the script (a scripted failure is raised)."""
        results = self.generate_results(conversations, **sampling)
        for r in results:
            if r.error is not None:
                r.error.results = results  # type: ignore[attr-defined]
                raise r.error
        return [r.text for r in results]
