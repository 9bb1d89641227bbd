"""A text encoder served over HTTP: any OpenAI-compatible ``/v1/embeddings`` endpoint.

vLLM (``--task embed``), Hugging Face TEI, Ollama, llama.cpp and OpenAI all answer this route.
:class:`OpenAIEncoder` satisfies :class:`~zjulab.common.protocols.TextEncoder`, so it is
accepted wherever a local encoder is, and needs neither torch nor transformers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from zjulab.common.chat import OpenAIChatModel, _error_body, _MalformedBody
from zjulab.common.errors import ConfigError, InputError, RemoteModelError
from zjulab.common.text import check_text

__all__ = ["OpenAIEncoder"]

logger = logging.getLogger(__name__)


class OpenAIEncoder:
    """Encode texts with a served embedding model.

    Texts are sent in batches of at most ``max_batch`` (TEI's default limit is 32 inputs per
    request); a server answering 413 (payload too large) gets the batch in halves, and the
    smaller size is kept. Batches run concurrently (``concurrency`` at a time). Timeouts,
    connection errors, 408/409/429/5xx and malformed bodies are retried with exponential
    back-off, ``Retry-After`` honoured, exactly as :class:`~zjulab.common.chat.OpenAIChatModel`
    does (same keyword arguments, same handling of the API key).

    Every answer is checked: one vector per input, matched by ``index``, all of dimension
    ``dim``, finite numbers; anything else is a :class:`~zjulab.common.errors.RemoteModelError`.

    Args:
        model: Model name sent in the request.
        base_url: Server root, e.g. ``http://127.0.0.1:8080/v1``.
        dim: Expected dimension. ``None``: learnt from the first answer (reading :attr:`dim`
            before any ``encode`` sends one probe request). A server whose vectors have another
            size raises :class:`~zjulab.common.errors.ConfigError`.
        normalize: L2-normalise the rows (the :class:`TextEncoder` contract). ``False`` returns
            the server's vectors as they are.
        dimensions: Ask the server to truncate vectors (OpenAI ``text-embedding-3``, Matryoshka
            models on vLLM); sent as ``dimensions``.
        max_batch: Most inputs in one request.
        concurrency: Requests in flight at once.
        **client: ``api_key``, ``api_key_file``, ``api_key_env``, ``timeout``, ``max_retries``,
            ``backoff``, ``max_backoff``, ``max_retry_wait``, ``default_headers``: see
            :class:`~zjulab.common.chat.OpenAIChatModel`.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        dim: int | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        max_batch: int = 32,
        concurrency: int = 4,
        **client: Any,
    ) -> None:
        if dim is not None and dim <= 0:
            raise ConfigError(f"dim must be positive, got {dim}")
        if dimensions is not None and dimensions <= 0:
            raise ConfigError(f"dimensions must be positive, got {dimensions}")
        if max_batch <= 0:
            raise ConfigError(f"max_batch must be positive, got {max_batch}")
        allowed = {
            "api_key",
            "api_key_file",
            "api_key_env",
            "timeout",
            "max_retries",
            "backoff",
            "max_backoff",
            "max_retry_wait",
            "default_headers",
        }
        unknown = sorted(set(client) - allowed)
        if unknown:
            raise ConfigError(f"unknown OpenAIEncoder option(s) {unknown}; accepted: {sorted(allowed)}")
        self._conn = OpenAIChatModel(model, base_url, concurrency=concurrency, **client)
        self.model_id = model
        self.base_url = self._conn.base_url
        self.normalize = normalize
        self.dimensions = dimensions
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.prompt_tokens = 0
        self._dim = dim if dim is not None else dimensions
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = "***" if self._conn.has_api_key else None
        return f"OpenAIEncoder(model={self.model_id!r}, base_url={self.base_url!r}, api_key={key}, dim={self._dim})"

    @property
    def dim(self) -> int:
        """Vector dimension (one probe request if no answer has told it yet)."""
        if self._dim is None:
            self.encode(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def close(self) -> None:
        """Close the connection pool."""
        self._conn.close()

    def _request(self, batch: list[str]) -> np.ndarray:
        kwargs: dict[str, Any] = {"model": self.model_id, "input": batch, "encoding_format": "float"}
        if self.dimensions is not None:
            kwargs["dimensions"] = self.dimensions

        def send() -> np.ndarray:
            resp = self._conn.client.embeddings.create(**self._conn._auth(kwargs))
            return self._parse(resp, len(batch))

        value, err, _ = self._conn._call(send, None, "embeddings request")
        if err is None:
            return value  # type: ignore[no-any-return]
        if getattr(err, "status", None) == 413 and len(batch) > 1:
            half = len(batch) // 2
            with self._lock:
                if half < self.max_batch:
                    logger.warning(
                        "%s: 413 for %d inputs; sending at most %d per request",
                        self.base_url,
                        len(batch),
                        half,
                    )
                    self.max_batch = half
            return np.concatenate([self._request(batch[:half]), self._request(batch[half:])])
        raise err

    def _parse(self, resp: Any, n: int) -> np.ndarray:
        if isinstance(resp, (str, bytes)):
            raise _MalformedBody(f"not an embeddings answer: {str(resp)[:200]!r}")
        if getattr(resp, "data", None) is None:
            server_error = _error_body(resp)
            if server_error is not None:
                raise server_error
        try:
            data = list(resp.data)
            items = [(int(d.index), d.embedding) for d in data]
        except (AttributeError, TypeError, ValueError) as exc:
            raise _MalformedBody(f"not an embeddings answer ({type(exc).__name__}: {exc})") from None
        if len(items) != n or sorted(i for i, _ in items) != list(range(n)):
            raise _MalformedBody(
                f"{len(items)} vectors (indices {sorted(i for i, _ in items)[:8]}) for {n} inputs"
            )
        items.sort(key=lambda x: x[0])
        try:
            arr = np.asarray([e for _, e in items], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise _MalformedBody(f"vectors are not lists of numbers of one length: {exc}") from None
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise _MalformedBody(f"vectors of shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise _MalformedBody("vectors hold NaN or infinite values")
        usage = getattr(resp, "usage", None)
        with self._lock:
            self.prompt_tokens += int(getattr(usage, "prompt_tokens", 0) or 0)
        return arr

    def _check_dim(self, arr: np.ndarray) -> None:
        with self._lock:
            if self._dim is None:
                self._dim = int(arr.shape[1])
        if arr.shape[1] != self._dim:
            raise ConfigError(
                f"{self.base_url} (model {self.model_id!r}) returned {arr.shape[1]}-dimensional vectors; "
                f"expected {self._dim}"
            )

    def encode(self, texts: Sequence[str], batch_size: int = 32, **kwargs: Any) -> np.ndarray:
        """Encode ``texts`` to float32 rows of dimension :attr:`dim` (unit norm if ``normalize``).

        Args:
            texts: Non-empty strings (servers reject empty inputs).
            batch_size: Inputs per request, capped at ``max_batch``.
            **kwargs: None are accepted (an unknown option is refused, not ignored).

        Raises:
            InputError: A text that is not a string or is empty (its index is named).
            RemoteModelError: A batch failed after every retry, or its answer was malformed.
            ConfigError: Wrong model/URL/key (HTTP 401/403/404), or vectors of another dimension.
        """
        if kwargs:
            raise ConfigError(f"unknown encode option(s) {sorted(kwargs)}")
        if isinstance(texts, str):
            raise InputError("encode() takes a list of texts, not a single string")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"text {i} is {type(t).__name__}, not str")
            if not t.strip():
                raise InputError(f"text {i} is empty; embedding servers reject empty inputs")
            check_text(t, f"text {i}")
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        size = min(batch_size, self.max_batch)
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(batches) == 1 or self.concurrency == 1:
            parts = [self._request(b) for b in batches]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batches))) as pool:
                parts = list(pool.map(self._request, batches))
        for p in parts:
            self._check_dim(p)
        out = np.concatenate(parts).astype(np.float32, copy=False)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            if (norms == 0).any():
                bad = int(np.flatnonzero(norms[:, 0] == 0)[0])
                raise RemoteModelError(f"{self.base_url} returned a zero vector for text {bad}")
            out = out / norms
        return out
