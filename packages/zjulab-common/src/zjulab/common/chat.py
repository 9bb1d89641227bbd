"""Chat models: a local transformers implementation and an OpenAI-compatible HTTP client."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from zjulab.common.batching import length_buckets, padding_side
from zjulab.common.device import DeviceLike, DtypeLike, resolve_device
from zjulab.common.errors import ConfigError, InputError, RemoteModelError
from zjulab.common.protocols import Conversation

__all__ = ["OpenAIChatModel", "TransformersChatModel", "Usage", "validate_conversations"]

logger = logging.getLogger(__name__)


@dataclass
class Usage:
    """Running token and call counts of a chat model (thread-safe).

    Attributes:
        calls: Conversations answered.
        prompt_tokens: Tokens read.
        completion_tokens: Tokens generated.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, calls: int, prompt_tokens: int, completion_tokens: int) -> None:
        """Add one batch's counts."""
        with self._lock:
            self.calls += calls
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def validate_conversations(conversations: Sequence[Conversation]) -> None:
    """Check that every conversation is a non-empty list of ``{"role", "content"}`` dicts.

    Raises:
        InputError: On the first malformed conversation (its index is in the message).
    """
    if isinstance(conversations, (str, dict)):
        raise InputError("generate() takes a list of conversations, not a single one")
    for i, conv in enumerate(conversations):
        if not isinstance(conv, (list, tuple)) or not conv:
            raise InputError(f"conversation {i} must be a non-empty list of messages")
        for j, msg in enumerate(conv):
            if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
                raise InputError(f"conversation {i} message {j} needs 'role' and 'content'")
            if not isinstance(msg["content"], str):
                raise InputError(f"conversation {i} message {j}: content must be a string")


def _sampling(sampling: dict[str, Any], default_max: int) -> dict[str, Any]:
    out = dict(sampling)
    if "max_tokens" in out:
        out.setdefault("max_new_tokens", out.pop("max_tokens"))
    out.setdefault("max_new_tokens", default_max)
    out.setdefault("temperature", 0.0)
    stop = out.get("stop")
    if isinstance(stop, str):
        out["stop"] = [stop]
    if out["max_new_tokens"] <= 0:
        raise ConfigError(f"max_new_tokens must be positive, got {out['max_new_tokens']}")
    if out["temperature"] < 0:
        raise ConfigError(f"temperature must be >= 0, got {out['temperature']}")
    return out


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    if not stop:
        return text
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    return text if cut < 0 else text[:cut]


class TransformersChatModel:
    """A local chat model: a causal LM with a chat template, batched generation.

    Args:
        model: Hub id, local directory, or an already loaded ``PreTrainedModel``.
        tokenizer: Tokenizer (or its id/path); defaults to the model's.
        device: Device for the model (``"auto"`` picks CUDA, then MPS, then CPU).
        dtype: Weight dtype (``"auto"``: bf16 on recent GPUs, fp32 on CPU).
        adapter: Optional peft adapter applied on load.
        batch_size: Conversations generated together.
        max_new_tokens: Default length limit of an answer.
        chat_template_kwargs: Extra keywords for ``apply_chat_template`` (for example
            ``{"enable_thinking": False}`` for Qwen3).
        **load_kwargs: Passed to :func:`~zjulab.common.loading.load_causal_lm`.

    The model is loaded on first use, so constructing one is free.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        device: DeviceLike = "auto",
        dtype: DtypeLike = "auto",
        adapter: str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 256,
        chat_template_kwargs: dict[str, Any] | None = None,
        **load_kwargs: Any,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self._model = model if not isinstance(model, (str, os.PathLike)) else None
        self._tokenizer = tokenizer if not isinstance(tokenizer, (str, os.PathLike)) else None
        self._model_src = None if self._model is not None else str(model)
        self._tok_src = str(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else None
        self.model_id = self._model_src or getattr(
            getattr(model, "config", None), "_name_or_path", type(model).__name__
        )
        self.device = device
        self.dtype = dtype
        self.adapter = adapter
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.load_kwargs = load_kwargs
        self.usage = Usage()
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The underlying ``PreTrainedModel`` (loaded on first access)."""
        if self._model is None:
            from zjulab.common.loading import load_causal_lm

            with self._lock:
                if self._model is None:
                    self._model = load_causal_lm(
                        self._model_src or "",
                        device=self.device,
                        dtype=self.dtype,
                        adapter=self.adapter,
                        **self.load_kwargs,
                    )
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, padded on the left for generation (loaded on first access)."""
        if self._tokenizer is None:
            from zjulab.common.loading import load_tokenizer

            src = self._tok_src or self._model_src
            if src is None:
                src = getattr(self.model.config, "_name_or_path", None)
            self._tokenizer = load_tokenizer(str(src))
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def render(self, conversation: Conversation) -> str:
        """The prompt text the chat template makes of ``conversation`` (generation prompt added)."""
        text = self.tokenizer.apply_chat_template(
            list(conversation),
            tokenize=False,
            add_generation_prompt=True,
            **self.chat_template_kwargs,
        )
        return str(text)

    @torch.inference_mode()
    def generate(self, conversations: Sequence[Conversation], **sampling: Any) -> list[str]:
        """Answer each conversation (see :class:`~zjulab.common.protocols.ChatModel`).

        Keywords: ``max_new_tokens``/``max_tokens``, ``temperature`` (0 = greedy), ``top_p``,
        ``stop`` (strings; the answer is cut before the first), ``seed``.

        Raises:
            InputError: A malformed conversation.
            ConfigError: Invalid sampling values.
        """
        validate_conversations(conversations)
        opts = _sampling(sampling, self.max_new_tokens)
        if not conversations:
            return []
        tok, model = self.tokenizer, self.model
        prompts = [self.render(c) for c in conversations]
        enc_lens = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        out: list[str] = [""] * len(prompts)
        if opts.get("seed") is not None:
            torch.manual_seed(int(opts["seed"]))
        gen_kwargs: dict[str, Any] = {"max_new_tokens": int(opts["max_new_tokens"])}
        if opts["temperature"] > 0:
            gen_kwargs.update(do_sample=True, temperature=float(opts["temperature"]))
            if opts.get("top_p") is not None:
                gen_kwargs["top_p"] = float(opts["top_p"])
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        device = resolve_device(next(model.parameters()).device)
        with padding_side(tok, "left"):
            for idx in length_buckets(list(range(len(prompts))), lambda i: enc_lens[i], self.batch_size):
                batch = tok(
                    [prompts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(device)
                gen = model.generate(**batch, pad_token_id=pad_id, **gen_kwargs)
                new = gen[:, batch["input_ids"].shape[1] :]
                texts = tok.batch_decode(new, skip_special_tokens=True)
                produced = int((new != pad_id).sum().item())
                self.usage.add(len(idx), sum(enc_lens[i] for i in idx), produced)
                for i, text in zip(idx, texts):
                    out[i] = _cut_at_stop(text, opts.get("stop")).strip()
        return out


class OpenAIChatModel:
    """A client for any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    vLLM, SGLang, Ollama, llama.cpp's server and hosted APIs all speak this protocol.
    Requests of one ``generate`` call run concurrently (``concurrency`` at a time); each retries
    on timeouts, connection errors, HTTP 429 and 5xx with exponential back-off and jitter.

    Args:
        model: Model name sent in the request body.
        base_url: Server root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is appended if absent).
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY`` and may be empty for local servers.
        timeout: Seconds allowed for one request.
        max_retries: Retries after the first attempt.
        backoff: Base delay in seconds; attempt ``n`` waits ``backoff * 2**n`` (plus jitter).
        concurrency: Requests in flight at once.
        max_new_tokens: Default answer length.
        extra_body: Extra JSON fields sent with every request.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 8,
        max_new_tokens: int = 512,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency <= 0:
            raise ConfigError(f"concurrency must be positive, got {concurrency}")
        url = base_url.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        self.model_id = model
        self.base_url = url
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.concurrency = concurrency
        self.max_new_tokens = max_new_tokens
        self.extra_body = dict(extra_body or {})
        self.usage = Usage()

    def _body(self, conversation: Conversation, opts: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
            "max_tokens": int(opts["max_new_tokens"]),
            "temperature": float(opts["temperature"]),
        }
        for key in ("top_p", "stop", "seed"):
            if opts.get(key) is not None:
                body[key] = opts[key]
        body.update(self.extra_body)
        return body

    def _post(self, client: Any, body: dict[str, Any]) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                time.sleep(delay + random.uniform(0, delay / 2))
            try:
                resp = client.post(f"{self.base_url}/chat/completions", json=body, headers=headers)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                logger.warning("chat request failed (%s), attempt %d", last, attempt + 1)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                logger.warning("chat request failed (%s), attempt %d", last, attempt + 1)
                continue
            if resp.status_code >= 400:
                raise RemoteModelError(
                    f"{self.base_url} refused the request: HTTP {resp.status_code}: {resp.text[:500]}"
                )
            try:
                data = resp.json()
                text = data["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise RemoteModelError(
                    f"{self.base_url} returned an unexpected body: {resp.text[:500]}"
                ) from exc
            usage = data.get("usage") or {}
            self.usage.add(1, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
            return str(text)
        raise RemoteModelError(
            f"{self.base_url}: no answer after {self.max_retries + 1} attempts; last error: {last}"
        )

    def generate(self, conversations: Sequence[Conversation], **sampling: Any) -> list[str]:
        """Answer each conversation through the server (see the class docstring).

        Raises:
            InputError: A malformed conversation.
            RemoteModelError: A request failed after every retry or was refused (4xx).
        """
        import httpx

        validate_conversations(conversations)
        opts = _sampling(sampling, self.max_new_tokens)
        bodies = [self._body(c, opts) for c in conversations]
        with httpx.Client(timeout=self.timeout) as client:
            if len(bodies) <= 1 or self.concurrency == 1:
                return [self._post(client, b) for b in bodies]
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
                return list(pool.map(lambda b: self._post(client, b), bodies))
