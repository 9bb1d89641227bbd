"""Three memory pipelines written the way their users write them, traced through the public API only.

Nothing here comes from ``zjulab.memtrace.pipelines``: each pipeline is a small class of the
shape people build around Mem0, a RAG index or a long-context compressor, with
``@tracer.operation`` on its steps and nothing else from the library.

* :class:`Mem0Agent` — ``memory.add(messages)`` runs ``extract`` (an LLM-style rewrite of each
  sentence into a third-person fact: "I adopted a dog" -> "Nora adopted a dog", interjections
  dropped) and ``update`` (ADD / UPDATE against a dict store, **mutated in place**, returning
  the list of events); ``search`` ranks memories; ``answer`` reads the best one. The whole turn
  runs inside a traced ``chat_session`` wrapper (the usual root span).
* :class:`SummaryRAG` — ``chunk`` a session into windows of turns, ``summarise`` each window into
  one paraphrased paragraph, ``index`` the summaries as ``{"id", "text", "session"}`` documents,
  ``retrieve`` the top-k documents, ``generate``.
* :class:`CompressorQA` — ``compress`` the whole history to a word budget, keeping the turns that
  share most words with the question and shortening each (fillers out), then ``generate``.

Planted faults (``bugs``) are part of a step's code, so replay re-runs the faulty step as it ran:
an extraction or summary that drops or garbles the evidence, an in-place update that deletes the
evidence memory while adding an unrelated fact, a retrieval that returns near-misses, a
compressor that cuts the evidence, an answer step that ignores it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zjulab.memtrace import Tracer
from zjulab.memtrace.matching import FUNCTION_WORDS

_WORD = re.compile(r"[A-Za-z0-9']+")
_SMALL = (FUNCTION_WORDS - {"s", "t", "whom"}) | {
    "haha",
    "hey",
    "hi",
    "just",
    "lol",
    "oh",
    "ok",
    "okay",
    "really",
    "so",
    "thank",
    "thanks",
    "very",
    "wow",
    "yeah",
    "yes",
}
_FILLERS = re.compile(
    r"\b(?:oh|wow|hey|haha+|lol|yeah|omg|um+|uh+|well|honestly|totally|actually|really|just|so)\b[,!]?\s*",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def words(text: str) -> set[str]:
    """Content words of a text (lower case, small words out)."""
    return {w.lower().strip("'") for w in _WORD.findall(text)} - _SMALL


def third_person(speaker: str, text: str) -> str:
    """What an extraction prompt asks an LLM for: the sentence about ``speaker``, fillers out."""
    t = _FILLERS.sub("", text).strip(" ,")
    for pat, rep in (
        (r"\bI'm\b", f"{speaker} is"),
        (r"\bI am\b", f"{speaker} is"),
        (r"\bI've\b", f"{speaker} has"),
        (r"\bI'd\b", f"{speaker} would"),
        (r"\bI'll\b", f"{speaker} will"),
        (r"\bI\b", speaker),
        (r"\bmy\b", f"{speaker}'s"),
        (r"\bMy\b", f"{speaker}'s"),
        (r"\bme\b", speaker),
        (r"\bmine\b", f"{speaker}'s"),
        (r"\bmyself\b", speaker),
    ):
        t = re.sub(pat, rep, t)
    return t[:1].upper() + t[1:] if t else t


def garble(text: str, answer: str, replacement: str = "Zanzibar") -> str:
    """The text with every word of ``answer`` replaced (a wrong name, date or place)."""
    out = text
    for w in sorted(set(_WORD.findall(answer)), key=len, reverse=True):
        out = re.sub(rf"\b{re.escape(w)}\b", replacement, out, flags=re.IGNORECASE)
    return out


def _split(line: str) -> tuple[str, str]:
    speaker, _, text = line.partition(": ")
    return (speaker, text) if text else ("", line)


class _Base:
    """Encoder cache and the extractive reader shared by the three pipelines."""

    def __init__(self, encoder: Any, bugs: Mapping[str, Any] | None = None, *, enabled: bool = True):
        self.encoder = encoder
        self.bugs = dict(bugs or {})
        self.tracer = Tracer(enabled=enabled)
        self._vecs: dict[str, np.ndarray] = {}

    def _vec(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._vecs]
        if new:
            for t, v in zip(new, self.encoder.encode(new)):
                self._vecs[t] = np.asarray(v, dtype=np.float32)
        return np.stack([self._vecs[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    def _rank(self, texts: Sequence[str], query: str) -> list[int]:
        if not texts:
            return []
        sims = self._vec(list(texts)) @ self._vec([query])[0]
        return sorted(range(len(texts)), key=lambda i: (-float(sims[i]), i))

    @staticmethod
    def _read(question: str, texts: Sequence[str], avoid: str | None = None) -> str:
        q = words(question)
        best, score = "", 0
        for t in texts:
            if avoid and len(words(avoid) & words(t)) >= 0.6 * len(words(avoid)):
                continue
            s = len(q & words(t))
            if s > score:
                best, score = t, s
        return best or "I don't know"


class Mem0Agent(_Base):
    """A Mem0-style memory: ``add`` = extract + update (in place), then search and answer.

    bugs: ``extract_drop`` / ``extract_garble`` (``(session, evidence, garbled)``), ``update_delete``
    (``(session, evidence)``: that session's update deletes the evidence memory), ``search_near_miss``
    (evidence), ``answer_ignore`` (evidence).
    """

    name = "mem0_agent"

    def __init__(self, encoder: Any, bugs: Mapping[str, Any] | None = None, *, enabled: bool = True):
        super().__init__(encoder, bugs, enabled=enabled)
        t = self.tracer
        bugs = self.bugs

        @t.operation(
            "extract", outputs=("facts",), prompt="Rewrite each sentence as a fact about its speaker."
        )
        def extract(messages: list[str], session: int, prompt: str = "") -> list[str]:
            facts = []
            for m in messages:
                speaker, text = _split(m)
                if len(words(text)) < 3:  # small talk is no memory
                    continue
                dropped = bugs.get("extract_drop")
                if dropped and dropped[0] == session and m == dropped[1]:
                    continue
                garbled = bugs.get("extract_garble")
                if garbled and garbled[0] == session and m == garbled[1]:
                    text = garbled[2]
                fact = " ".join(third_person(speaker, s) for s in _SENTENCE.split(text) if s.strip())
                if fact:
                    facts.append(fact)
            return facts

        @t.operation("update", outputs=("events",))
        def update(store: dict[str, str], facts: list[str], session: int) -> list[list[str]]:
            events = []
            deleting = bugs.get("update_delete")
            for fact in facts:
                if deleting and deleting[0] == session and store:
                    ev = words(_split(deleting[1])[1])
                    victim = max(store, key=lambda k: len(words(store[k]) & ev))
                    if len(words(store[victim]) & ev) >= max(2, len(ev) // 2):
                        del store[victim]  # the wrong DELETE
                        events.append(["DELETE", victim])
                        deleting = None
                ids = list(store)
                if ids:
                    sims = self._vec([store[k] for k in ids]) @ self._vec([fact])[0]
                    j = int(np.argmax(sims))
                    if float(sims[j]) >= 0.95:
                        store[ids[j]] = fact
                        events.append(["UPDATE", ids[j]])
                        continue
                key = f"m{len(store)}-{session}-{len(events)}"
                store[key] = fact
                events.append(["ADD", key])
            return events

        @t.operation("add", kind="add")
        def add(store: dict[str, str], messages: list[str], session: int) -> list[list[str]]:
            return update(store, extract(messages, session), session)

        @t.operation("search", kind="retrieve", outputs=("memories",), params=("k",))
        def search(store: dict[str, str], query: str, k: int = 5) -> list[str]:
            texts = list(store.values())
            order = self._rank(texts, query)
            miss = bugs.get("search_near_miss")
            if miss:
                order = [i for i in order if len(words(texts[i]) & words(miss)) < 3]
            return [texts[i] for i in order[:k]]

        @t.operation("answer", outputs=("answer",))
        def answer(question: str, memories: list[str]) -> str:
            return self._read(question, memories, avoid=bugs.get("answer_ignore"))

        @t.operation("chat_session", kind="session")
        def chat_session(sessions: list[list[str]], question: str) -> str:
            store: dict[str, str] = {}
            for i, s in enumerate(sessions):
                add(store, list(s), i)
            return answer(question, search(store, question))

        self.run_session = chat_session

    def run(self, sessions: Sequence[Sequence[str]], question: str) -> tuple[Any, Any]:
        """``(answer, trace)``; the trace is None when the tracer is disabled."""
        with self.tracer.trace(self.name, question=question) as trace:
            out = self.run_session([list(s) for s in sessions], question)
        return out, trace


class SummaryRAG(_Base):
    """Chunk a session, summarise each chunk (paraphrasing), index documents, retrieve, generate.

    bugs: ``summary_drop`` / ``summary_garble`` (``(session, evidence, garbled)``), ``retrieve_near_miss``
    (evidence), ``generate_ignore`` (evidence).
    """

    name = "summary_rag"

    def __init__(self, encoder: Any, bugs: Mapping[str, Any] | None = None, *, enabled: bool = True):
        super().__init__(encoder, bugs, enabled=enabled)
        t = self.tracer
        bugs = self.bugs

        @t.operation("chunk", kind="split", outputs=("chunks",), params=("size",))
        def chunk(messages: list[str], size: int = 3) -> list[list[str]]:
            return [messages[i : i + size] for i in range(0, len(messages), size)]

        @t.operation("summarise", outputs=("summary",), prompt="Summarise this part of the conversation.")
        def summarise(turns: list[str], session: int) -> str:
            parts = []
            for m in turns:
                speaker, text = _split(m)
                if len(words(text)) < 2:
                    continue
                dropped = bugs.get("summary_drop")
                if dropped and dropped[0] == session and m == dropped[1]:
                    continue
                garbled = bugs.get("summary_garble")
                if garbled and garbled[0] == session and m == garbled[1]:
                    text = garbled[2]
                s = third_person(speaker, text).rstrip(".!?")
                if s:
                    parts.append(s + ".")
            return " ".join(parts)

        @t.operation("index", outputs=("index",))
        def index(docs: list[dict[str, Any]], summaries: list[str], session: int) -> list[dict[str, Any]]:
            return [
                *docs,
                *(
                    {"id": f"s{session}c{i}", "text": s, "session": session}
                    for i, s in enumerate(summaries)
                    if s
                ),
            ]

        @t.operation("retrieve", outputs=("documents",), params=("k",))
        def retrieve(docs: list[dict[str, Any]], query: str, k: int = 3) -> list[dict[str, Any]]:
            order = self._rank([d["text"] for d in docs], query)
            miss = bugs.get("retrieve_near_miss")
            if miss:
                order = [i for i in order if len(words(docs[i]["text"]) & words(miss)) < 3]
            return [docs[i] for i in order[:k]]

        @t.operation("generate", outputs=("answer",))
        def generate(question: str, documents: list[dict[str, Any]]) -> str:
            sentences = [s for d in documents for s in _SENTENCE.split(d["text"])]
            return self._read(question, sentences, avoid=bugs.get("generate_ignore"))

        self.steps = (chunk, summarise, index, retrieve, generate)

    def run(self, sessions: Sequence[Sequence[str]], question: str) -> tuple[Any, Any]:
        """``(answer, trace)``; the trace is None when the tracer is disabled."""
        chunk, summarise, index, retrieve, generate = self.steps
        with self.tracer.trace(self.name, question=question) as trace:
            docs: list[dict[str, Any]] = []
            for i, s in enumerate(sessions):
                docs = index(docs, [summarise(c, i) for c in chunk(list(s))], i)
            out = generate(question, retrieve(docs, question))
        return out, trace


class CompressorQA(_Base):
    """Compress the whole history to a word budget around the question, then answer.

    bugs: ``compress_drop`` (evidence: scored as irrelevant), ``compress_garble`` (``(evidence,
    garbled)``), ``generate_ignore`` (evidence).
    """

    name = "compressor_qa"

    def __init__(
        self,
        encoder: Any,
        bugs: Mapping[str, Any] | None = None,
        *,
        enabled: bool = True,
        budget: int = 400,
    ):
        super().__init__(encoder, bugs, enabled=enabled)
        t = self.tracer
        bugs = self.bugs

        @t.operation("flatten", kind="load", outputs=("history",))
        def flatten(sessions: list[list[str]]) -> list[str]:
            return [m for s in sessions for m in s]

        @t.operation("compress", outputs=("context",), params=("budget",))
        def compress(history: list[str], question: str, budget: int = budget) -> str:
            q = words(question)
            scored = []
            for i, m in enumerate(history):
                speaker, text = _split(m)
                short = _FILLERS.sub("", text).strip(" ,")
                garbled = bugs.get("compress_garble")
                if garbled and m == garbled[0]:
                    short = garbled[1]
                relevance = len(q & words(text))
                if bugs.get("compress_drop") == m:
                    relevance = -1
                scored.append((relevance, -i, f"{speaker}: {short}" if speaker else short))
            kept, used = [], 0
            for relevance, neg_i, line in sorted(scored, reverse=True):
                n = len(line.split())
                if relevance < 0 or used + n > budget:
                    continue
                kept.append((-neg_i, line))
                used += n
            return "\n".join(line for _, line in sorted(kept))

        @t.operation("generate", outputs=("answer",))
        def generate(question: str, context: str) -> str:
            texts = [_split(x)[1] or x for x in context.split("\n")]
            return self._read(question, texts, avoid=bugs.get("generate_ignore"))

        self.steps = (flatten, compress, generate)

    def run(self, sessions: Sequence[Sequence[str]], question: str) -> tuple[Any, Any]:
        """``(answer, trace)``; the trace is None when the tracer is disabled."""
        flatten, compress, generate = self.steps
        with self.tracer.trace(self.name, question=question) as trace:
            out = generate(question, compress(flatten([list(s) for s in sessions]), question))
        return out, trace


PIPELINES = {"mem0_agent": Mem0Agent, "summary_rag": SummaryRAG, "compressor_qa": CompressorQA}


def fault_plans(
    pipeline: str, evidence: str, session: int, n_sessions: int, answer: str
) -> list[tuple[dict, str, str]]:
    """``(bugs, label of the faulty operation, failure mode)`` for each fault planted in one case."""
    _speaker, text = _split(evidence)
    bad_text = garble(text, answer)
    later = min(session + 1, n_sessions - 1)
    if pipeline == "mem0_agent":
        return [
            ({"extract_drop": (session, evidence)}, f"extract#{session}", "information_loss"),
            ({"extract_garble": (session, evidence, bad_text)}, f"extract#{session}", "incorrect_extraction"),
            ({"update_delete": (later, evidence)}, f"update#{later}", "wrong_update"),
            ({"search_near_miss": evidence}, "search#0", "retrieval_misalignment"),
            ({"answer_ignore": evidence}, "answer#0", "generation_error"),
        ]
    if pipeline == "summary_rag":
        return [
            ({"summary_drop": (session, evidence)}, "summarise", "information_loss"),
            ({"summary_garble": (session, evidence, bad_text)}, "summarise", "incorrect_extraction"),
            ({"retrieve_near_miss": evidence}, "retrieve#0", "retrieval_misalignment"),
            ({"generate_ignore": evidence}, "generate#0", "generation_error"),
        ]
    return [
        ({"compress_drop": evidence}, "compress#0", "information_loss"),
        ({"compress_garble": (evidence, bad_text)}, "compress#0", "incorrect_extraction"),
        ({"generate_ignore": evidence}, "generate#0", "generation_error"),
    ]
