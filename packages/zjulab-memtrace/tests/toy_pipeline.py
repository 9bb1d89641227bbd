"""A hand-written four-step memory pipeline used by the tests."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from zjulab.memtrace import Tracer

WORD = re.compile(r"\w+")
STOP = {"what", "is", "the", "of", "a", "i", "to", "did", "does", "where", "name", "s", "and"}


def words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)} - STOP


SESSION_1 = ["Alice: I adopted a cat named Milo", "Bob: nice, I like cats"]
SESSION_2 = ["Alice: I moved to Paris last spring", "Bob: cool, Paris is lovely"]
QUESTION = "What is the name of Alice's cat?"
GOLD = "Milo"
EVIDENCE = ("Alice: I adopted a cat named Milo",)


def build(
    tracer: Tracer,
    *,
    drop: Sequence[str] = (),
    drop_in: int | None = None,
    garble_answer: bool = False,
    counter: dict[str, int] | None = None,
) -> dict[str, Callable[..., Any]]:
    """Decorated steps; ``drop`` removes those lines at extraction (in session ``drop_in``)."""
    calls = counter if counter is not None else {}
    state = {"session": 0}

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages: list[str], session: int) -> list[str]:
        calls["extract"] = calls.get("extract", 0) + 1
        if drop_in is None or drop_in == session:
            return [m for m in messages if m not in drop]
        return list(messages)

    @tracer.operation("update", outputs=("store",))
    def update(store: list[str], facts: list[str]) -> list[str]:
        calls["update"] = calls.get("update", 0) + 1
        return [*store, *facts]

    @tracer.operation("retrieve", outputs=("retrieved",), params=("k",))
    def retrieve(store: list[str], question: str, k: int = 2) -> list[str]:
        calls["retrieve"] = calls.get("retrieve", 0) + 1
        q = words(question)
        ranked = sorted(store, key=lambda f: -len(q & words(f)))
        return ranked[:k]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question: str, retrieved: list[str], prompt: str = "Answer briefly.") -> str:
        calls["generate"] = calls.get("generate", 0) + 1
        if garble_answer or not retrieved:
            return "I don't know"
        best = retrieved[0]
        if not words(question) & words(best):
            return "I don't know"
        return best.split(": ", 1)[-1]

    del state
    return {"extract": extract, "update": update, "retrieve": retrieve, "generate": generate}


def run(tracer: Tracer, steps: dict[str, Callable[..., Any]], question: str = QUESTION) -> Any:
    store: list[str] = []
    for i, session in enumerate([list(SESSION_1), list(SESSION_2)]):
        facts = steps["extract"](session, i)
        store = steps["update"](store, facts)
    got = steps["retrieve"](store, question, k=2)
    return steps["generate"](question, got)
