"""Judges: decide which operations in a suspect subgraph produced a faulty output.

A judge answers, for each operation id it is shown, a :class:`Verdict`: is the output faulty
with respect to the gold answer and evidence, and did the fault arise *in* this operation
(``origin="self"``) or arrive through its inputs (``"upstream"``)? A judge may also propose a
corrected output, used to test the hypothesis by replay.

* :class:`PredicateJudge` wraps a Python function.
* :class:`EvidenceJudge` follows the gold evidence through the graph: an operation whose
  inputs carry an evidence text that its output no longer carries lost it.
* :class:`ReferenceJudge` compares each operation with the same operation in a reference
  (known-good) run — the oracle of the benchmark.
* :class:`ChatJudge` asks a :class:`~zjulab.common.protocols.ChatModel` through
  :func:`~zjulab.common.structured.generate_structured`; an unusable answer degrades to
  "no verdict" with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from zjulab.common.errors import ConfigError
from zjulab.common.protocols import ChatModel, Conversation
from zjulab.common.structured import generate_structured, schema_prompt
from zjulab.memtrace.gold import Gold
from zjulab.memtrace.graph import Operation, Trace
from zjulab.memtrace.matching import carries, flatten_text, normalize_text, token_recall
from zjulab.memtrace.taxonomy import DEFAULT_TAXONOMY, Taxonomy

__all__ = [
    "ChatJudge",
    "Corrector",
    "EvidenceCorrector",
    "EvidenceJudge",
    "Judge",
    "Origin",
    "PredicateJudge",
    "ReferenceJudge",
    "Verdict",
    "describe_value",
]

logger = logging.getLogger(__name__)

Origin = Literal["self", "upstream", "unknown"]


@dataclass
class Verdict:
    """A judge's opinion of one operation.

    Args:
        op_id: The operation.
        faulty: Whether its output is faulty.
        origin: Where the fault arose: in this operation, upstream of it, or unknown.
        mode: Failure-mode name (normalised against the taxonomy later).
        rationale: The judge's reason.
        correction: A corrected output (meaningful only when ``has_correction``).
        has_correction: Whether ``correction`` is set.
    """

    op_id: str
    faulty: bool
    origin: Origin = "unknown"
    mode: str | None = None
    rationale: str = ""
    correction: Any = None
    has_correction: bool = False


@runtime_checkable
class Judge(Protocol):
    """Anything that judges a set of operations of a trace."""

    name: str

    def judge(self, trace: Trace, op_ids: Sequence[str], gold: Gold) -> dict[str, Verdict]:
        """Return a verdict for (some of) ``op_ids``; missing ids count as not faulty."""
        ...


@runtime_checkable
class Corrector(Protocol):
    """Anything that proposes a corrected output for one operation."""

    def correct(self, trace: Trace, op_id: str, gold: Gold) -> tuple[bool, Any]:
        """Return ``(True, corrected_output)`` or ``(False, None)`` when it has none."""
        ...


def _needed(gold: Gold) -> tuple[str, ...]:
    return gold.evidence if gold.evidence else (gold.answer,)


def received(op: Operation) -> list[str]:
    """The variables an operation was handed as arguments.

    A container built from recorded values also lists those values' variables among the
    operation's inputs (lineage), but the operation received only the container: an element
    taken from a list (``summarise(chunks[3])``) did not receive the rest of the list.
    """
    bound = [s.var for s in [*op.args, *op.kwargs.values()] if s.var is not None]
    return list(dict.fromkeys(bound)) if (op.args or op.kwargs) else list(op.inputs)


def _output_value(trace: Trace, op: Operation) -> Any:
    vals = [trace.variables[v].value for v in op.outputs]
    return vals[0] if len(vals) == 1 else vals


class EvidenceCorrector:
    """Correct an output by putting the gold answer or the missing evidence back into it.

    Only evidence the operation received (carried by one of its inputs) is put back: the
    correction is what the operation should have output given its inputs. The final answer
    becomes the gold answer. A list output gets each missing evidence text (in front for retrieval-like kinds, keeping the list length; at the end otherwise); a
    string output gets them appended. Other outputs have no correction.

    Args:
        threshold: Token-recall level at which an evidence text counts as present.
        front_kinds: Operation kinds whose lists are rankings (evidence goes first).
    """

    def __init__(self, threshold: float = 0.9, front_kinds: Sequence[str] = ("retrieve", "rerank", "search")):
        self.threshold = threshold
        self.front_kinds = frozenset(front_kinds)

    def correct(self, trace: Trace, op_id: str, gold: Gold) -> tuple[bool, Any]:
        """See :class:`Corrector`."""
        op = trace.operation(op_id)
        if trace.answer_var is not None and trace.answer_var in op.outputs and len(op.outputs) == 1:
            return True, gold.answer
        if len(op.outputs) != 1:
            return False, None
        value = trace.variables[op.outputs[0]].value
        inputs = [trace.variables[v].value for v in received(op)]
        missing = [
            e
            for e in gold.evidence
            if not carries(value, e, self.threshold, gold.answer)
            and any(carries(x, e, self.threshold, gold.answer) for x in inputs)
        ]
        if not missing:
            return False, None
        if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
            # a damaged copy of a missing evidence text is replaced, not kept beside it
            items = [x for x in value if not any(token_recall(e, x) >= 0.5 for e in missing)]
            if op.kind in self.front_kinds:
                new = missing + [x for x in items if x not in missing]
                new = new[: max(len(items), len(missing))]
            else:
                new = items + missing
            return True, type(value)(new) if isinstance(value, tuple) else new
        if isinstance(value, (list, tuple)):
            # items of another shape (documents as dicts): put back the received items that
            # carry the missing evidence, as the operation should have output them
            found = [
                item
                for x in inputs
                if isinstance(x, (list, tuple))
                for item in x
                if any(carries(item, e, self.threshold, gold.answer) for e in missing)
            ]
            if not found:
                return False, None
            kept = [x for x in value if x not in found]
            new = found + kept if op.kind in self.front_kinds else kept + found
            if op.kind in self.front_kinds:
                new = new[: max(len(value), len(found))]
            return True, type(value)(new) if isinstance(value, tuple) else new
        if isinstance(value, str):
            lines = [
                x for x in value.split("\n") if x and not any(token_recall(e, x) >= 0.5 for e in missing)
            ]
            return True, "\n".join([*lines, *missing])
        return False, None


class PredicateJudge:
    """A judge backed by a Python function.

    Args:
        predicate: ``predicate(trace, op, gold)`` returning a bool (faulty or not, origin
            unknown) or a full :class:`Verdict`.
        name: Judge name.
        corrector: Optional ``corrector(trace, op, gold) -> (has_correction, value)``.
    """

    def __init__(
        self,
        predicate: Callable[[Trace, Operation, Gold], bool | Verdict],
        name: str = "predicate",
        corrector: Callable[[Trace, Operation, Gold], tuple[bool, Any]] | None = None,
    ):
        self.predicate = predicate
        self.name = name
        self._corrector = corrector

    def judge(self, trace: Trace, op_ids: Sequence[str], gold: Gold) -> dict[str, Verdict]:
        """See :class:`Judge`."""
        out: dict[str, Verdict] = {}
        for oid in op_ids:
            res = self.predicate(trace, trace.operation(oid), gold)
            out[oid] = res if isinstance(res, Verdict) else Verdict(oid, bool(res))
        return out

    def correct(self, trace: Trace, op_id: str, gold: Gold) -> tuple[bool, Any]:
        """Use the corrector if one was given, else :class:`EvidenceCorrector`."""
        if self._corrector is not None:
            return self._corrector(trace, trace.operation(op_id), gold)
        return EvidenceCorrector().correct(trace, op_id, gold)


class EvidenceJudge:
    """Follow the gold evidence through the graph.

    For the operation that produced the final answer: faulty iff the answer is wrong; the fault
    is its own when its inputs carried every evidence text. For any other operation: faulty
    iff some evidence text is carried by no output; its own fault when an input carried that
    text (the operation lost it), upstream otherwise — unless no operation feeds it, in which
    case it never had the text and is not faulty.

    Args:
        threshold: Token (or content-word) recall at which an evidence text counts as carried.
        taxonomy: Failure modes.
        encoder: Optional :class:`~zjulab.common.protocols.TextEncoder`; a line whose cosine
            similarity to the evidence reaches ``similarity`` (and that holds the answer) also
            carries it, so a paraphrasing step is not blamed. The lexical rule is the fallback.
        similarity: Cosine threshold for the encoder.
    """

    name = "evidence"

    def __init__(
        self,
        threshold: float = 0.9,
        taxonomy: Taxonomy | None = None,
        *,
        encoder: Any = None,
        similarity: float = 0.8,
    ):
        self.threshold = threshold
        self.taxonomy = taxonomy or DEFAULT_TAXONOMY
        self.encoder = encoder
        self.similarity = similarity
        self._corrector = EvidenceCorrector(threshold)
        self._cache: dict[str, Any] = {}

    def _vec(self, texts: Sequence[str]) -> Any:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, v in zip(missing, self.encoder.encode(missing)):
                self._cache[t] = v
        return [self._cache[t] for t in texts]

    def _similar(self, evidence: str, lines: Sequence[str]) -> bool:
        ev, *cands = self._vec([evidence, *lines])
        return any(float(ev @ c) >= self.similarity for c in cands)

    def _carried(self, trace: Trace, var_ids: Sequence[str], text: str, answer: str = "") -> bool:
        similar = self._similar if self.encoder is not None else None
        return any(carries(trace.variables[v].value, text, self.threshold, answer, similar) for v in var_ids)

    def judge(self, trace: Trace, op_ids: Sequence[str], gold: Gold) -> dict[str, Verdict]:
        """See :class:`Judge`."""
        needed = _needed(gold)
        out: dict[str, Verdict] = {}
        for oid in op_ids:
            op = trace.operation(oid)
            in_has = [e for e in needed if self._carried(trace, received(op), e, gold.answer)]
            if trace.answer_var in op.outputs:
                if gold.is_correct(trace.variables[trace.answer_var].value):  # type: ignore[index]
                    out[oid] = Verdict(oid, False, rationale="the answer matches the gold answer")
                elif len(in_has) == len(needed):
                    out[oid] = Verdict(
                        oid,
                        True,
                        "self",
                        self.taxonomy.default_mode(op.kind),
                        "the inputs held all the evidence but the answer is wrong",
                    )
                else:
                    out[oid] = Verdict(oid, True, "upstream", rationale="the inputs lacked evidence")
                continue
            lost = [e for e in needed if not self._carried(trace, op.outputs, e, gold.answer)]
            if not lost:
                out[oid] = Verdict(oid, False, rationale="the output carries the evidence")
                continue
            dropped = [e for e in lost if e in in_has]
            if dropped:
                mode = self.taxonomy.default_mode(op.kind)
                if mode == "information_loss" and self._rewrote(trace, op, dropped):
                    mode = "incorrect_extraction"
                out[oid] = Verdict(
                    oid, True, "self", mode, f"the inputs held {dropped[0]!r} but the output does not"
                )
            elif trace.parent_operations(oid):
                out[oid] = Verdict(
                    oid, True, "upstream", rationale="the evidence never reached this operation"
                )
            else:
                out[oid] = Verdict(oid, False, rationale="this operation never received the evidence")
        return out

    @staticmethod
    def _rewrote(trace: Trace, op: Operation, dropped: Sequence[str]) -> bool:
        """Whether the output holds a new line resembling a lost evidence text (a rewrite, not a drop)."""
        seen = {
            line
            for v in received(op)
            for s in flatten_text(trace.variables[v].value)
            for line in s.split("\n")
        }
        for v in op.outputs:
            for s in flatten_text(trace.variables[v].value):
                for line in s.split("\n"):
                    if line not in seen and any(token_recall(e, line) >= 0.5 for e in dropped):
                        return True
        return False

    def correct(self, trace: Trace, op_id: str, gold: Gold) -> tuple[bool, Any]:
        """See :class:`EvidenceCorrector`."""
        return self._corrector.correct(trace, op_id, gold)


def _tokens(value: Any) -> Counter[str]:
    return Counter(t for s in flatten_text(value) for t in normalize_text(s).split())


def _changed_not_lost(mine: Any, theirs: Any) -> bool:
    """Whether ``mine`` rewrote content of ``theirs`` rather than dropping it.

    Tokens of the reference missing from the output (lost) are compared with tokens of the
    output missing from the reference (added): a drop adds (almost) nothing.
    """
    a, b = _tokens(mine), _tokens(theirs)
    lost = sum((b - a).values())
    added = sum((a - b).values())
    return lost > 0 and added >= 0.5 * lost


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)


class ReferenceJudge:
    """Compare every operation with the same operation of a reference run (an oracle).

    Operations are matched by :meth:`~zjulab.memtrace.graph.Trace.operation_label`
    (``name#k``). An operation is faulty when its output differs from the reference; the fault
    is its own when its inputs equal the reference inputs. The correction is the reference
    output.

    Args:
        reference: A trace of the same pipeline on the same input without faults.
        taxonomy: Failure modes.
    """

    name = "reference"

    def __init__(self, reference: Trace, taxonomy: Taxonomy | None = None):
        self.reference = reference
        self.taxonomy = taxonomy or DEFAULT_TAXONOMY
        self._by_label = {reference.operation_label(o): o for o in reference.operations}

    def _ref_op(self, trace: Trace, op_id: str) -> Operation | None:
        rid = self._by_label.get(trace.operation_label(op_id))
        return None if rid is None else self.reference.operations[rid]

    def judge(self, trace: Trace, op_ids: Sequence[str], gold: Gold) -> dict[str, Verdict]:
        """See :class:`Judge`."""
        out: dict[str, Verdict] = {}
        for oid in op_ids:
            op = trace.operation(oid)
            ref = self._ref_op(trace, oid)
            if ref is None or len(ref.outputs) != len(op.outputs):
                out[oid] = Verdict(oid, False, rationale="no matching reference operation")
                continue
            mine = [trace.variables[v].value for v in op.outputs]
            theirs = [self.reference.variables[v].value for v in ref.outputs]
            if _canon(mine) == _canon(theirs):
                out[oid] = Verdict(oid, False, rationale="output equals the reference")
                continue
            same_in = _canon([trace.variables[v].value for v in op.inputs]) == _canon(
                [self.reference.variables[v].value for v in ref.inputs]
            )
            mode = self.taxonomy.default_mode(op.kind)
            if mode == "information_loss" and _changed_not_lost(mine, theirs):
                mode = "incorrect_extraction"
            out[oid] = Verdict(
                oid,
                True,
                "self" if same_in else "upstream",
                mode if same_in else None,
                "output differs from the reference"
                + (" on equal inputs" if same_in else " after different inputs"),
                theirs[0] if len(theirs) == 1 else theirs,
                True,
            )
        return out

    def correct(self, trace: Trace, op_id: str, gold: Gold) -> tuple[bool, Any]:
        """The reference output of the matching operation."""
        ref = self._ref_op(trace, op_id)
        if ref is None:
            return False, None
        theirs = [self.reference.variables[v].value for v in ref.outputs]
        return True, theirs[0] if len(theirs) == 1 else theirs


def describe_value(value: Any, max_chars: int = 300) -> str:
    """A short one-line rendering of a value for prompts and pictures."""
    text = value if isinstance(value, str) else _canon(value)
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


@dataclass
class JudgedFault:
    """One faulty operation in a chat judge's answer."""

    op: str
    origin: str = "unknown"
    mode: str = ""
    reason: str = ""


@dataclass
class JudgeReply:
    """The JSON a chat judge answers with."""

    faulty: list[JudgedFault] = field(default_factory=list)


_JUDGE_SYSTEM = (
    "You debug memory pipelines of LLM assistants. Each operation reads input values and "
    "writes output values. Find the operations whose OUTPUT is wrong or lacks what is needed "
    "to answer the question with the gold answer. origin is 'self' when the inputs were fine "
    "and the operation itself made the mistake, 'upstream' when its inputs were already wrong."
)


def ask_structured(
    model: ChatModel,
    system: str,
    user: str,
    schema: Any,
    *,
    max_retries: int = 1,
    max_new_tokens: int = 160,
    **sampling: Any,
) -> Any:
    """One system+user question through :func:`~zjulab.common.structured.generate_structured`.

    Greedy by default. Returns the parsed value, or None when the answer stays unusable (an
    unparsable answer, a server that stays down).

    Raises:
        ConfigError: The model is misconfigured (a served model rejected the API key, or has
            no such model or route): every later question would fail the same way, so this
            is never turned into "no verdict".
    """
    conv: Conversation = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    kw: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": max_new_tokens, **sampling}
    got = generate_structured(model, [conv], schema, max_retries=max_retries, on_error="error", **kw)[0]
    if isinstance(got, ConfigError):
        raise got
    if isinstance(got, BaseException):
        return None
    return got


def render_operations(trace: Trace, op_ids: Sequence[str], max_chars: int) -> str:
    """Describe operations (inputs, outputs, prompt) for a judge prompt."""
    lines = []
    for oid in op_ids:
        op = trace.operation(oid)
        lines.append(f"[{oid}] {op.name} (kind: {op.kind})")
        if op.prompt:
            lines.append(f"  prompt: {describe_value(op.prompt, max_chars)}")
        for v in op.inputs:
            var = trace.variables[v]
            lines.append(f"  input {var.label}: {describe_value(var.value, max_chars)}")
        for v in op.outputs:
            var = trace.variables[v]
            lines.append(f"  output {var.label}: {describe_value(var.value, max_chars)}")
    return "\n".join(lines)


def gold_block(gold: Gold) -> str:
    """The question / gold answer / evidence part of a judge prompt."""
    parts = []
    if gold.question:
        parts.append(f"Question: {gold.question}")
    parts.append(f"Gold answer: {gold.answer}")
    if gold.evidence:
        parts.append("Evidence: " + " | ".join(gold.evidence))
    return "\n".join(parts)


def resolve_op_ref(ref: str, candidates: Sequence[str], trace: Trace) -> str | None:
    """Map a model's operation reference (``"op3"``, ``"3"``, ``"[op3]"``, a name) to an id."""
    ref = str(ref).strip().strip("[]").strip()
    if ref in candidates:
        return ref
    m = re.search(r"\d+", ref)
    if m and f"op{m.group(0)}" in candidates:
        return f"op{m.group(0)}"
    for oid in candidates:
        if trace.operations[oid].name == ref:
            return oid
    return None


class ChatJudge:
    """A judge that asks a chat model (through structured output).

    Args:
        model: Any :class:`~zjulab.common.protocols.ChatModel`.
        taxonomy: Failure modes offered to the model.
        max_chars: Characters of each value shown.
        max_retries: Re-asks on an unparsable answer.
        sampling: Sampling keywords for ``model.generate`` (greedy, 160 new tokens by default).

    Attributes:
        unusable: How many answers could not be parsed (each degraded to "no verdict").
    """

    name = "chat"

    def __init__(
        self,
        model: ChatModel,
        taxonomy: Taxonomy | None = None,
        max_chars: int = 240,
        max_retries: int = 1,
        **sampling: Any,
    ):
        self.model = model
        self.taxonomy = taxonomy or DEFAULT_TAXONOMY
        self.max_chars = max_chars
        self.max_retries = max_retries
        self.sampling: dict[str, Any] = dict(sampling)
        self.unusable = 0

    def build_conversation(self, trace: Trace, op_ids: Sequence[str], gold: Gold) -> Conversation:
        """The conversation sent for one subgraph."""
        user = (
            f"{gold_block(gold)}\n\nOperations:\n{render_operations(trace, op_ids, self.max_chars)}\n\n"
            f"Failure modes:\n{self.taxonomy.describe()}\n\n"
            "List the faulty operations (an empty list if none). " + schema_prompt(JudgeReply)
        )
        return [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": user}]

    def judge(self, trace: Trace, op_ids: Sequence[str], gold: Gold) -> dict[str, Verdict]:
        """See :class:`Judge`."""
        conv = self.build_conversation(trace, op_ids, gold)
        reply = ask_structured(
            self.model,
            conv[0]["content"],
            conv[1]["content"],
            JudgeReply,
            max_retries=self.max_retries,
            **self.sampling,
        )
        out = {oid: Verdict(oid, False, rationale="not named by the judge") for oid in op_ids}
        if reply is None:
            self.unusable += 1
            logger.warning("chat judge answer unusable for %s; treating as no verdict", list(op_ids))
            for v in out.values():
                v.rationale = "judge answer unusable"
            return out
        for item in reply.faulty:
            oid = resolve_op_ref(item.op, op_ids, trace)
            if oid is None:
                logger.debug("chat judge named unknown operation %r", item.op)
                continue
            origin = item.origin.strip().lower() if isinstance(item.origin, str) else "unknown"
            out[oid] = Verdict(
                oid,
                True,
                origin if origin in ("self", "upstream") else "unknown",  # type: ignore[arg-type]
                self.taxonomy.normalise(item.mode, trace.operations[oid].kind),
                item.reason,
            )
        return out


def verdicts_to_dict(verdicts: Mapping[str, Verdict]) -> dict[str, dict[str, Any]]:
    """JSON-friendly view of verdicts (corrections left out)."""
    return {
        k: {"faulty": v.faulty, "origin": v.origin, "mode": v.mode, "rationale": v.rationale}
        for k, v in verdicts.items()
    }
