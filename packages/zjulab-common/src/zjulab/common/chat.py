"""Chat models: an OpenAI-compatible client (on the ``openai`` SDK) and a local transformers model.

Both answer a batch of conversations (:class:`~zjulab.common.protocols.ChatModel`) and can say
how each answer ended: :meth:`OpenAIChatModel.generate_results` returns one :class:`ChatResult`
per conversation (text, ``finish_reason``, token usage, the server's reasoning text, or the
error that conversation met). ``generate`` returns plain strings and applies a policy to answers
cut off by the length limit, withheld by a content filter, or empty (``"warn"``, ``"raise"`` or
``"return"``).

This module imports neither torch nor the ``openai`` package at import time.
:class:`TransformersChatModel` lives in :mod:`zjulab.common.transformers_chat` and is loaded
on first access of the name.
"""

from __future__ import annotations

import datetime
import email.utils
import importlib
import json
import logging
import math
import numbers
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zjulab.common.errors import ConfigError, IncompleteAnswerError, InputError, RemoteModelError
from zjulab.common.protocols import Conversation
from zjulab.common.text import check_text

if TYPE_CHECKING:
    from zjulab.common.transformers_chat import TransformersChatModel

__all__ = [
    "ChatResult",
    "IncompleteAnswerError",
    "OpenAIChatModel",
    "TransformersChatModel",
    "Usage",
    "validate_conversations",
]

logger = logging.getLogger(__name__)

Policy = Literal["warn", "raise", "return"]
OnError = Literal["raise", "return"]
_POLICIES = ("warn", "raise", "return")


def __getattr__(name: str) -> Any:
    if name == "TransformersChatModel":
        return importlib.import_module("zjulab.common.transformers_chat").TransformersChatModel
    raise AttributeError(f"module 'zjulab.common.chat' has no attribute {name!r}")


@dataclass
class Usage:
    """Running token and call counts of a chat model (thread-safe).

    Only what happened is counted: a conversation that failed adds to ``failed``, not to
    ``calls``; tokens are the server's own counts of the answers received.

    Attributes:
        calls: Conversations answered.
        prompt_tokens: Tokens read (of answered conversations).
        completion_tokens: Tokens generated (of answered conversations).
        failed: Conversations that got no answer.
        retries: Requests sent again after a failure.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self, calls: int, prompt_tokens: int, completion_tokens: int, *, failed: int = 0, retries: int = 0
    ) -> None:
        """Add one batch's counts."""
        with self._lock:
            self.calls += calls
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.failed += failed
            self.retries += retries

    def __getstate__(self) -> dict[str, int]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "failed": self.failed,
            "retries": self.retries,
        }


@dataclass
class ChatResult:
    """How one conversation was answered.

    Attributes:
        text: The answer (stop strings removed); ``""`` when the request failed.
        finish_reason: ``"stop"``, ``"length"`` (cut off at the token limit),
            ``"content_filter"``, ``"tool_calls"``..., or ``None`` when no answer came.
        prompt_tokens: Tokens read, as counted by the model or server (0 if not reported).
        completion_tokens: Tokens generated, likewise.
        reasoning: The reasoning text a server sent next to the answer (vLLM's
            ``reasoning_content``, Ollama's ``reasoning``), else ``None``.
        refusal: A refusal message the server sent instead of content, else ``None``.
        error: The exception that kept this conversation from being answered, else ``None``.
        attempts: Requests sent for this conversation.
    """

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str | None = None
    refusal: str | None = None
    error: BaseException | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """An answer arrived (it may still be truncated or empty; see ``finish_reason``)."""
        return self.error is None

    @property
    def truncated(self) -> bool:
        """The answer was cut off at the token limit."""
        return self.finish_reason == "length"


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


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
            check_text(msg["content"], f"conversation {i} message {j}")
            if msg["role"] not in _ROLES:
                raise InputError(
                    f"conversation {i} message {j}: role {msg['role']!r} is not one of {sorted(_ROLES)}"
                )


def _check_policy(name: str, value: str, allowed: Sequence[str] = _POLICIES) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


#: Sampling options whose value must be a number (a string would reach the server, or the local
#: model, as a request every conversation fails on).
_NUMERIC = ("top_p", "seed", "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


def normalize_sampling(sampling: dict[str, Any], default_max: int, accepted: Sequence[str]) -> dict[str, Any]:
    """Validate sampling keywords: aliases resolved, values checked, unknown names refused.

    Raises:
        ConfigError: An unknown keyword (never dropped silently) or an invalid value.
    """
    out = dict(sampling)
    if "max_tokens" in out:
        if "max_new_tokens" in out and out["max_new_tokens"] != out["max_tokens"]:
            raise ConfigError("max_tokens and max_new_tokens disagree; pass one of them")
        out["max_new_tokens"] = out.pop("max_tokens")
    unknown = sorted(set(out) - set(accepted) - {"max_new_tokens"})
    if unknown:
        raise ConfigError(
            f"sampling option(s) {unknown} are not supported here; accepted: {sorted(accepted)}"
        )
    if out.get("max_new_tokens") is None:
        out["max_new_tokens"] = default_max
    if out.get("temperature") is None:
        out["temperature"] = 0.0
    stop = out.get("stop")
    if isinstance(stop, str):
        out["stop"] = [stop]
    elif stop is not None:
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise ConfigError(f"stop must be a string or a list of strings, got {stop!r}")
        out["stop"] = [s for s in stop if s]
    try:
        out["max_new_tokens"] = int(out["max_new_tokens"])
        out["temperature"] = float(out["temperature"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid sampling value: {exc}") from exc
    if out["max_new_tokens"] <= 0:
        raise ConfigError(f"max_new_tokens must be positive, got {out['max_new_tokens']}")
    if out["temperature"] < 0:
        raise ConfigError(f"temperature must be >= 0, got {out['temperature']}")
    for name in _NUMERIC:
        value = out.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        if value is not None and name in ("seed", "top_k") and value != int(value):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if out.get("top_p") is not None and not 0 < float(out["top_p"]) <= 1:
        raise ConfigError(f"top_p must be in (0, 1], got {out['top_p']}")
    if out.get("n", 1) != 1:
        raise ConfigError(
            f"n={out['n']}: one answer per conversation is returned; repeat the conversation "
            "(with different seeds) for several samples"
        )
    out.pop("n", None)
    return out


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string; also say whether one was found."""
    if not stop:
        return text, False
    hits = [text.find(s) for s in stop if s and s in text]
    if not hits:
        return text, False
    return text[: min(hits)], True


def apply_finish_policy(
    results: list[ChatResult],
    *,
    on_truncation: str,
    on_content_filter: str,
    on_empty: str,
    source: str,
) -> None:
    """Warn about or raise on answers that were cut off, filtered or empty (failed ones skipped).

    Raises:
        IncompleteAnswerError: A case whose policy is ``"raise"`` occurred.
    """
    cases: list[tuple[str, str, list[int]]] = [
        ("length", on_truncation, [i for i, r in enumerate(results) if r.ok and r.finish_reason == "length"]),
        (
            "content_filter",
            on_content_filter,
            [i for i, r in enumerate(results) if r.ok and r.finish_reason == "content_filter"],
        ),
        (
            "empty",
            on_empty,
            [
                i
                for i, r in enumerate(results)
                if r.ok and not r.text.strip() and r.finish_reason not in ("length", "content_filter")
            ],
        ),
    ]
    what = {
        "length": "cut off at the token limit (finish_reason 'length')",
        "content_filter": "withheld by a content filter (finish_reason 'content_filter')",
        "empty": "empty",
    }
    for reason, policy, idx in cases:
        if not idx or policy == "return":
            continue
        msg = f"{source}: {len(idx)} of {len(results)} answer(s) {what[reason]}: conversation(s) {idx[:10]}"
        if policy == "raise":
            raise IncompleteAnswerError(msg, results, idx, reason)
        logger.warning("%s", msg)


def _read_key_file(path: str | os.PathLike[str]) -> str:
    p = Path(path).expanduser()
    try:
        key = p.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {str(p)!r}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"the API key file {str(p)!r} is empty")
    return key


def _retry_after(headers: Any) -> float | None:
    """Seconds a server asked to wait (``retry-after-ms``, ``retry-after`` seconds or HTTP date).

    A value that is none of these (``"soon"``, ``"nan"``) is no request: ``None``, and the
    usual back-off applies.
    """
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            wait = float(ms) / 1000
            if not math.isnan(wait):
                return max(0.0, wait)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        wait = float(value)
        return None if math.isnan(wait) else max(0.0, wait)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value) if value.strip() else None
    except (TypeError, ValueError, IndexError):  # Python 3.10+ raises on what is not a date
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:  # HTTP dates are GMT
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, parsed.timestamp() - time.time())


_OPENAI_PARAMS = (
    "temperature",
    "top_p",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "response_format",
    "reasoning_effort",
)
# Not in the OpenAI API but accepted by vLLM, SGLang and llama.cpp: sent in the JSON body.
_SERVER_PARAMS = ("top_k", "min_p", "repetition_penalty")


def _deadline_transport(inner: Any, timeout: float) -> Any:
    """An httpx transport that fails a request whose response is not complete within ``timeout``."""
    import httpx2 as httpx

    class _Stream(httpx.SyncByteStream):
        def __init__(self, stream: Any, deadline: float, request: Any) -> None:
            self._stream = stream
            self._deadline = deadline
            self._request = request

        def __iter__(self) -> Any:
            for chunk in self._stream:
                if time.monotonic() > self._deadline:
                    raise httpx.ReadTimeout(
                        f"the response was not complete within {timeout:g}s", request=self._request
                    )
                yield chunk

        def close(self) -> None:
            self._stream.close()

    class _Transport(httpx.BaseTransport):
        def handle_request(self, request: Any) -> Any:
            deadline = time.monotonic() + timeout
            resp = inner.handle_request(request)
            return httpx.Response(
                status_code=resp.status_code,
                headers=resp.headers,
                stream=_Stream(resp.stream, deadline, request),
                extensions=resp.extensions,
            )

        def close(self) -> None:
            inner.close()

    return _Transport()


class _MalformedBody(Exception):
    """A 200 answer whose body is not a chat completion."""


class _ErrorBody(Exception):
    """A 200 answer whose body is an error object (``{"error": {...}}``) instead of an answer.

    Proxies and some servers report a refused request this way; the server's own message is
    kept, and only a code that says "try again" (429, 5xx) is retried.
    """

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _error_body(resp: Any) -> _ErrorBody | None:
    extra = getattr(resp, "model_extra", None) or {}
    err = extra.get("error")
    if not err:
        return None
    if isinstance(err, dict):
        message = str(err.get("message") or err)
        code = err.get("code") or err.get("status")
    else:
        message, code = str(err), None
    try:
        status = int(code)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        status = 0
    return _ErrorBody(message[:300], status == 429 or status >= 500)


def _content_text(content: Any) -> tuple[str, str | None]:
    """The answer text, and any reasoning, of a message's ``content``.

    ``content`` is a string, ``None``, or (Mistral, some proxies) a list of parts such as
    ``{"type": "text", "text": ...}`` and ``{"type": "thinking", ...}``: text parts are joined,
    thinking parts are reasoning, never answer text.

    Raises:
        _MalformedBody: Content of another kind.
    """
    if content is None:
        return "", None
    if isinstance(content, str):
        return content, None
    if isinstance(content, list):
        text: list[str] = []
        thought: list[str] = []
        for part in content:
            if isinstance(part, str):
                text.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "output_text"):
                text.append(str(part.get("text") or ""))
            elif isinstance(part, dict) and part.get("type") in ("thinking", "reasoning"):
                inner = part.get("thinking", part.get("text", ""))
                if isinstance(inner, list):
                    inner = "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in inner)
                thought.append(str(inner or ""))
            else:
                raise _MalformedBody(f"a content part of unknown kind: {str(part)[:120]!r}")
        return "".join(text), ("".join(thought) or None)
    raise _MalformedBody(f"content is {type(content).__name__}, not text: {str(content)[:120]!r}")


class OpenAIChatModel:
    """A client for any OpenAI-compatible ``/v1/chat/completions`` endpoint, on the ``openai`` SDK.

    vLLM, SGLang, Ollama, llama.cpp's server and hosted APIs all speak this protocol. The
    conversations of one call are sent concurrently; the client holds one connection pool and
    one concurrency limit (``concurrency`` requests in flight), shared by every thread using it.

    Each conversation is a separate request and fails alone: one refused request never discards
    the answers already received. Timeouts, connection errors, HTTP 408/409/429 and 5xx and
    malformed bodies are retried (``max_retries`` times); a ``Retry-After`` header is waited out
    exactly (up to ``max_retry_wait``), otherwise the wait is ``backoff * 2**k`` plus jitter.
    HTTP 401/403/404 raise :class:`~zjulab.common.errors.ConfigError` (wrong key, model name or
    URL) and stop the requests not yet sent; other 4xx are not retried.

    The API key is sent only to ``base_url``, as an ``Authorization: Bearer`` header; it never
    appears in this object's repr, in log records or in error messages.

    Args:
        model: Model name sent in the request body.
        base_url: Server root, e.g. ``http://127.0.0.1:8000/v1`` (``/v1`` is appended if absent).
        api_key: Bearer token. Without it: ``api_key_file``, else the environment variable
            ``api_key_env`` (``$OPENAI_API_KEY``), else no key (local servers).
        api_key_file: File holding the key (surrounding whitespace and the newline removed).
        api_key_env: Environment variable read when neither of the above is given.
        timeout: Seconds one request may take from connecting to its last byte.
        max_retries: Retries after the first attempt.
        backoff: Base delay of the exponential back-off, in seconds.
        max_backoff: Longest back-off wait.
        max_retry_wait: Longest ``Retry-After`` the client waits; a server asking for more fails
            that conversation at once.
        concurrency: Requests in flight at once, across all threads using this client.
        max_new_tokens: Default answer length (``max_tokens`` in the request).
        max_tokens_field: The request field that carries the answer length: ``"max_tokens"``
            (every OpenAI-compatible server) or ``"max_completion_tokens"`` (OpenAI's reasoning
            models refuse ``max_tokens``). A server that refuses ``max_tokens`` with HTTP 400 and
            names ``max_completion_tokens`` is asked again with it, once, and the client keeps
            using it (logged).
        extra_body: Extra JSON fields sent with every request.
        json_schema: The server supports ``response_format={"type": "json_schema", ...}``
            (vLLM, SGLang, OpenAI); :func:`~zjulab.common.structured.generate_structured` then
            constrains answers to the schema.
        on_truncation: What ``generate`` does with an answer cut off at the token limit:
            ``"warn"`` (log a warning, return it), ``"raise"`` (:class:`IncompleteAnswerError`)
            or ``"return"`` (return it silently).
        on_content_filter: The same for ``finish_reason == "content_filter"``.
        on_empty: The same for an empty answer.
        on_error: What ``generate`` does when conversations got no answer: ``"raise"`` the first
            error, with ``.results`` (every :class:`ChatResult`) and ``.failed`` (positions)
            attached, or ``"return"`` ``None`` in their place.
        default_headers: Extra HTTP headers sent with every request.

    The client can be pickled (``multiprocessing``, ``datasets.map(num_proc=...)``): the copy
    holds the settings and the API key, opens its own connection pool and starts its own
    :attr:`usage` at zero.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key: str | None = None,
        api_key_file: str | os.PathLike[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_wait: float = 120.0,
        concurrency: int = 8,
        max_new_tokens: int = 512,
        max_tokens_field: str = "max_tokens",
        extra_body: dict[str, Any] | None = None,
        json_schema: bool = False,
        on_truncation: Policy = "warn",
        on_content_filter: Policy = "warn",
        on_empty: Policy = "warn",
        on_error: OnError = "raise",
        default_headers: dict[str, str] | None = None,
    ) -> None:
        if not timeout or timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if concurrency <= 0:
            raise ConfigError(f"concurrency must be positive, got {concurrency}")
        if backoff < 0 or max_backoff < 0 or max_retry_wait < 0:
            raise ConfigError("backoff, max_backoff and max_retry_wait must be >= 0")
        if max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.max_tokens_field = _check_policy(
            "max_tokens_field", max_tokens_field, ("max_tokens", "max_completion_tokens")
        )
        self.on_truncation = _check_policy("on_truncation", on_truncation)
        self.on_content_filter = _check_policy("on_content_filter", on_content_filter)
        self.on_empty = _check_policy("on_empty", on_empty)
        self.on_error = _check_policy("on_error", on_error, ("raise", "return"))
        url = str(base_url).rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"base_url must be an http:// or https:// URL with a host, got {base_url!r}")
        if not url.endswith("/v1"):
            url += "/v1"
        self.model_id = model
        self.base_url = url
        if api_key is not None:
            key = api_key.strip()
        elif api_key_file is not None:
            key = _read_key_file(api_key_file)
        else:
            key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        self._api_key = key
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_wait = max_retry_wait
        self.concurrency = concurrency
        self.max_new_tokens = max_new_tokens
        self.extra_body = dict(extra_body or {})
        self.json_schema = json_schema
        self.default_headers = dict(default_headers or {})
        self.usage = Usage()
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._client_lock = threading.Lock()
        self._client: Any = None
        self._warned_choices = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_slots", "_client_lock", "_client", "_warned_choices"):
            state.pop(key, None)
        state["usage"] = Usage()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    # -- secrets ------------------------------------------------------------------------------

    @property
    def has_api_key(self) -> bool:
        """Whether a key will be sent."""
        return bool(self._api_key)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def __repr__(self) -> str:
        return (
            f"OpenAIChatModel(model={self.model_id!r}, base_url={self.base_url!r}, "
            f"api_key={'***' if self._api_key else None}, concurrency={self.concurrency})"
        )

    # -- client -------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client (created on first use; one connection pool)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import httpx2 as httpx
                    import openai

                    limits = httpx.Limits(
                        max_connections=self.concurrency, max_keepalive_connections=self.concurrency
                    )
                    transport = _deadline_transport(httpx.HTTPTransport(limits=limits), self.timeout)
                    http = openai.DefaultHttpxClient(transport=transport, timeout=self.timeout)
                    headers: dict[str, Any] = dict(self.default_headers)
                    self._client = openai.OpenAI(
                        api_key=self._api_key or "no-key",
                        base_url=self.base_url,
                        timeout=self.timeout,
                        max_retries=0,  # retries are ours: Retry-After, usage and logs stay exact
                        http_client=http,
                        default_headers=headers or None,
                    )
        return self._client

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> OpenAIChatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------

    def _kwargs(self, conversation: Conversation, opts: dict[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model_id,
            "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
            "max_tokens": opts["max_new_tokens"],
        }
        extra = dict(self.extra_body)
        for key, value in opts.items():
            if key in ("max_new_tokens", "extra_body") or value is None:
                continue
            if key in _SERVER_PARAMS:
                extra[key] = value
            else:
                kw[key] = value
        extra.update(opts.get("extra_body") or {})
        if extra:
            kw["extra_body"] = extra
        return kw

    def _error(self, exc: BaseException) -> tuple[BaseException, bool, float | None]:
        """Map an SDK exception to (zjulab error, retryable, server-requested wait)."""
        import openai

        where = f"{self.base_url} (model {self.model_id!r})"
        if isinstance(exc, openai.APITimeoutError):
            return RemoteModelError(f"{where}: timed out after {self.timeout:g}s"), True, None
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return (
                RemoteModelError(f"{where}: connection failed ({type(cause).__name__}: {cause})"),
                True,
                None,
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            try:
                body = exc.response.text[:300]
            except Exception:
                body = ""
            detail = self._redact(f"HTTP {status}: {body}")
            if status in (401, 403):
                return ConfigError(f"{where} rejected the API key: {detail}"), False, None
            if status == 404:
                return ConfigError(f"{where}: no such model or route: {detail}"), False, None
            if status in (408, 409, 429) or status >= 500:
                err = RemoteModelError(f"{where}: {detail}")
                err.status = status  # type: ignore[attr-defined]
                return err, True, _retry_after(exc.response.headers)
            err = RemoteModelError(f"{where} refused the request: {detail}")
            err.status = status  # type: ignore[attr-defined]
            return err, False, None
        if isinstance(exc, _ErrorBody):
            return (
                RemoteModelError(f"{where} answered HTTP 200 with an error: {self._redact(str(exc))}"),
                exc.retryable,
                None,
            )
        if isinstance(exc, (_MalformedBody, json.JSONDecodeError, UnicodeDecodeError)):
            # a body that is not UTF-8 used to escape as UnicodeDecodeError, losing the batch
            return RemoteModelError(f"{where} returned a malformed body: {exc}"), True, None
        if isinstance(exc, openai.OpenAIError):
            return RemoteModelError(f"{where}: {self._redact(str(exc))}"), False, None
        # anything else stays with its conversation: one odd answer never discards the batch
        return (
            RemoteModelError(f"{where}: unexpected {type(exc).__name__}: {self._redact(str(exc))}"),
            False,
            None,
        )

    def _parse(self, resp: Any) -> ChatResult:
        try:
            return self._parse_body(resp)
        except (_MalformedBody, _ErrorBody):
            raise
        except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise _MalformedBody(f"{type(exc).__name__}: {exc}") from None

    def _parse_body(self, resp: Any) -> ChatResult:
        if isinstance(resp, (str, bytes)):
            raise _MalformedBody(f"not a chat completion: {str(resp)[:200]!r}")
        choices = getattr(resp, "choices", None)
        if not choices:
            server_error = _error_body(resp)
            if server_error is not None:
                raise server_error
            raise _MalformedBody("the body has no choices")
        if len(choices) > 1 and not self._warned_choices:
            self._warned_choices = True
            logger.warning(
                "%s answered with %d choices to a request for one; the first is used",
                self.base_url,
                len(choices),
            )
        choice = choices[0]
        if choice.finish_reason is not None and not isinstance(choice.finish_reason, str):
            raise _MalformedBody(f"finish_reason is {choice.finish_reason!r}, not a string")
        message = choice.message
        if message is None:
            raise _MalformedBody("the first choice has no message")
        extra = getattr(message, "model_extra", None) or {}
        text, thought = _content_text(message.content)
        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or thought
        refusal = getattr(message, "refusal", None)
        usage = getattr(resp, "usage", None)
        return ChatResult(
            text=text,
            finish_reason=choice.finish_reason,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            reasoning=str(reasoning) if reasoning else None,
            refusal=str(refusal) if refusal else None,
        )

    def _auth(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._api_key:
            return kwargs
        import openai

        # no key: send no Authorization header at all, not a placeholder
        return {**kwargs, "extra_headers": {"Authorization": openai.omit}}

    def _call(
        self, send: Any, stop_event: threading.Event | None = None, what: str = "request"
    ) -> tuple[Any, BaseException | None, int]:
        """Run ``send()`` under the concurrency limit, retrying what can be retried.

        Returns:
            ``(value, None, attempts)`` on success, ``(None, error, attempts)`` otherwise.
        """
        last: BaseException | None = None
        attempt = 0
        for attempt in range(1, self.max_retries + 2):
            if stop_event is not None and stop_event.is_set():
                err = last or RemoteModelError(
                    f"{self.base_url}: not sent, an earlier request failed fatally"
                )
                return None, err, attempt - 1
            with self._slots:
                try:
                    return send(), None, attempt
                except Exception as exc:
                    err, retryable, wait = self._error(exc)
                    err.__cause__ = None
                    err.args = tuple(self._redact(str(a)) for a in err.args)
                    last = err
            if not retryable or attempt > self.max_retries:
                break
            if wait is not None and wait > self.max_retry_wait:
                last = RemoteModelError(
                    f"{err}; the server asked to wait {wait:g}s, more than max_retry_wait="
                    f"{self.max_retry_wait:g}s"
                )
                break
            delay = self._wait(attempt, wait)
            logger.warning(
                "%s to %s failed (%s); retry %d of %d in %.2fs",
                what,
                self.base_url,
                err,
                attempt,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        assert last is not None
        if isinstance(last, ConfigError):
            if stop_event is not None:
                stop_event.set()
        elif attempt > 1:
            last.args = (f"no answer after {attempt} attempts; last error: {last}",)
        return None, last, attempt

    def _wait(self, attempt: int, requested: float | None) -> float:
        if requested is not None:
            return requested
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay + random.uniform(0, delay / 4)

    def _with_length_field(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        field_name = self.max_tokens_field
        if field_name == "max_tokens":
            return kwargs
        out = dict(kwargs)
        out[field_name] = out.pop("max_tokens")
        return out

    def _asks_for_completion_tokens(self, exc: Exception, sent: dict[str, Any]) -> bool:
        """A 400 refusing ``max_tokens`` that names ``max_completion_tokens`` (OpenAI o-series)."""
        import openai

        if not isinstance(exc, openai.BadRequestError) or "max_tokens" not in sent:
            return False
        try:
            body = exc.response.text
        except Exception:
            body = str(exc)
        low = body.lower()
        # "Unsupported parameter: 'max_tokens' ... Use 'max_completion_tokens' instead." (OpenAI);
        # vLLM's "'max_tokens' or 'max_completion_tokens' is too large" is not a refusal of the name
        if "max_completion_tokens" not in low or not ("unsupported" in low or "not supported" in low):
            return False
        if self.max_tokens_field != "max_completion_tokens":
            self.max_tokens_field = "max_completion_tokens"
            logger.warning(
                "%s (model %r) refuses max_tokens; sending max_completion_tokens from now on",
                self.base_url,
                self.model_id,
            )
        return True

    def _one(self, kwargs: dict[str, Any], stop_event: threading.Event) -> ChatResult:
        def send() -> ChatResult:
            sent = self._with_length_field(kwargs)
            try:
                return self._parse(self.client.chat.completions.create(**self._auth(sent)))
            except Exception as exc:
                if not self._asks_for_completion_tokens(exc, sent):
                    raise
            sent = self._with_length_field(kwargs)
            return self._parse(self.client.chat.completions.create(**self._auth(sent)))

        result, err, attempts = self._call(send, stop_event, "chat")
        if err is not None:
            self.usage.add(0, 0, 0, failed=1, retries=max(0, attempts - 1))
            return ChatResult(error=err, attempts=attempts)
        result.attempts = attempts
        self.usage.add(1, result.prompt_tokens, result.completion_tokens, retries=attempts - 1)
        return result  # type: ignore[no-any-return]

    _ACCEPTED = ("max_new_tokens", *_OPENAI_PARAMS, *_SERVER_PARAMS, "extra_body")

    def generate_results(self, conversations: Sequence[Conversation], **sampling: Any) -> list[ChatResult]:
        """Answer each conversation; failures are returned in the results, never raised.

        Keywords: ``max_new_tokens``/``max_tokens``, ``temperature``, ``top_p``, ``stop``,
        ``seed``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``, ``logprobs``,
        ``top_logprobs``, ``user``, ``response_format``, ``reasoning_effort``; ``top_k``,
        ``min_p``, ``repetition_penalty`` (sent in the body for vLLM/SGLang/llama.cpp);
        ``extra_body``. Anything else raises :class:`ConfigError`.

        Raises:
            InputError: A malformed conversation.
            ConfigError: An unknown or invalid sampling option.
        """
        validate_conversations(conversations)
        opts = normalize_sampling(sampling, self.max_new_tokens, self._ACCEPTED)
        kwargs = [self._kwargs(c, opts) for c in conversations]
        stop_event = threading.Event()
        if len(kwargs) <= 1 or self.concurrency == 1:
            return [self._one(k, stop_event) for k in kwargs]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(kwargs))) as pool:
            return list(pool.map(lambda k: self._one(k, stop_event), kwargs))

    def generate(
        self, conversations: Sequence[Conversation], *, on_error: OnError | None = None, **sampling: Any
    ) -> list[str]:
        """Answer each conversation (see the class docstring for the policies).

        Raises:
            InputError: A malformed conversation.
            ConfigError: A bad sampling option; or HTTP 401/403/404 (with ``.results``).
            RemoteModelError: A conversation got no answer and ``on_error="raise"``; the
                exception carries ``.results`` (every :class:`ChatResult`, answers included) and
                ``.failed`` (the positions without an answer).
            IncompleteAnswerError: An answer was cut off/filtered/empty under policy ``"raise"``.
        """
        policy = _check_policy("on_error", on_error or self.on_error, ("raise", "return"))
        results = self.generate_results(conversations, **sampling)
        return finish(
            results,
            on_error=policy,
            on_truncation=self.on_truncation,
            on_content_filter=self.on_content_filter,
            on_empty=self.on_empty,
            source=f"{self.base_url} (model {self.model_id!r})",
        )

    async def agenerate_results(
        self, conversations: Sequence[Conversation], **sampling: Any
    ) -> list[ChatResult]:
        """:meth:`generate_results` for asyncio code.

        It runs in a worker thread, under the same concurrency limit and connection pool as the
        synchronous calls.
        """
        import asyncio

        return await asyncio.to_thread(self.generate_results, conversations, **sampling)

    async def agenerate(
        self, conversations: Sequence[Conversation], *, on_error: OnError | None = None, **sampling: Any
    ) -> list[str]:
        """:meth:`generate` for asyncio code (see :meth:`agenerate_results`)."""
        import asyncio

        return await asyncio.to_thread(self.generate, conversations, on_error=on_error, **sampling)


def finish(
    results: list[ChatResult],
    *,
    on_error: str,
    on_truncation: str,
    on_content_filter: str,
    on_empty: str,
    source: str,
) -> list[Any]:
    """Turn results into strings under the error and finish-reason policies."""
    failed = [i for i, r in enumerate(results) if not r.ok]
    if failed and on_error == "raise":
        # a wrong key, model or URL explains the whole batch: raise that one first
        fatal = [i for i in failed if isinstance(results[i].error, ConfigError)]
        pick = (fatal or failed)[0]
        first = results[pick].error
        assert first is not None
        answered = len(results) - len(failed)
        first.args = (
            f"{len(failed)} of {len(results)} conversation(s) got no answer (#{pick}): "
            f"{first}; the {answered} answer(s) received are in .results",
        )
        first.results = results  # type: ignore[attr-defined]
        first.failed = failed  # type: ignore[attr-defined]
        raise first
    apply_finish_policy(
        results,
        on_truncation=on_truncation,
        on_content_filter=on_content_filter,
        on_empty=on_empty,
        source=source,
    )
    return [r.text if r.ok else None for r in results]
