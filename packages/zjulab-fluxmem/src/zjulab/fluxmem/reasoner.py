"""Every chat-model call of FluxMem, each parsed into a schema with retries.

All calls go through :func:`zjulab.common.structured.generate_structured` with
``on_error="none"``: an answer that still does not parse after the retries, or a model that
fails, yields ``None`` and the caller takes its non-LLM path. Nothing here raises because of
what a model said.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from zjulab.common.errors import ZjulabError
from zjulab.common.protocols import ChatModel, Conversation
from zjulab.common.structured import generate_structured, schema_prompt
from zjulab.fluxmem.errors import MemoryInputError
from zjulab.fluxmem.validation import check_text_tree

__all__ = [
    "Answer",
    "Attribution",
    "ExtractedFact",
    "FactList",
    "LinkScores",
    "MemoryReasoner",
    "Reshape",
    "SkillDraft",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ExtractedFact:
    """A fact distilled from messages: its text and the (0-based) message numbers it rests on."""

    text: str
    sources: list[int] = field(default_factory=list)


@dataclass
class FactList:
    """Answer schema of fact extraction."""

    facts: list[ExtractedFact]


@dataclass
class LinkScores:
    """Answer schema of link verification: one 0-1 score per numbered candidate."""

    scores: list[float]


@dataclass
class Attribution:
    """Answer schema of failure attribution.

    Args:
        type: ``connection`` (a link is missing or wrong) or ``unit`` (a node's content is at the
            wrong granularity).
        action: The edit to apply.
        target: Number of the retrieved item the failure is pinned on, if any.
        details: The model's reason, used by prune as the interference description.
    """

    type: Literal["connection", "unit"]
    action: Literal["expand", "prune", "reshape"]
    target: int | None = None
    details: str = ""


@dataclass
class Reshape:
    """Answer schema of unit reshaping: ``split`` into parts, or ``merge`` into one part."""

    mode: Literal["split", "merge"]
    parts: list[str]


@dataclass
class SkillDraft:
    """Answer schema of skill induction and refinement: a name and ordered steps."""

    name: str
    steps: list[str]


@dataclass
class Answer:
    """Answer schema of question answering over retrieved memory."""

    answer: str


_SYSTEM = "You maintain the long-term memory of an assistant. Answer with JSON only."


def _numbered(items: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {t}" for i, t in enumerate(items))


class MemoryReasoner:
    """The chat-model side of FluxMem.

    Args:
        chat_model: Any :class:`~zjulab.common.protocols.ChatModel`, or None for the non-LLM paths
            (every method then returns None at once).
        max_new_tokens: Generation budget per call.
        max_retries: Re-asks when an answer does not parse.
    """

    def __init__(
        self, chat_model: ChatModel | None, *, max_new_tokens: int = 256, max_retries: int = 2
    ) -> None:
        self.chat_model = chat_model
        self.max_new_tokens = max_new_tokens
        self.max_retries = max_retries
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """Whether a chat model is attached."""
        return self.chat_model is not None

    def _ask(self, convs: Sequence[Conversation], schema: type[T] | Any, on_error: str = "none") -> list[Any]:
        """Structured answers; a failed item is None (or its error with ``on_error="error"``)."""
        if self.chat_model is None or not convs:
            return [None] * len(convs)
        try:
            out = generate_structured(
                self.chat_model,
                convs,
                schema,
                max_retries=self.max_retries,
                on_error=on_error,  # type: ignore[arg-type]
                max_new_tokens=self.max_new_tokens,
                temperature=0.0,
            )
        except (ZjulabError, RuntimeError, OSError) as exc:
            logger.warning("chat model call failed (%s); using the non-LLM path", exc)
            self.failures += len(convs)
            return [None] * len(convs)
        out = [None if o is not None and not _encodable(o) else o for o in out]
        bad = sum(1 for o in out if o is None)
        if bad:
            self.failures += bad
            logger.info("%d of %d chat answers did not parse; using the non-LLM path for them", bad, len(out))
        return list(out)

    @staticmethod
    def _conv(user: str, schema: Any) -> Conversation:
        return [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"{user}\n\n{schema_prompt(schema)}"},
        ]

    def extract_facts(self, batches: Sequence[Sequence[str]]) -> list[list[ExtractedFact] | None]:
        """Distil durable facts from each batch of messages (one call per batch).

        A fact is kept only if at least half of its content words occur in its source messages;
        when the model's sources are missing or do not support it, the sources become the
        messages that do (and the fact is dropped when none does).
        """
        convs = [
            self._conv(
                "Read these messages and list the durable facts they state about people, events, "
                "preferences, plans and dates. Each fact is one short self-contained sentence that "
                "names who it is about; 'sources' lists the numbers of the messages it comes from. "
                "List no fact that is not stated.\n\nMessages:\n" + _numbered(msgs),
                FactList,
            )
            for msgs in batches
        ]
        out: list[list[ExtractedFact] | None] = []
        for msgs, res in zip(batches, self._ask(convs, FactList)):
            if res is None:
                out.append(None)
                continue
            facts = []
            for f in res.facts:
                text = f.text.strip()
                if _placeholder(text):
                    continue
                srcs = sorted({s for s in f.sources if 0 <= s < len(msgs)})
                if not srcs or not _grounded(text, [msgs[s] for s in srcs]):
                    # missing or wrong sources: ground the fact in the messages that support it alone
                    srcs = [i for i, m in enumerate(msgs) if _grounded(text, [m])]
                if not srcs:
                    continue
                facts.append(ExtractedFact(text=text, sources=srcs))
            out.append(facts)
        return out

    def verify_links(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float] | None]:
        """Score how related each candidate is to its new unit, 0 to 1 (one call per unit).

        A score list whose length differs from the candidates' counts as a failed parse.
        """
        convs = [
            self._conv(
                "A new memory was written. For each numbered candidate memory, judge how strongly "
                "it is related to the new one (same person, event, topic or a fact that depends "
                "on it): 0.0 unrelated, 1.0 clearly related. Give one score per candidate, in order."
                f"\n\nNew memory: {new}\n\nCandidates:\n{_numbered(cands)}",
                LinkScores,
            )
            for new, cands in items
        ]
        out: list[list[float] | None] = []
        for (_, cands), res in zip(items, self._ask(convs, LinkScores)):
            if res is None or len(res.scores) != len(cands):
                out.append(None)
                continue
            out.append([min(1.0, max(0.0, float(s))) for s in res.scores])
        return out

    def attribute(
        self, query: str, context: Sequence[str], missing: Sequence[str], reason: str
    ) -> Attribution | None:
        """Say why answering ``query`` from ``context`` failed and which edit repairs it."""
        text = (
            "An assistant answered a question from the retrieved memories below and failed. "
            "Decide whether the failure comes from a missing or wrong connection between memories "
            "(type 'connection') or from one memory whose content is too coarse or too fragmented "
            "(type 'unit'), and pick the repair: 'expand' adds links to related memories that were "
            "not retrieved, 'prune' removes links to memories that interfere, 'reshape' splits or "
            "merges the target memory. 'target' is the number of the memory at fault.\n\n"
            f"Question: {query}\nFailure: {reason or 'the answer was wrong'}\n\nRetrieved:\n"
            f"{_numbered(context)}"
        )
        if missing:
            text += "\n\nMemories that should have been used:\n" + "\n".join(f"- {m}" for m in missing)
        res = self._ask([self._conv(text, Attribution)], Attribution)[0]
        if res is not None and res.target is not None and not 0 <= res.target < len(context):
            res.target = None
        if res is not None and _placeholder(res.details):
            res.details = ""
        return res  # type: ignore[no-any-return]

    def reshape(self, content: str, neighbour: str | None, reason: str) -> Reshape | None:
        """Split ``content`` into self-contained parts, or merge it with ``neighbour``."""
        text = (
            "A memory has the wrong granularity for the task. Either split it into self-contained "
            "parts (mode 'split', two or more parts) or, if it is a fragment, merge it with the "
            "related memory into one (mode 'merge', one part). Keep every fact; add none.\n\n"
            f"Reason: {reason or 'retrieval failed'}\nMemory: {content}"
        )
        if neighbour:
            text += f"\nRelated memory: {neighbour}"
        res = self._ask([self._conv(text, Reshape)], Reshape)[0]
        if res is None:
            return None
        parts = [p.strip() for p in res.parts if p and p.strip()]
        if not parts or (res.mode == "split" and len(parts) < 2):
            return None
        return Reshape(mode=res.mode, parts=parts)

    def induce_skill(self, trajectories: Sequence[str]) -> SkillDraft | None:
        """Distil the steps shared by successful trajectories into one reusable skill."""
        text = (
            "These tasks were all solved successfully. Write the reusable procedure they share: a "
            "short name and the ordered steps (imperative sentences, general enough to reuse).\n\n"
            + "\n\n".join(f"Trajectory {i + 1}:\n{t}" for i, t in enumerate(trajectories))
        )
        res = self._ask([self._conv(text, SkillDraft)], SkillDraft)[0]
        return _clean_skill(res)

    def refine_skill(self, skill: str, feedback: str) -> SkillDraft | None:
        """Rewrite a skill from feedback, keeping its intent."""
        text = (
            "Improve this procedure using the feedback. Keep its intent; make the steps general, "
            f"concise and correct.\n\nProcedure:\n{skill}\n\nFeedback: {feedback}"
        )
        res = self._ask([self._conv(text, SkillDraft)], SkillDraft)[0]
        return _clean_skill(res)

    def answer(self, questions: Sequence[tuple[str, Sequence[str]]]) -> list[str | None]:
        """Answer each question from its retrieved memories, briefly.

        An answer that is not the requested JSON degrades to its first line of plain text.
        """
        convs = [
            self._conv(
                "Answer the question from the memories below in a few words. If they do not "
                "contain the answer, say 'no information available'.\n\nMemories:\n"
                f"{_numbered(mems)}\n\nQuestion: {q}",
                Answer,
            )
            for q, mems in questions
        ]
        out = self._ask(convs, Answer, on_error="error")
        answers: list[str | None] = []
        for r in out:
            if isinstance(r, Answer):
                answers.append(None if _placeholder(r.answer) else r.answer.strip())
            elif r is None:
                answers.append(None)
            else:  # not JSON: a small model often answers in plain words, which is still an answer
                self.failures += 1
                raw = (getattr(r, "raw", "") or "").strip().splitlines()
                answers.append(raw[0].strip() if raw and not _placeholder(raw[0]) else None)
        return answers


_WORD = re.compile(r"[a-z0-9]{3,}")


def _encodable(answer: Any) -> bool:
    """Whether every string of a parsed answer encodes as UTF-8 (else it is treated as unparsed)."""
    tree = dataclasses.asdict(answer) if dataclasses.is_dataclass(answer) else answer
    try:
        check_text_tree(tree, "chat answer")
    except MemoryInputError as exc:
        logger.info("a chat answer holds text UTF-8 cannot encode (%s); using the non-LLM path", exc)
        return False
    return True


def _placeholder(text: str) -> bool:
    """An empty answer or one that copies the schema example (``<string>``)."""
    t = text.strip()
    return not t or (t.startswith("<") and t.endswith(">")) or t in ("...", "string")


def _grounded(fact: str, sources: Sequence[str]) -> bool:
    """At least half of a fact's content words occur in its source messages."""
    words = set(_WORD.findall(fact.lower()))
    if not words:
        return False
    src = set(_WORD.findall(" ".join(sources).lower()))
    return len(words & src) * 2 >= len(words)


def _clean_skill(res: SkillDraft | None) -> SkillDraft | None:
    if res is None:
        return None
    steps = [s.strip() for s in res.steps if s and s.strip() and not _placeholder(s)]
    if not steps:
        return None
    name = res.name.strip()
    return SkillDraft(name=steps[0] if _placeholder(name) else name, steps=steps)
