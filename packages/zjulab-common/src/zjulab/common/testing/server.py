"""A minimal OpenAI-compatible chat server on 127.0.0.1 for tests and local demos."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from zjulab.common.protocols import ChatModel

__all__ = ["ChatServer"]


class ChatServer:
    """Serve a :class:`~zjulab.common.protocols.ChatModel` at ``/v1/chat/completions``.

    Fault injection for client tests: :meth:`fail_next` answers the next ``n`` requests with an
    HTTP error, and ``delay`` sleeps before answering (to trigger client timeouts).

    Args:
        model: The model answering requests.
        host: Interface to bind (loopback only by default).

    Example:
        >>> with ChatServer(model) as server:  # doctest: +SKIP
        ...     client = OpenAIChatModel("tiny", base_url=server.url)
    """

    def __init__(self, model: ChatModel, host: str = "127.0.0.1") -> None:
        self.model = model
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                with server._lock:
                    server.requests.append(body)
                    failure = server._failures.pop(0) if server._failures else None
                if server.delay:
                    time.sleep(server.delay)
                if failure is not None:
                    self._send(failure, {"error": {"message": "injected failure"}})
                    return
                sampling = {
                    "max_new_tokens": body.get("max_tokens", 64),
                    "temperature": body.get("temperature", 0.0),
                }
                text = server.model.generate([body["messages"]], **sampling)[0]
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        # join in-flight handlers on close, so no request outlives the server (or the interpreter)
        self._httpd.daemon_threads = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL including ``/v1``."""
        host, port = self._httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}/v1"

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with HTTP ``status``."""
        with self._lock:
            self._failures.extend([status] * n)

    def start(self) -> ChatServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
