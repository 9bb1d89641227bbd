"""A programmable OpenAI-compatible server on 127.0.0.1 for tests and local demos.

:class:`ChatServer` answers ``/v1/chat/completions`` with a :class:`ChatModel`, ``/v1/embeddings``
with a :class:`TextEncoder` and ``/v1/models`` with the names it serves, the way vLLM and
OpenAI answer: real ``finish_reason`` and token usage, ``stop``/``seed``/``top_p``/``n``
honoured, 404 for an unknown model, 500 with a JSON error body when the model raises. Faults
can be scripted per request, so client libraries can test their outage handling against it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from zjulab.common.protocols import ChatModel, TextEncoder

__all__ = ["ChatServer", "Fault", "RequestRecord"]


@dataclass
class Fault:
    """One scripted misbehaviour of :class:`ChatServer`.

    Attributes:
        status: HTTP status sent (200 with ``body`` sends a malformed success).
        retry_after: ``Retry-After`` header value in seconds, if any (a string is sent as it is:
            an HTTP date, or garbage a misbehaving server sends).
        body: Raw bytes (or a dict, sent as JSON) replacing the normal body. ``None`` sends the
            normal answer for status 200 and an OpenAI-style JSON error otherwise.
        delay: Seconds to wait before sending anything.
        drip: Seconds to wait between each 16-byte piece of the body (a trickling response).
        route: ``"chat"``, ``"embeddings"`` or ``None`` (the next request of any route).
        message: Error message of the JSON error body.
    """

    status: int = 500
    retry_after: float | str | None = None
    body: bytes | dict[str, Any] | None = None
    delay: float = 0.0
    drip: float = 0.0
    route: str | None = None
    message: str = "injected failure"


@dataclass
class RequestRecord:
    """One request as the server saw it.

    Attributes:
        route: ``"chat"``, ``"embeddings"``, ``"models"`` or the raw path.
        body: The parsed JSON body (``{}`` for GET).
        headers: Request headers (lower-case names).
        arrived: ``time.monotonic()`` when the request arrived.
        status: Status sent back.
        client: ``(host, port)`` of the connection (distinct ports = distinct connections).
    """

    route: str
    body: dict[str, Any]
    headers: dict[str, str]
    arrived: float
    status: int = 0
    client: tuple[str, int] = ("", 0)
    finished: float = 0.0


@dataclass
class _Rule:
    predicate: Callable[[dict[str, Any]], bool]
    fault: Fault
    times: int | None


def _usage_of(result: Any) -> tuple[int, int]:
    return int(getattr(result, "prompt_tokens", 0) or 0), int(getattr(result, "completion_tokens", 0) or 0)


class ChatServer:
    """Serve a chat model (and optionally an encoder) over the OpenAI HTTP API.

    Routes:
        ``POST /v1/chat/completions``: ``messages``, ``max_tokens`` (or
        ``max_completion_tokens``), ``temperature``, ``top_p``, ``stop``, ``seed`` and ``n`` are
        passed to the model (choice ``k`` of ``n`` uses ``seed + k``). ``finish_reason`` and
        ``usage`` are the model's own (from its ``generate_results`` when it has one, which
        :class:`~zjulab.common.chat.TransformersChatModel` and
        :class:`~zjulab.common.testing.ScriptedChatModel` do; otherwise whitespace-separated
        word counts and ``"stop"``). An unknown ``model`` gets 404, a bad body 400, a model that
        raises 500 with ``{"error": {"message", "type"}}``; ``stream: true`` gets 400 (not
        implemented, rather than a non-streamed answer the client would misread).
        ``POST /v1/embeddings``: ``input`` (string or list), ``model``; answers
        ``{"data": [{"embedding", "index"}], "usage"}`` from ``encoder``. More than
        ``max_batch`` inputs get 413.
        ``GET /v1/models``: the served names.

    Fault injection (each thread-safe, consumed in order):
        :meth:`fail_next` scripts the next ``n`` requests (any status, ``Retry-After``, a
        malformed or custom body, a delay, a trickling body); :meth:`fail_if` fails every request
        whose body matches a predicate (e.g. one poisoned conversation in a batch);
        :attr:`delay` slows every request.

    Observation:
        :attr:`requests` (request bodies in arrival order), :attr:`log` (:class:`RequestRecord`
        with headers, arrival time, status and connection), :attr:`in_flight` and
        :attr:`max_in_flight` (peak concurrency), :attr:`connections` (distinct connections).

    Args:
        model: The chat model answering requests (``None``: the chat route answers 404).
        encoder: The encoder answering ``/v1/embeddings`` (``None``: 404).
        models: Model names served; defaults to ``[model.model_id]`` (and the encoder's).
        host: Interface to bind (loopback only by default).
        max_batch: Most inputs one embeddings request may carry.

    Example:
        >>> with ChatServer(model, models=["tiny"]) as server:  # doctest: +SKIP
        ...     server.fail_next(1, status=429, retry_after=0.2)
        ...     client = OpenAIChatModel("tiny", base_url=server.url)
        ...     client.generate([[{"role": "user", "content": "hi"}]])
    """

    def __init__(
        self,
        model: ChatModel | None = None,
        host: str = "127.0.0.1",
        *,
        encoder: TextEncoder | None = None,
        models: Sequence[str] | None = None,
        max_batch: int = 64,
    ) -> None:
        self.model = model
        self.encoder = encoder
        names = list(models) if models is not None else []
        if models is None:
            names += [m.model_id for m in (model, encoder) if m is not None]
        self.models = names
        self.max_batch = max_batch
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.log: list[RequestRecord] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._faults: list[Fault] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: clients can reuse connections

            def log_message(self, format: str, *args: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._conns.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._conns.discard(self.connection)
                super().finish()

            def _send(
                self,
                status: int,
                body: dict[str, Any] | bytes,
                *,
                headers: dict[str, str] | None = None,
                drip: float = 0.0,
            ) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self._record.status = status
                try:
                    self.end_headers()
                    if drip > 0:
                        for i in range(0, len(data), 16):
                            self.wfile.write(data[i : i + 16])
                            self.wfile.flush()
                            time.sleep(drip)
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                    self.close_connection = True

            def _error(
                self, status: int, message: str, kind: str, headers: dict[str, str] | None = None
            ) -> None:
                self._send(
                    status, {"error": {"message": message, "type": kind, "code": status}}, headers=headers
                )

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def _handle(self, method: str) -> None:
                path = self.path.rstrip("/")
                route = (
                    "chat"
                    if path.endswith("/chat/completions")
                    else "embeddings"
                    if path.endswith("/embeddings")
                    else "models"
                    if path.endswith("/models")
                    else path
                )
                length = int(self.headers.get("Content-Length", 0) or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._record = RequestRecord(
                    route,
                    {},
                    headers,
                    time.monotonic(),
                    client=tuple(self.client_address[:2]),  # type: ignore[arg-type]
                )
                try:
                    body = json.loads(raw or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("not an object")
                except ValueError:
                    body = None
                with server._lock:
                    self._record.body = body if body is not None else {}
                    server.requests.append(self._record.body)
                    server.log.append(self._record)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    fault = server._take_fault(route, self._record.body)
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    if fault is not None and fault.delay:
                        time.sleep(fault.delay)
                    if fault is not None and (fault.status != 200 or fault.body is not None):
                        extra = {}
                        if fault.retry_after is not None:
                            ra = fault.retry_after
                            extra["Retry-After"] = ra if isinstance(ra, str) else f"{ra:g}"
                        if fault.body is not None:
                            self._send(fault.status, fault.body, headers=extra, drip=fault.drip)
                        else:
                            self._error(fault.status, fault.message, "injected", extra)
                        return
                    drip = fault.drip if fault is not None else 0.0
                    if route == "models" and method == "GET":
                        self._send(
                            200,
                            {"object": "list", "data": [{"id": n, "object": "model"} for n in server.models]},
                        )
                    elif method != "POST" or route not in ("chat", "embeddings"):
                        self._error(404, f"no route {method} {self.path}", "not_found")
                    elif body is None:
                        self._error(400, "the body is not a JSON object", "invalid_request_error")
                    elif body.get("model") not in server.models:
                        self._error(
                            404,
                            f"The model `{body.get('model')}` does not exist; served: {server.models}",
                            "not_found",
                        )
                    elif route == "chat":
                        self._chat(body, drip)
                    else:
                        self._embeddings(body, drip)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                        self._record.finished = time.monotonic()

            def _chat(self, body: dict[str, Any], drip: float) -> None:
                model = server.model
                messages = body.get("messages")
                if model is None:
                    self._error(404, "this server has no chat model", "not_found")
                    return
                if not isinstance(messages, list) or not messages:
                    self._error(400, "'messages' must be a non-empty list", "invalid_request_error")
                    return
                if body.get("stream"):
                    self._error(
                        400, "this stub server does not stream; send stream=false", "invalid_request_error"
                    )
                    return
                n = int(body.get("n") or 1)
                sampling: dict[str, Any] = {
                    "max_new_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or 64,
                    "temperature": body.get("temperature", 0.0),
                }
                for key in ("top_p", "stop"):
                    if body.get(key) is not None:
                        sampling[key] = body[key]
                choices = []
                prompt_tokens = completion_tokens = 0
                try:
                    for k in range(n):
                        opts = dict(sampling)
                        if body.get("seed") is not None:
                            opts["seed"] = int(body["seed"]) + k
                        if hasattr(model, "generate_results"):
                            res = model.generate_results([messages], **opts)[0]
                            if getattr(res, "error", None) is not None:
                                raise res.error
                            text, reason = res.text, res.finish_reason or "stop"
                            p, c = _usage_of(res)
                        else:
                            text = model.generate([messages], **opts)[0]
                            reason = "stop"
                            p = sum(len(str(m.get("content", "")).split()) for m in messages)
                            c = len(text.split())
                        prompt_tokens = p  # the prompt is read once, whatever n is
                        completion_tokens += c
                        choices.append(
                            {
                                "index": k,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": reason,
                            }
                        )
                except Exception as exc:
                    self._error(500, f"{type(exc).__name__}: {exc}", "internal_error")
                    return
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(server.log)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": choices,
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                    drip=drip,
                )

            def _embeddings(self, body: dict[str, Any], drip: float) -> None:
                enc = server.encoder
                if enc is None:
                    self._error(404, "this server has no embedding model", "not_found")
                    return
                inputs = body.get("input")
                if isinstance(inputs, str):
                    inputs = [inputs]
                if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
                    self._error(400, "'input' must be a string or a list of strings", "invalid_request_error")
                    return
                if len(inputs) > server.max_batch:
                    self._error(
                        413,
                        f"{len(inputs)} inputs; at most {server.max_batch} per request",
                        "invalid_request_error",
                    )
                    return
                try:
                    vecs = enc.encode(inputs)
                except Exception as exc:
                    self._error(500, f"{type(exc).__name__}: {exc}", "internal_error")
                    return
                tokens = sum(len(t.split()) for t in inputs)
                self._send(
                    200,
                    {
                        "object": "list",
                        "model": body["model"],
                        "data": [
                            {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                            for i, v in enumerate(vecs)
                        ],
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                    },
                    drip=drip,
                )

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        # join in-flight handlers on close, so no request outlives the server (or the interpreter)
        self._httpd.daemon_threads = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _take_fault(self, route: str, body: dict[str, Any]) -> Fault | None:
        for rule in self._rules:
            if rule.fault.route in (None, route) and rule.times != 0:
                try:
                    hit = rule.predicate(body)
                except Exception:
                    hit = False
                if hit:
                    if rule.times is not None:
                        rule.times -= 1
                    return rule.fault
        for i, fault in enumerate(self._faults):
            if fault.route in (None, route):
                return self._faults.pop(i)
        return None

    @property
    def url(self) -> str:
        """Base URL including ``/v1``."""
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}/v1"

    @property
    def connections(self) -> int:
        """Distinct client connections seen so far."""
        with self._lock:
            return len({r.client for r in self.log})

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        body: bytes | dict[str, Any] | None = None,
        delay: float = 0.0,
        drip: float = 0.0,
        route: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """Script the next ``n`` requests (of ``route``, or any): see :class:`Fault`.

        ``fail_next(1, 429, retry_after=2)`` asks the client to come back in 2 s;
        ``fail_next(1, 200, body=b'{"choices": [')`` sends a malformed success;
        ``fail_next(1, 200, delay=5)`` answers normally but late; ``drip=0.1`` trickles it.
        """
        fault = Fault(status, retry_after, body, delay, drip, route, message)
        with self._lock:
            self._faults.extend(Fault(**vars(fault)) for _ in range(n))

    def fail_if(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        status: int = 400,
        *,
        times: int | None = None,
        **fault: Any,
    ) -> None:
        """Fail every request whose JSON body satisfies ``predicate`` (``times`` at most).

        Example: ``server.fail_if(lambda b: "poison" in str(b["messages"]), 400)``.
        """
        with self._lock:
            self._rules.append(_Rule(predicate, Fault(status=status, **fault), times))

    def clear(self) -> None:
        """Drop scripted faults and the request log."""
        with self._lock:
            self._faults.clear()
            self._rules.clear()
            self.requests.clear()
            self.log.clear()
            self.max_in_flight = self.in_flight

    def start(self) -> ChatServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self, grace: float = 10.0) -> None:
        """Stop serving: wait (up to ``grace`` s) for requests in flight, close every connection."""
        import socket

        self._httpd.shutdown()
        end = time.monotonic() + grace
        while self.in_flight and time.monotonic() < end:
            time.sleep(0.01)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # idle keep-alive connections would otherwise block the join below
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
