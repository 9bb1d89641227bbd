"""The reduced MemTraceBench and the scoring of attribution methods on it.

LoCoMo questions run through the reference pipelines with planted faults of known root cause.
For each usable LoCoMo question (one evidence turn that contains the whole gold answer), a
case gets the evidence session and its neighbours. Each reference pipeline runs it clean; if
the clean answer is right, every fault plan of that pipeline is planted in turn, and the run
becomes a case when the fault flips the answer to wrong. The case's gold label is the faulty
operation (``name#k``) and the fault's failure mode. Some clean runs are kept as controls.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.common.protocols import TextEncoder
from zjulab.memtrace.attribution import Attribution
from zjulab.memtrace.config import BenchConfig, PipelineConfig
from zjulab.memtrace.gold import Gold
from zjulab.memtrace.graph import Trace
from zjulab.memtrace.locomo import load_locomo
from zjulab.memtrace.matching import answer_matches
from zjulab.memtrace.pipelines import Fault, corrupt_text, make_pipeline

__all__ = ["BenchCase", "BenchReport", "MethodScore", "build_memtracebench", "evaluate", "fault_plans"]

logger = logging.getLogger(__name__)


@dataclass
class BenchCase:
    """One benchmark case.

    Args:
        id: Case id.
        pipeline: Reference pipeline name.
        gold: Question, gold answer and evidence.
        sessions: The dialogue given to the pipeline (``"Speaker: text"`` turns per session).
        fault: The planted fault (None for a control).
        gold_op: Label of the faulty operation (``"extract#1"``), None for a control.
        gold_mode: Failure mode of the fault, None for a control.
        trace: The recorded (faulted) run.
        reference: The clean run of the same pipeline on the same input.
    """

    id: str
    pipeline: str
    gold: Gold
    sessions: list[list[str]]
    fault: Fault | None
    gold_op: str | None
    gold_mode: str | None
    trace: Trace
    reference: Trace

    @property
    def is_control(self) -> bool:
        """Whether the case has no fault."""
        return self.fault is None


def fault_plans(
    pipeline: str, evidence: str, session: int, n_sessions: int, answer: str
) -> list[tuple[Fault, str]]:
    """The faults planted for one question, each with the label of the operation it sits in.

    Args:
        pipeline: Pipeline name.
        evidence: The evidence turn (``"Speaker: text"``).
        session: Index of the evidence session within the case.
        n_sessions: Sessions in the case.
        answer: Gold answer (used to corrupt the evidence).
    """
    bad = corrupt_text(evidence, answer)
    later = session + 1 if session + 1 < n_sessions else session
    if pipeline == "mem0":
        return [
            (Fault("extract", "drop", evidence, session), f"extract#{session}"),
            (Fault("extract", "corrupt", evidence, session, bad), f"extract#{session}"),
            (Fault("update", "overwrite", evidence, later), f"update#{later}"),
            (Fault("retrieve", "near_miss", evidence), "retrieve#0"),
            (Fault("generate", "ignore_evidence", evidence), "generate#0"),
        ]
    if pipeline == "rag":
        return [
            (Fault("chunk", "drop", evidence, session), f"chunk#{session}"),
            (Fault("retrieve", "near_miss", evidence), "retrieve#0"),
            (Fault("generate", "ignore_evidence", evidence), "generate#0"),
        ]
    return [
        (Fault("compress", "drop", evidence, session), f"compress#{session}"),
        (Fault("compress", "corrupt", evidence, session, bad), f"compress#{session}"),
        (Fault("generate", "ignore_evidence", evidence), "generate#0"),
    ]


def build_memtracebench(
    locomo_path: str | os.PathLike[str],
    encoder: TextEncoder,
    config: BenchConfig | None = None,
    pipeline_config: PipelineConfig | None = None,
) -> list[BenchCase]:
    """Build the benchmark cases (running every pipeline, clean and faulted).

    Args:
        locomo_path: Path of ``locomo10.json``.
        encoder: Encoder used by the pipelines (``HashingEncoder`` keeps it fast).
        config: Builder settings.
        pipeline_config: Pipeline settings.

    Returns:
        Faulted cases followed by controls.
    """
    cfg = config or BenchConfig()
    convs = load_locomo(locomo_path)
    pool: list[tuple[Any, Any, Any]] = []
    for conv in convs:
        for qa in conv.qa:
            if qa.category not in cfg.categories or len(qa.evidence) != 1:
                continue
            turn = conv.turn(qa.evidence[0])
            if turn is None or not answer_matches(turn.text, qa.answer, cfg.min_answer_recall, qa.question):
                continue
            pool.append((conv, qa, turn))
    rng = random.Random(cfg.seed)
    rng.shuffle(pool)
    pool = pool[: cfg.max_questions]
    logger.info("MemTraceBench: %d usable questions", len(pool))

    cases: list[BenchCase] = []
    controls: list[BenchCase] = []
    for qi, (conv, qa, turn) in enumerate(pool):
        numbers = list(conv.sessions)
        pos = numbers.index(turn.session)
        lo = max(0, min(pos - (cfg.sessions_per_case - 1) // 2, len(numbers) - cfg.sessions_per_case))
        chosen = numbers[lo : lo + cfg.sessions_per_case]
        sessions = [[t.line for t in conv.sessions[s]] for s in chosen]
        ev_idx = chosen.index(turn.session)
        gold = Gold(qa.answer, (turn.line,), qa.question)
        for pname in cfg.pipelines:
            clean_answer, reference = make_pipeline(pname, encoder, config=pipeline_config).run(
                sessions, qa.question
            )
            if not gold.is_correct(clean_answer):
                continue
            base = f"{conv.sample_id}/q{qi}/{pname}"
            if sum(c.pipeline == pname for c in controls) < cfg.controls_per_pipeline:
                controls.append(
                    BenchCase(
                        f"{base}/control", pname, gold, sessions, None, None, None, reference, reference
                    )
                )
            for fault, label in fault_plans(pname, turn.line, ev_idx, len(sessions), qa.answer):
                answer, trace = make_pipeline(pname, encoder, config=pipeline_config, faults=[fault]).run(
                    sessions, qa.question
                )
                if gold.is_correct(answer):
                    continue  # the fault is masked: not a failure case
                cases.append(
                    BenchCase(
                        f"{base}/{fault.op}-{fault.kind}",
                        pname,
                        gold,
                        sessions,
                        fault,
                        label,
                        fault.mode,
                        trace,
                        reference,
                    )
                )
    return cases + controls


@dataclass
class MethodScore:
    """Accuracy of one attribution method.

    Args:
        method: Method name.
        n_faulted: Faulted cases scored.
        op_correct: Cases whose decisive set is exactly the planted operation.
        mode_correct: Cases with the right operation and the right failure mode.
        n_controls: Control cases scored.
        controls_correct: Controls with no decisive error reported.
        by_group: ``"pipeline/mode"`` -> [cases, operation-correct].
        degraded: Cases where the method fell back.
    """

    method: str
    n_faulted: int = 0
    op_correct: int = 0
    mode_correct: int = 0
    n_controls: int = 0
    controls_correct: int = 0
    by_group: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    degraded: int = 0

    @property
    def op_accuracy(self) -> float:
        """Operation-level accuracy over faulted cases."""
        return self.op_correct / self.n_faulted if self.n_faulted else 0.0

    @property
    def mode_accuracy(self) -> float:
        """Mode-level accuracy over faulted cases."""
        return self.mode_correct / self.n_faulted if self.n_faulted else 0.0

    @property
    def control_accuracy(self) -> float:
        """Fraction of controls with nothing blamed."""
        return self.controls_correct / self.n_controls if self.n_controls else 0.0


@dataclass
class BenchReport:
    """Scores of every method, plus case counts."""

    scores: dict[str, MethodScore]
    counts: dict[str, int]

    def table(self) -> str:
        """A Markdown table of the scores."""
        rows = [
            "| method | faulted cases | operation acc. | mode acc. | controls ok | degraded |",
            "|---|---|---|---|---|---|",
        ]
        for s in self.scores.values():
            rows.append(
                f"| {s.method} | {s.n_faulted} | {s.op_accuracy:.3f} | {s.mode_accuracy:.3f} | "
                f"{s.controls_correct}/{s.n_controls} | {s.degraded} |"
            )
        return "\n".join(rows)

    def group_table(self, method: str) -> str:
        """Operation-level accuracy of one method per pipeline and planted mode."""
        s = self.scores[method]
        rows = ["| pipeline/mode | cases | operation acc. |", "|---|---|---|"]
        for k in sorted(s.by_group):
            n, ok = s.by_group[k]
            rows.append(f"| {k} | {n} | {ok / n:.3f} |")
        return "\n".join(rows)


def evaluate(
    cases: Sequence[BenchCase],
    methods: Mapping[str, Callable[[BenchCase], Attribution]],
    on_case: Callable[[BenchCase, dict[str, Attribution]], None] | None = None,
) -> BenchReport:
    """Score attribution methods on benchmark cases.

    A faulted case is operation-correct when the decisive set is exactly the planted operation,
    mode-correct when in addition its mode is the planted one. A control is correct when nothing
    is blamed.

    Args:
        cases: From :func:`build_memtracebench`.
        methods: Name -> function attributing one case.
        on_case: Called after each case with the attributions of every method (progress).

    Returns:
        The report.
    """
    scores = {name: MethodScore(name) for name in methods}
    for case in cases:
        done: dict[str, Attribution] = {}
        for name, fn in methods.items():
            att = done[name] = fn(case)
            s = scores[name]
            s.degraded += int(att.degraded)
            if case.is_control:
                s.n_controls += 1
                s.controls_correct += int(not att.decisive)
                continue
            labels = {case.trace.operation_label(d.op_id) for d in att.decisive}
            ok = labels == {case.gold_op}
            s.n_faulted += 1
            s.op_correct += int(ok)
            s.mode_correct += int(ok and att.modes == [case.gold_mode])
            g = s.by_group[f"{case.pipeline}/{case.gold_mode}"]
            g[0] += 1
            g[1] += int(ok)
        if on_case is not None:
            on_case(case, done)
    counts = Counter(c.pipeline if not c.is_control else "control" for c in cases)
    return BenchReport(scores, dict(counts))


def stratified(cases: Sequence[BenchCase], limit: int) -> list[BenchCase]:
    """Up to ``limit`` faulted cases, taken round-robin over (pipeline, mode) groups."""
    groups: dict[str, list[BenchCase]] = defaultdict(list)
    for c in cases:
        if not c.is_control:
            groups[f"{c.pipeline}/{c.gold_mode}"].append(c)
    out: list[BenchCase] = []
    keys = sorted(groups)
    i = 0
    while len(out) < limit and any(groups.values()):
        g = groups[keys[i % len(keys)]]
        if g:
            out.append(g.pop(0))
        i += 1
    return out


def default_methods(seed: int = 0) -> dict[str, Callable[[BenchCase], Attribution]]:
    """The iterative method with the oracle and evidence judges, and the trivial baselines.

    The baselines are the surface-cue rule, the last operation and a random operation.
    """
    from zjulab.memtrace.attribution import attribute, last_operation, random_operation
    from zjulab.memtrace.judges import EvidenceJudge, ReferenceJudge

    rng = random.Random(seed)
    return {
        "iterative / oracle judge": lambda c: attribute(c.trace, c.gold, ReferenceJudge(c.reference)),
        "iterative / evidence judge": lambda c: attribute(c.trace, c.gold, EvidenceJudge()),
        "surface cue (no judge)": lambda c: surface_cue(c.trace, c.gold),
        "last operation": lambda c: last_operation(c.trace, c.gold),
        "random operation": lambda c: random_operation(c.trace, c.gold, rng=rng),
    }


_RETRIEVAL_KINDS = frozenset({"retrieve", "rerank", "search"})


def _lines(value: Any) -> set[str]:
    from zjulab.memtrace.matching import flatten_text

    return {line for s in flatten_text(value) for line in s.split("\n") if line}


def surface_cue(trace: Trace, gold: Gold) -> Attribution:
    """Trivial baseline that reads no judge, gold evidence or model.

    It blames the earliest non-retrieval operation whose output lost a line of its input,
    else the last operation.

    A benchmark this rule solves measures surface cues of the planted faults, not attribution.
    """
    from zjulab.memtrace.attribution import _decisive, last_operation
    from zjulab.memtrace.taxonomy import DEFAULT_TAXONOMY

    base = last_operation(trace, gold)
    if not base.failed:
        return base
    for oid in trace.topological_operations():
        op = trace.operations[oid]
        if op.kind in _RETRIEVAL_KINDS or not op.inputs or not op.outputs:
            continue
        seen = set().union(*(_lines(trace.variables[v].value) for v in op.inputs))
        out = set().union(*(_lines(trace.variables[v].value) for v in op.outputs))
        if seen - out:
            base.decisive = _decisive(trace, [oid], {}, DEFAULT_TAXONOMY)
            break
    base.method = "surface cue"
    return base


def chat_methods(
    model: Any, max_chars: int = 120, max_new_tokens: int = 96, max_retries: int = 0
) -> dict[str, Callable[[BenchCase], Attribution]]:
    """Iterative attribution and the all-at-once baseline with the same chat model and budget.

    Args:
        model: The chat model.
        max_chars: Characters of each value shown.
        max_new_tokens: Answer budget per call (both methods).
        max_retries: Re-asks on an unparsable answer (both methods).
    """
    from zjulab.memtrace.attribution import attribute, attribute_all_at_once
    from zjulab.memtrace.judges import ChatJudge

    judge = ChatJudge(model, max_chars=max_chars, max_retries=max_retries, max_new_tokens=max_new_tokens)
    return {
        "iterative / chat judge": lambda c: attribute(c.trace, c.gold, judge),
        "all-at-once / chat judge": lambda c: attribute_all_at_once(
            c.trace,
            c.gold,
            model,
            max_chars=max_chars,
            max_retries=max_retries,
            max_new_tokens=max_new_tokens,
        ),
    }
