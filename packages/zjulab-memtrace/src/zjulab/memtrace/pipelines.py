"""Three instrumented reference memory pipelines, with optional planted faults.

* :class:`LongContextPipeline` — ``compress`` each session to its transcript, ``concat`` them
  into one context, ``generate`` the answer from it.
* :class:`RAGPipeline` — ``chunk`` each session, ``index`` the chunks, ``retrieve`` the top-k
  for the question, ``generate``.
* :class:`Mem0Pipeline` — ``extract`` facts from each session, ``update`` the memory store
  (a near-duplicate replaces the old memory), ``retrieve``, ``generate``.

Retrieval uses any :class:`~zjulab.common.protocols.TextEncoder`. Answers come from an
extractive reader (the context line sharing the most content words with the question), or
from a :class:`~zjulab.common.protocols.ChatModel` when one is given. Every step is a traced
operation whose handle re-runs it — planted faults included, since a fault is part of the
step's behaviour — so a recorded run can be replayed.

A :class:`Fault` plants one known root cause: drop or corrupt a fact at extraction
(``compress`` / ``chunk`` / ``extract``), overwrite it at ``update``, return near-misses at
``retrieve``, or ignore the evidence at ``generate``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from zjulab.common.protocols import ChatModel, Conversation, TextEncoder
from zjulab.memtrace.config import PipelineConfig
from zjulab.memtrace.errors import TracingError
from zjulab.memtrace.graph import Trace
from zjulab.memtrace.matching import FUNCTION_WORDS
from zjulab.memtrace.tracer import Tracer

__all__ = [
    "FAULT_MODES",
    "Fault",
    "LongContextPipeline",
    "MemoryPipeline",
    "Mem0Pipeline",
    "RAGPipeline",
    "corrupt_text",
    "make_pipeline",
]

logger = logging.getLogger(__name__)

FaultKind = Literal["drop", "corrupt", "overwrite", "near_miss", "ignore_evidence"]

FAULT_MODES: dict[str, str] = {
    "drop": "information_loss",
    "corrupt": "incorrect_extraction",
    "overwrite": "wrong_update",
    "near_miss": "retrieval_misalignment",
    "ignore_evidence": "generation_error",
}
"""The failure mode each planted fault kind stands for."""

_WORD = re.compile(r"\w+")
_STOP = FUNCTION_WORDS

ANSWER_PROMPT = "Answer the question in a few words using only the memories."


def content_words(text: str) -> set[str]:
    """Lower-cased words of ``text`` minus stop words."""
    return {w.lower() for w in _WORD.findall(text)} - _STOP


def _informative(line: str, min_words: int) -> bool:
    """Whether a ``"Speaker: text"`` turn has at least ``min_words`` content words (not small talk)."""
    return len(content_words(line.split(": ", 1)[-1])) >= min_words


def corrupt_text(text: str, answer: str, replacement: str = "Zanzibar") -> str:
    """Replace every word of ``answer`` inside ``text`` with ``replacement`` (case-insensitive)."""
    out = text
    for w in sorted(set(_WORD.findall(answer)), key=len, reverse=True):
        out = re.sub(rf"\b{re.escape(w)}\b", replacement, out, flags=re.IGNORECASE)
    return out


@dataclass(frozen=True)
class Fault:
    """One planted fault.

    Args:
        op: Name of the operation it sits in (``"extract"``, ``"update"``, ``"retrieve"``...).
        kind: What goes wrong.
        target: The evidence text it acts on.
        occurrence: Which call of the operation (the session index for per-session steps);
            -1 for every call.
        replacement: For ``corrupt``: the corrupted text; for ``overwrite``: unused.
    """

    op: str
    kind: FaultKind
    target: str
    occurrence: int = -1
    replacement: str = ""

    @property
    def mode(self) -> str:
        """The failure mode this fault stands for."""
        return FAULT_MODES[self.kind]


class MemoryPipeline:
    """Base class: encoder cache, reader, fault lookup and the tracer.

    Args:
        encoder: Text encoder for retrieval and de-duplication.
        chat: Optional chat model for ``generate``; the extractive reader otherwise.
        config: Pipeline settings.
        faults: Planted faults.
        tracer: Tracer to record into (a new one when omitted).
        answer_prompt: System prompt of ``generate`` (recorded, and patchable in replay).
    """

    name = "base"

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        chat: ChatModel | None = None,
        config: PipelineConfig | None = None,
        faults: Sequence[Fault] = (),
        tracer: Tracer | None = None,
        answer_prompt: str = ANSWER_PROMPT,
    ) -> None:
        self.encoder = encoder
        self.answer_prompt = answer_prompt
        self.chat = chat
        self.config = config or PipelineConfig()
        self.faults = tuple(faults)
        self.tracer = tracer or Tracer()
        self._cache: dict[str, np.ndarray] = {}
        self._build()

    # subclasses define their steps here
    def _build(self) -> None:
        raise NotImplementedError

    def _fault(self, op: str, occurrence: int | None = None) -> Fault | None:
        for f in self.faults:
            if f.op == op and (f.occurrence == -1 or occurrence is None or f.occurrence == occurrence):
                return f
        return None

    def _damage(self, op: str, session: int, lines: list[str]) -> list[str]:
        """Apply a planted ``drop`` / ``corrupt`` fault of ``op`` at ``session`` to ``lines``."""
        f = self._fault(op, session)
        if f is not None and f.kind == "drop":
            return [m for m in lines if m != f.target]
        if f is not None and f.kind == "corrupt":
            return [f.replacement if m == f.target else m for m in lines]
        return lines

    def _top_k(self, items: list[str], question: str, k: int) -> list[str]:
        """The ``k`` items most similar to ``question``; a ``near_miss`` fault skips the evidence."""
        order = self._rank(items, question)
        f = self._fault("retrieve")
        if f is not None and f.kind == "near_miss":
            order = [i for i in order if f.target not in items[i]]
        return [items[i] for i in order[:k]]

    def _vectors(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, v in zip(missing, self.encoder.encode(missing)):
                self._cache[t] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def _rank(self, items: Sequence[str], question: str) -> list[int]:
        if not items:
            return []
        sims = self._vectors(list(items)) @ self._vectors([question])[0]
        return sorted(range(len(items)), key=lambda i: (-float(sims[i]), i))

    def _read(self, question: str, lines: Sequence[str], avoid: str | None = None) -> str:
        """The line sharing most content words with the question (ties: earlier line)."""
        q = content_words(question)
        best, best_score = "", 0
        for line in lines:
            if avoid is not None and avoid in line:
                continue
            score = len(q & content_words(line))
            if score > best_score:
                best, best_score = line, score
        return best.split(": ", 1)[-1] if best else "I don't know"

    def _generate_answer(self, question: str, lines: Sequence[str], prompt: str) -> str:
        fault = self._fault("generate")
        if self.chat is not None:
            context = "\n".join(lines if fault is None else [x for x in lines if fault.target not in x])
            conv: Conversation = [
                {"role": "system", "content": prompt},
                {"role": "user", "content": f"Memories:\n{context}\n\nQuestion: {question}"},
            ]
            return self.chat.generate([conv], temperature=0.0, max_new_tokens=32)[0].strip()
        return self._read(question, lines, avoid=fault.target if fault is not None else None)

    def run(self, sessions: Sequence[Sequence[str]], question: str, **metadata: Any) -> tuple[Any, Trace]:
        """Run on ``sessions`` (lists of ``"Speaker: text"`` turns) and answer ``question``.

        Returns:
            ``(answer, trace)``.

        Raises:
            TracingError: The tracer is disabled (there would be no trace).
        """
        with self.tracer.trace(self.name, question=question, **metadata) as trace:
            if trace is None:
                raise TracingError("the pipeline's tracer is disabled; enable it to record a trace")
            answer = self._run(sessions, question)
        return answer, trace

    def _run(self, sessions: Sequence[Sequence[str]], question: str) -> Any:
        raise NotImplementedError


class LongContextPipeline(MemoryPipeline):
    """compress (per session) -> concat -> generate."""

    name = "long_context"

    def _build(self) -> None:
        t = self.tracer
        cfg = self.config

        @t.operation("compress", outputs=("transcript",))
        def compress(messages: list[str], session: int) -> list[str]:
            # a compressor keeps the informative turns and drops small talk
            kept = [m for m in messages if _informative(m, cfg.min_content_words)]
            return self._damage("compress", session, kept)

        @t.operation("concat", outputs=("context",))
        def concat(*transcripts: list[str]) -> str:
            lines = [line for tr in transcripts for line in tr]
            return "\n".join(lines[-cfg.max_context_turns :])

        @t.operation("generate", outputs=("answer",), output_kind="answer")
        def generate(question: str, context: str, prompt: str = ANSWER_PROMPT) -> str:
            return self._generate_answer(question, context.split("\n"), prompt)

        self.compress, self.concat, self.generate = compress, concat, generate

    def _run(self, sessions: Sequence[Sequence[str]], question: str) -> Any:
        parts = [self.compress(list(s), i) for i, s in enumerate(sessions)]
        context = self.concat(*parts)
        return self.generate(question, context, prompt=self.answer_prompt)


class RAGPipeline(MemoryPipeline):
    """chunk (per session) -> index (per session) -> retrieve -> generate."""

    name = "rag"

    def _build(self) -> None:
        t = self.tracer
        cfg = self.config

        @t.operation("chunk", outputs=("chunks",))
        def chunk(messages: list[str], session: int) -> list[str]:
            msgs = [m for m in messages if _informative(m, 2)]  # drop "ok!", "haha"
            msgs = self._damage("chunk", session, msgs)
            n = cfg.chunk_turns
            return ["\n".join(msgs[i : i + n]) for i in range(0, len(msgs), n)]

        @t.operation("index", outputs=("index",))
        def index(current: list[str], chunks: list[str]) -> list[str]:
            return [*current, *chunks]

        @t.operation("retrieve", outputs=("retrieved",), params=("k",))
        def retrieve(index: list[str], question: str, k: int = cfg.top_k) -> list[str]:
            return self._top_k(index, question, k)

        @t.operation("generate", outputs=("answer",), output_kind="answer")
        def generate(question: str, retrieved: list[str], prompt: str = ANSWER_PROMPT) -> str:
            lines = [line for c in retrieved for line in c.split("\n")]
            return self._generate_answer(question, lines, prompt)

        self.chunk, self.index, self.retrieve, self.generate = chunk, index, retrieve, generate

    def _run(self, sessions: Sequence[Sequence[str]], question: str) -> Any:
        idx: list[str] = self.tracer.variable([], "index", "store")
        for i, s in enumerate(sessions):
            idx = self.index(idx, self.chunk(list(s), i))
        got = self.retrieve(idx, question, k=self.config.top_k)
        return self.generate(question, got, prompt=self.answer_prompt)


class Mem0Pipeline(MemoryPipeline):
    """extract (per session) -> update (per session) -> retrieve -> generate."""

    name = "mem0"

    def _build(self) -> None:
        t = self.tracer
        cfg = self.config

        @t.operation("extract", outputs=("facts",))
        def extract(messages: list[str], session: int) -> list[str]:
            facts = [m for m in messages if _informative(m, cfg.min_content_words)]
            return self._damage("extract", session, facts)

        @t.operation("update", outputs=("store",))
        def update(store: list[str], facts: list[str], session: int) -> list[str]:
            new = list(store)
            f = self._fault("update", session)
            for fact in facts:
                if f is not None and f.kind == "overwrite" and f.target in new and fact != f.target:
                    new[new.index(f.target)] = fact  # the wrong overwrite
                    f = None
                    continue
                if new:
                    sims = self._vectors(new) @ self._vectors([fact])[0]
                    j = int(np.argmax(sims))
                    if float(sims[j]) >= cfg.dedup_threshold:
                        new[j] = fact
                        continue
                new.append(fact)
            return new

        @t.operation("retrieve", outputs=("retrieved",), params=("k",))
        def retrieve(store: list[str], question: str, k: int = cfg.top_k) -> list[str]:
            return self._top_k(store, question, k)

        @t.operation("generate", outputs=("answer",), output_kind="answer")
        def generate(question: str, retrieved: list[str], prompt: str = ANSWER_PROMPT) -> str:
            return self._generate_answer(question, retrieved, prompt)

        self.extract, self.update, self.retrieve, self.generate = extract, update, retrieve, generate

    def _run(self, sessions: Sequence[Sequence[str]], question: str) -> Any:
        store: list[str] = self.tracer.variable([], "store", "store")
        for i, s in enumerate(sessions):
            store = self.update(store, self.extract(list(s), i), i)
        got = self.retrieve(store, question, k=self.config.top_k)
        return self.generate(question, got, prompt=self.answer_prompt)


_PIPELINES: dict[str, type[MemoryPipeline]] = {
    "long_context": LongContextPipeline,
    "rag": RAGPipeline,
    "mem0": Mem0Pipeline,
}


def make_pipeline(name: str, encoder: TextEncoder, **kwargs: Any) -> MemoryPipeline:
    """Build a reference pipeline by name (``"long_context"``, ``"rag"``, ``"mem0"``).

    Raises:
        TracingError: Unknown name.
    """
    try:
        cls = _PIPELINES[name]
    except KeyError:
        raise TracingError(f"unknown pipeline {name!r}; choose one of {sorted(_PIPELINES)}") from None
    return cls(encoder, **kwargs)
