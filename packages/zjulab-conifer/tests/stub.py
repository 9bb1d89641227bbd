"""zjulab-common's programmable ``ChatServer`` with the switches and counters these tests use.

Answers come from a reply function of the conversation (``fakes.strong_reply`` by default).
Faults: ``down`` (every request 503), ``refuse(pred)`` (HTTP 400 for requests whose last user
message matches), ``malformed(pred)`` (a 200 whose body is not a completion). Counters: requests
per conversation (``calls``), 200 answers per conversation (``answered``), the peak number of
requests in flight (``max_in_flight``) and every request body (``bodies``).
"""

from __future__ import annotations

import json
from collections import Counter

from zjulab.common.testing import ChatServer

from .fakes import FakeModel, strong_reply

MODELS = ["stub-model", "another-model", "m", "bench"]


def _text(body) -> str:
    return str(body["messages"][-1]["content"])


class StubServer:
    def __init__(self, reply=strong_reply, latency: float = 0.0) -> None:
        self.down = False
        self._refuse = None
        self._malformed = None
        self.server = ChatServer(FakeModel(reply), models=MODELS)
        self.server.delay = latency
        self.server.fail_if(lambda b: self.down, 503, message="down")
        self.server.fail_if(lambda b: self._refuse is not None and self._refuse(_text(b)), 400)
        self.server.fail_if(
            lambda b: self._malformed is not None and self._malformed(_text(b)),
            200,
            body=b'{"choices": "nope"',
        )

    @property
    def url(self) -> str:
        return self.server.url

    def _chat(self):
        return [r for r in list(self.server.log) if r.route == "chat"]

    @property
    def bodies(self) -> list[dict]:
        return [r.body for r in self._chat()]

    @property
    def calls(self) -> Counter:
        return Counter(json.dumps(r.body["messages"], sort_keys=True) for r in self._chat())

    @property
    def answered(self) -> Counter:
        return Counter(
            json.dumps(r.body["messages"], sort_keys=True) for r in self._chat() if r.status == 200
        )

    @property
    def max_in_flight(self) -> int:
        return self.server.max_in_flight

    def refuse(self, pred) -> None:
        self._refuse = pred

    def malformed(self, pred) -> None:
        self._malformed = pred

    def total(self) -> int:
        return len(self._chat())

    def __enter__(self) -> StubServer:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()
