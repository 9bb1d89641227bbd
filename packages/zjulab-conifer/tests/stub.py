"""A programmable OpenAI-compatible stub for the pipeline's server tests.

Answers come from a reply function of the conversation (``fakes.strong_reply`` by default).
Faults: ``down`` (every request 503), ``refuse(pred)`` (HTTP 400 for matching prompts),
``malformed(pred)`` (a 200 whose body is not a completion). It counts every request by its
messages and the most requests it ever had in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .fakes import strong_reply


class StubServer:
    def __init__(self, reply=strong_reply, latency: float = 0.0) -> None:
        self.reply = reply
        self.latency = latency
        self.down = False
        self._refuse = None
        self._malformed = None
        self.calls: Counter[str] = Counter()  # messages JSON -> requests seen
        self.bodies: list[dict] = []
        self.answered: Counter[str] = Counter()  # messages JSON -> 200 answers sent
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = json.dumps(body["messages"], sort_keys=True)
                with stub._lock:
                    stub.bodies.append(body)
                    stub.calls[key] += 1
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    if stub.latency:
                        time.sleep(stub.latency)
                    text = body["messages"][-1]["content"]
                    if stub.down:
                        self._send(503, b'{"error": {"message": "down"}}')
                        return
                    if stub._refuse is not None and stub._refuse(text):
                        self._send(400, b'{"error": {"message": "bad request"}}')
                        return
                    if stub._malformed is not None and stub._malformed(text):
                        self._send(200, b'{"choices": "nope"')
                        return
                    answer = stub.reply(body["messages"])
                    out = {
                        "id": "x",
                        "object": "chat.completion",
                        "model": body.get("model", ""),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                    with stub._lock:
                        stub.answered[key] += 1
                    self._send(200, json.dumps(out).encode())
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def refuse(self, pred) -> None:
        self._refuse = pred

    def malformed(self, pred) -> None:
        self._malformed = pred

    def total(self) -> int:
        return sum(self.calls.values())

    def __enter__(self) -> StubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
