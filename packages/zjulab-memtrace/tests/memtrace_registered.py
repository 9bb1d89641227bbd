"""Top-level operations registered with ``@tracer.operation``, for re-binding tests."""

from __future__ import annotations

from zjulab.memtrace import Tracer

tracer = Tracer()
CALLS: list[str] = []


@tracer.operation("shout", outputs=("loud",))
def shout(text: str) -> str:
    CALLS.append(text)
    return text.upper()


def not_an_operation(text: str) -> str:  # a plain function: never re-bound from a file
    CALLS.append("plain:" + text)
    return text
