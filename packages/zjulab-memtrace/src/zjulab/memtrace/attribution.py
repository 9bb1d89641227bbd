"""Iterative attribution of a failed answer to its decisive errors, and baselines.

:func:`attribute` starts at the operation that produced the wrong final answer and walks up
the evolution graph: each round it shows the judge the current suspects together with the
operations that fed them (the suspect subgraph), keeps the ones judged faulty, and makes their
not-yet-judged producers the next suspects. The *earliest* faulty operations — those whose
fault arose in themselves — are the candidates. Each candidate hypothesis is then tested
counterfactually: correct the candidates' outputs and :func:`~zjulab.memtrace.replay.replay`
the downstream operations. The **decisive error set** is the smallest set of candidates (the
earliest one on ties) whose correction makes the final answer right.

Baselines for the benchmark: :func:`attribute_all_at_once` (one judge call over the whole
trace, no descent, no replay), :func:`last_operation` and :func:`random_operation`.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.common.protocols import ChatModel
from zjulab.common.structured import schema_prompt
from zjulab.memtrace.config import AttributionConfig
from zjulab.memtrace.errors import ReplayError, TraceFileError, TracingError
from zjulab.memtrace.gold import Gold
from zjulab.memtrace.graph import Trace
from zjulab.memtrace.judges import (
    Corrector,
    EvidenceCorrector,
    Judge,
    Verdict,
    ask_structured,
    describe_value,
    gold_block,
    render_operations,
    resolve_op_ref,
    verdicts_to_dict,
)
from zjulab.memtrace.redaction import DEFAULT_REDACTOR, RedactFn, apply_redaction
from zjulab.memtrace.replay import replay
from zjulab.memtrace.taxonomy import DEFAULT_TAXONOMY, Taxonomy

__all__ = [
    "Attribution",
    "DecisiveError",
    "ReplayEvidence",
    "attribute",
    "attribute_all_at_once",
    "last_operation",
    "random_operation",
]

logger = logging.getLogger(__name__)


@dataclass
class DecisiveError:
    """One operation of the decisive error set.

    Args:
        op_id: The operation.
        name: Its name.
        label: Stable label ``name#k``.
        mode: Failure mode.
        rationale: Why the judge flagged it.
    """

    op_id: str
    name: str
    label: str
    mode: str
    rationale: str = ""


@dataclass
class ReplayEvidence:
    """One counterfactual test.

    Args:
        op_ids: Operations whose outputs were corrected.
        answer: The replayed final answer.
        rescued: Whether it matches the gold answer.
        executed: Operations the replay re-ran.
    """

    op_ids: list[str]
    answer: Any
    rescued: bool
    executed: list[str] = field(default_factory=list)


@dataclass
class Attribution:
    """The result of attributing one answer.

    Args:
        failed: Whether the final answer was wrong (nothing to attribute otherwise).
        answer: The final answer.
        gold: The gold reference.
        decisive: The decisive error set.
        candidates: Earliest faulty operations found by the judge (before verification).
        verdicts: Every verdict the judge gave.
        rounds: The operation ids shown to the judge in each round.
        replays: Counterfactual tests run.
        verified: Whether a replay confirmed the decisive set.
        method: Method name (``"iterative/evidence"``, ``"last-operation"``...).
        degraded: Whether the method fell back (judge flagged nothing, answer unusable...).
        crashed: Whether the run ended in an exception (the raising operation is decisive).
        traceback: The recorded traceback of that exception.
        final_op: The operation that produced the answer. Blaming it alone is never
            "verified": correcting its output means writing the gold answer, which proves nothing.
    """

    failed: bool
    answer: Any
    gold: Gold
    decisive: list[DecisiveError] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    rounds: list[list[str]] = field(default_factory=list)
    replays: list[ReplayEvidence] = field(default_factory=list)
    verified: bool = False
    method: str = ""
    degraded: bool = False
    crashed: bool = False
    traceback: str = ""
    final_op: str = ""

    @property
    def decisive_ops(self) -> list[str]:
        """Ids of the decisive operations."""
        return [d.op_id for d in self.decisive]

    @property
    def modes(self) -> list[str]:
        """Failure modes of the decisive operations."""
        return [d.mode for d in self.decisive]

    def summary(self) -> str:
        """One readable line, redacted (it quotes values and errors, and is made to be printed)."""
        return DEFAULT_REDACTOR.text(self._summary())

    def _summary(self) -> str:
        if not self.failed:
            return "answer is correct; nothing to attribute"
        if not self.decisive:
            return "no decisive error found"
        if self.crashed and self.decisive_ops == [self.final_op]:
            d = self.decisive[0]
            return f"crashed: {d.label} ({d.op_id}) {d.rationale} [traceback recorded]"
        parts = [f"{d.label} ({d.op_id}) -> {d.mode}" for d in self.decisive]
        if self.verified:
            tag = "verified by replay"
        elif self.decisive_ops == [self.final_op] and self.final_op:
            tag = "final operation: a replay cannot test it"
        else:
            tag = "not verified"
        if self.degraded:  # a fallback blame must never read like a finding
            if any(v.rationale == "judge answer unusable" for v in self.verdicts.values()):
                why = "the judge gave no usable answer"
            elif not any(v.faulty for v in self.verdicts.values()):
                why = "the judge flagged nothing"
            else:
                why = "the judge named no operation as the origin"
            tag += f"; degraded: {why}"
        if self.crashed:
            tag += f"; the run crashed in {self.final_op} (traceback recorded)"
        return f"decisive: {', '.join(parts)} [{tag}]"

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "<dict>") -> Attribution:
        """Rebuild from :meth:`to_dict` output (answers and replays as their text forms).

        Raises:
            TraceFileError: The document is not an attribution (a field is missing or of the
                wrong type); ``source`` names it in the message.
        """
        try:
            return cls._from_dict(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TraceFileError(
                f"{source}: not an attribution document ({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def _from_dict(cls, doc: Mapping[str, Any]) -> Attribution:
        if not isinstance(doc, Mapping):
            raise TypeError(f"expected a JSON object, got {type(doc).__name__}")
        g = doc.get("gold") or {}
        verdicts = {
            k: Verdict(
                k, bool(v.get("faulty")), v.get("origin", "unknown"), v.get("mode"), v.get("rationale", "")
            )
            for k, v in (doc.get("verdicts") or {}).items()
        }
        return cls(
            failed=bool(doc.get("failed", True)),
            answer=doc.get("answer"),
            gold=Gold(
                g.get("answer", ""),
                tuple(g.get("evidence") or ()),
                g.get("question"),
                g.get("threshold", 1.0),
            ),
            decisive=[_decisive_from(d) for d in doc.get("decisive", [])],
            candidates=list(doc.get("candidates", [])),
            verdicts=verdicts,
            rounds=[list(r) for r in doc.get("rounds", [])],
            replays=[
                ReplayEvidence(
                    list(r["op_ids"]), r.get("answer"), bool(r.get("rescued")), list(r.get("executed", []))
                )
                for r in doc.get("replays", [])
            ],
            verified=bool(doc.get("verified")),
            method=str(doc.get("method", "")),
            degraded=bool(doc.get("degraded")),
            crashed=bool(doc.get("crashed")),
            traceback=str(doc.get("traceback", "")),
            final_op=str(doc.get("final_op", "")),
        )

    def to_dict(self, redact: RedactFn | None = DEFAULT_REDACTOR) -> dict[str, Any]:
        """JSON-friendly view, redacted (on by default; ``redact=None`` turns it off)."""
        return apply_redaction(self._doc(), redact)  # type: ignore[no-any-return]

    def _doc(self) -> dict[str, Any]:
        return {
            "schema": "zjulab.memtrace.attribution",
            "method": self.method,
            "failed": self.failed,
            "answer": describe_value(self.answer, 2000),
            "gold": self.gold.to_dict(),
            "decisive": [vars(d) for d in self.decisive],
            "candidates": self.candidates,
            "verdicts": verdicts_to_dict(self.verdicts),
            "rounds": self.rounds,
            "replays": [
                {
                    "op_ids": r.op_ids,
                    "answer": describe_value(r.answer, 500),
                    "rescued": r.rescued,
                    "executed": r.executed,
                }
                for r in self.replays
            ],
            "verified": self.verified,
            "degraded": self.degraded,
            "crashed": self.crashed,
            "traceback": self.traceback,
            "final_op": self.final_op,
        }


def _decisive_from(d: Any) -> DecisiveError:
    err = DecisiveError(**d)
    for name in ("op_id", "name", "label", "mode", "rationale"):
        if not isinstance(getattr(err, name), str):
            raise TypeError(f"decisive {name} must be a string, got {type(getattr(err, name)).__name__}")
    return err


def _final_op(trace: Trace) -> str:
    final = trace.answer_var
    if final is None:
        raise TracingError(f"trace {trace.id} has no final variable to attribute")
    prod = trace.variables[final].producer
    if prod is None:
        raise TracingError(f"final variable {final!r} of trace {trace.id} has no producing operation")
    return prod


def _answer(trace: Trace) -> Any:
    vid = trace.answer_var
    return None if vid is None else trace.variables[vid].value


def _crash(trace: Trace, gold: Gold, method: str, tax: Taxonomy) -> Attribution | None:
    """The attribution of a run whose answer is an exception record, or None."""
    vid = trace.answer_var
    if vid is None or not trace.variables[vid].meta.get("error"):
        return None
    oid = trace.variables[vid].producer
    if oid is None:
        return None
    op = trace.operations[oid]
    why = f"raised {op.error}"
    verdict = Verdict(oid, True, "self", "exception", why)
    return Attribution(
        True,
        trace.variables[vid].value,
        gold,
        decisive=[
            DecisiveError(oid, op.name, trace.operation_label(oid), tax.normalise("exception", op.kind), why)
        ],
        candidates=[oid],
        verdicts={oid: verdict},
        method=method,
        crashed=True,
        traceback=str(op.meta.get("traceback", "")),
        final_op=oid,
    )


def _decisive(
    trace: Trace, op_ids: Sequence[str], verdicts: Mapping[str, Verdict], taxonomy: Taxonomy
) -> list[DecisiveError]:
    out = []
    for oid in op_ids:
        op = trace.operations[oid]
        v = verdicts.get(oid)
        mode = taxonomy.normalise(v.mode if v else None, op.kind)
        out.append(DecisiveError(oid, op.name, trace.operation_label(oid), mode, v.rationale if v else ""))
    return out


def _suspect_subgraph(
    trace: Trace, frontier: Sequence[str], window: int, judged: Mapping[str, Any]
) -> list[str]:
    chosen = dict.fromkeys(frontier)
    layer = list(frontier)
    for _ in range(window):
        nxt: list[str] = []
        for oid in layer:
            for p in trace.parent_operations(oid):
                if p not in chosen and p not in judged:
                    chosen[p] = None
                    nxt.append(p)
        layer = nxt
    order = {o: i for i, o in enumerate(trace.topological_operations())}
    return sorted((o for o in chosen if o not in judged), key=order.__getitem__)


def attribute(
    trace: Trace,
    gold: Gold,
    judge: Judge,
    *,
    corrector: Corrector | None = None,
    config: AttributionConfig | None = None,
    taxonomy: Taxonomy | None = None,
    handles: Mapping[str, Callable[..., Any]] | None = None,
) -> Attribution:
    """Find the decisive errors behind a wrong final answer.

    Args:
        trace: The recorded run (with handles, for verification by replay).
        gold: Gold answer and evidence.
        judge: Decides which operations in a subgraph are faulty.
        corrector: Proposes corrected outputs for replay; by default the judge's own
            ``correct`` method if it has one, else :class:`~zjulab.memtrace.judges.EvidenceCorrector`.
        config: Search settings.
        taxonomy: Failure modes.
        handles: Extra callables for replay, by operation id.

    Returns:
        The attribution (``failed=False`` and no decisive set when the answer is right).

    Raises:
        TracingError: The trace has no final variable or it has no producer.
    """
    cfg = config or AttributionConfig()
    tax = taxonomy or DEFAULT_TAXONOMY
    method = f"iterative/{getattr(judge, 'name', type(judge).__name__)}"
    answer = _answer(trace)
    final_op = _final_op(trace)
    crash = _crash(trace, gold, method, tax)
    if crash is None and gold.is_correct(answer):
        return Attribution(False, answer, gold, method=method)

    verdicts: dict[str, Verdict] = {}
    rounds: list[list[str]] = []
    frontier = [final_op]
    while frontier and len(rounds) < cfg.max_rounds:
        sub = _suspect_subgraph(trace, frontier, cfg.window, verdicts)
        if not sub:
            break
        rounds.append(sub)
        got = judge.judge(trace, sub, gold)
        for oid in sub:
            verdicts[oid] = got.get(oid) or Verdict(oid, False, rationale="no verdict")
        nxt: dict[str, None] = {}
        for oid in sub:
            if verdicts[oid].faulty:
                for p in trace.parent_operations(oid):
                    if p not in verdicts:
                        nxt[p] = None
        frontier = list(nxt)

    topo = trace.topological_operations()
    faulty = [o for o in topo if o in verdicts and verdicts[o].faulty]
    fset = set(faulty)

    def no_faulty_parent(o: str) -> bool:
        return not any(p in fset for p in trace.parent_operations(o))

    candidates = [
        o
        for o in faulty
        if verdicts[o].origin == "self" or (verdicts[o].origin == "unknown" and no_faulty_parent(o))
    ]
    degraded = False
    if not candidates and faulty:
        candidates = [o for o in faulty if no_faulty_parent(o)] or faulty[:1]
        degraded = True
    if crash is not None and (degraded or not candidates or candidates == [final_op]):
        # the crashing step had what it needed (or the judge names no other): it is decisive
        return crash
    if not candidates:
        candidates = [final_op]
        degraded = True
        verdicts.setdefault(final_op, Verdict(final_op, False, rationale="judge flagged nothing"))

    result = Attribution(
        True,
        answer,
        gold,
        candidates=candidates,
        verdicts=verdicts,
        rounds=rounds,
        method=method,
        degraded=degraded,
        final_op=final_op,
    )
    if crash is not None:
        # the step crashed because an earlier one starved it (empty hits, a lost fact): the
        # search went upstream; the crash and its traceback stay on the attribution
        result.crashed = True
        result.traceback = crash.traceback
    if not cfg.verify:
        result.decisive = _decisive(trace, candidates, verdicts, tax)
        return result

    fixer: Corrector
    if corrector is not None:
        fixer = corrector
    elif hasattr(judge, "correct"):
        fixer = judge  # type: ignore[assignment]
    else:
        fixer = EvidenceCorrector()

    # correcting the answer-producing operation means writing the gold answer: no test at all
    testable = [o for o in candidates if o != final_op]
    found = _verify(trace, gold, testable, verdicts, fixer, cfg, handles, result) if testable else None
    if found is None and cfg.widen:
        pool = list(dict.fromkeys([*testable, *(o for o in faulty if o != final_op)]))
        if len(pool) > len(testable):
            found = _verify(trace, gold, pool, verdicts, fixer, cfg, handles, result)
    if found is None:
        result.decisive = _decisive(trace, candidates, verdicts, tax)
        result.verified = False
    else:
        result.decisive = _decisive(trace, found, verdicts, tax)
        result.verified = True
    return result


def _verify(
    trace: Trace,
    gold: Gold,
    pool: Sequence[str],
    verdicts: Mapping[str, Verdict],
    fixer: Corrector,
    cfg: AttributionConfig,
    handles: Mapping[str, Callable[..., Any]] | None,
    result: Attribution,
) -> list[str] | None:
    """Smallest (then earliest) subset of ``pool`` whose correction rescues the answer."""
    corrections: dict[str, Any] = {}
    for oid in pool:
        v = verdicts.get(oid)
        if v is not None and v.has_correction:
            corrections[oid] = v.correction
            continue
        ok, value = fixer.correct(trace, oid, gold)
        if ok:
            corrections[oid] = value
    usable = [o for o in pool if o in corrections]
    if not usable:
        logger.info("no corrections available for %s; decisive set left unverified", list(pool))
        return None
    budget = cfg.max_replays - len(result.replays)
    for size in range(1, min(cfg.max_set_size, len(usable)) + 1):
        for subset in itertools.combinations(usable, size):
            if budget <= 0:
                return None
            budget -= 1
            try:
                rep = replay(trace, {o: corrections[o] for o in subset}, handles=handles)
            except ReplayError as exc:
                logger.warning(
                    "replay failed, decisive set left unverified: %s", DEFAULT_REDACTOR.text(str(exc))
                )
                return None
            rescued = gold.is_correct(rep.final)
            result.replays.append(ReplayEvidence(list(subset), rep.final, rescued, rep.executed))
            if rescued:
                return list(subset)
    return None


@dataclass
class RootCause:
    """The JSON the all-at-once judge answers with."""

    op: str
    mode: str = ""
    reason: str = ""


def attribute_all_at_once(
    trace: Trace,
    gold: Gold,
    model: ChatModel,
    *,
    taxonomy: Taxonomy | None = None,
    max_chars: int = 160,
    max_retries: int = 1,
    **sampling: Any,
) -> Attribution:
    """Baseline: show the whole trace to a chat model once and ask for the root cause.

    No descent and no replay. An unusable answer falls back to the final operation
    (``degraded=True``).

    Args:
        trace: The recorded run.
        gold: Gold answer and evidence.
        model: The chat model.
        taxonomy: Failure modes.
        max_chars: Characters of each value shown.
        max_retries: Re-asks on an unparsable answer.
        **sampling: Passed to ``model.generate`` (greedy, 96 new tokens by default).

    Returns:
        The attribution with at most one decisive operation.
    """
    tax = taxonomy or DEFAULT_TAXONOMY
    answer = _answer(trace)
    final_op = _final_op(trace)
    crash = _crash(trace, gold, "all-at-once", tax)
    if crash is not None:
        return crash
    if gold.is_correct(answer):
        return Attribution(False, answer, gold, method="all-at-once")
    ops = trace.ancestor_operations(trace.answer_var)  # type: ignore[arg-type]
    user = (
        f"{gold_block(gold)}\n\nThe pipeline answered: {describe_value(answer, max_chars)}\n\n"
        f"Operations:\n{render_operations(trace, ops, max_chars)}\n\nFailure modes:\n{tax.describe()}\n\n"
        "Which single operation is the root cause of the wrong answer? " + schema_prompt(RootCause)
    )
    sampling.setdefault("max_new_tokens", 96)
    reply = ask_structured(
        model,
        "You debug memory pipelines of LLM assistants.",
        user,
        RootCause,
        max_retries=max_retries,
        **sampling,
    )
    oid = resolve_op_ref(reply.op, ops, trace) if reply is not None else None
    degraded = oid is None
    if oid is None:
        oid = final_op
    mode = tax.normalise(reply.mode if reply is not None else None, trace.operations[oid].kind)
    verdict = Verdict(oid, True, "self", mode, reply.reason if reply is not None else "judge answer unusable")
    return Attribution(
        True,
        answer,
        gold,
        decisive=_decisive(trace, [oid], {oid: verdict}, tax),
        candidates=[oid],
        verdicts={oid: verdict},
        rounds=[list(ops)],
        method="all-at-once",
        degraded=degraded,
    )


def last_operation(trace: Trace, gold: Gold, *, taxonomy: Taxonomy | None = None) -> Attribution:
    """Baseline: blame the operation that produced the final answer."""
    tax = taxonomy or DEFAULT_TAXONOMY
    answer = _answer(trace)
    oid = _final_op(trace)
    if trace.variables[trace.answer_var].meta.get("error"):  # type: ignore[index]
        pass  # the last operation is the crashed one: blamed below like any other
    elif gold.is_correct(answer):
        return Attribution(False, answer, gold, method="last-operation")
    return Attribution(True, answer, gold, decisive=_decisive(trace, [oid], {}, tax), method="last-operation")


def random_operation(
    trace: Trace, gold: Gold, *, rng: random.Random | None = None, taxonomy: Taxonomy | None = None
) -> Attribution:
    """Baseline: blame a uniformly random operation upstream of the final answer."""
    tax = taxonomy or DEFAULT_TAXONOMY
    answer = _answer(trace)
    final_op = _final_op(trace)
    if not trace.variables[trace.answer_var].meta.get("error") and gold.is_correct(answer):  # type: ignore[index]
        return Attribution(False, answer, gold, method="random")
    ops = [*trace.ancestor_operations(final_op), final_op]
    oid = (rng or random.Random(0)).choice(ops)
    return Attribution(True, answer, gold, decisive=_decisive(trace, [oid], {}, tax), method="random")
