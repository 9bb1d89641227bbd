"""A hand-written four-step memory pipeline used by the tests."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zjulab.memtrace import Tracer

WORD = re.compile(r"\w+")
STOP = {"what", "is", "the", "of", "a", "i", "to", "did", "does", "where", "name", "s", "and", "her", "alice"}

SESSION_1 = ["Alice: I adopted a cat named Milo", "Bob: nice, I like cats"]
SESSION_2 = ["Alice: I moved to Paris last spring", "Bob: cool, that city is lovely"]
QUESTION = "What is the name of Alice's cat?"
MILO = SESSION_1[0]
PARIS = SESSION_2[0]
PROMPT = "Answer briefly."


def words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text)} - STOP


def build(
    tracer: Tracer,
    *,
    drops: Mapping[int, Sequence[str]] | None = None,
    garble_answer: bool = False,
    answer_all: bool = False,
    calls: dict[str, int] | None = None,
) -> dict[str, Callable[..., Any]]:
    """Decorated steps; ``drops[session]`` lists lines the extraction of that session loses."""
    drops = dict(drops or {})
    calls = calls if calls is not None else {}

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    @tracer.operation("extract", outputs=("facts",))
    def extract(messages: list[str], session: int) -> list[str]:
        count("extract")
        return [m for m in messages if m not in drops.get(session, ())]

    @tracer.operation("update", outputs=("store",))
    def update(store: list[str], facts: list[str]) -> list[str]:
        count("update")
        return [*store, *facts]

    @tracer.operation("retrieve", outputs=("retrieved",), params=("k",))
    def retrieve(store: list[str], question: str, k: int = 2) -> list[str]:
        count("retrieve")
        q = words(question)
        return sorted(store, key=lambda f: -len(q & words(f)))[:k]

    @tracer.operation("generate", outputs=("answer",))
    def generate(question: str, retrieved: list[str], prompt: str = PROMPT) -> str:
        count("generate")
        if garble_answer and "use the memories" not in prompt:
            return "I don't know"
        if answer_all:
            return " ".join(r.split(": ", 1)[-1] for r in retrieved)
        if not retrieved or not words(question) & words(retrieved[0]):
            return "I don't know"
        return retrieved[0].split(": ", 1)[-1]

    return {"extract": extract, "update": update, "retrieve": retrieve, "generate": generate}


def run(steps: Mapping[str, Callable[..., Any]], question: str = QUESTION, k: int = 2) -> Any:
    store: list[str] = []
    for i, session in enumerate([list(SESSION_1), list(SESSION_2)]):
        facts = steps["extract"](session, i)
        store = steps["update"](store, facts)
    got = steps["retrieve"](store, question, k=k)
    return steps["generate"](question, got, prompt=PROMPT)


def record(
    tracer: Tracer | None = None, question: str = QUESTION, k: int = 2, **faults: Any
) -> tuple[Any, Any, dict[str, int]]:
    """Run the toy pipeline under a fresh trace: ``(answer, trace, call counts)``."""
    tracer = tracer or Tracer()
    calls: dict[str, int] = {}
    steps = build(tracer, calls=calls, **faults)
    with tracer.trace("toy", question=question) as trace:
        answer = run(steps, question, k)
    return answer, trace, calls
