"""Closed loop: aggregate attributions, rewrite the guilty operation's prompt, test it by replay.

:func:`aggregate` counts decisive errors per operation name and per failure mode over a set
of attributed failures. :func:`optimize_prompts` shows the chat model the failure cases of the
most-blamed operation (its prompt, inputs, faulty output, the gold answer and the failure
mode) and asks for a better prompt. :func:`evaluate_prompt_update` replays each failed trace
with the new prompt patched into that operation and counts how many answers it rescues.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zjulab.common.protocols import ChatModel
from zjulab.common.structured import schema_prompt
from zjulab.memtrace.attribution import Attribution
from zjulab.memtrace.errors import ReplayError, TracingError
from zjulab.memtrace.gold import Gold
from zjulab.memtrace.graph import Trace
from zjulab.memtrace.judges import ask_structured, describe_value
from zjulab.memtrace.redaction import DEFAULT_REDACTOR
from zjulab.memtrace.replay import replay

__all__ = [
    "AttributionSummary",
    "PromptEvaluation",
    "PromptUpdate",
    "aggregate",
    "evaluate_prompt_update",
    "optimize_prompts",
]

logger = logging.getLogger(__name__)


@dataclass
class AttributionSummary:
    """Decisive-error counts over many attributions.

    Args:
        n: Attributions counted.
        n_failed: Of which failed answers.
        by_operation: Operation name -> decisive errors.
        by_mode: Failure mode -> decisive errors.
        by_pair: ``(operation name, mode)`` -> decisive errors.
    """

    n: int = 0
    n_failed: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    by_mode: Counter[str] = field(default_factory=Counter)
    by_pair: Counter[tuple[str, str]] = field(default_factory=Counter)

    def guilty(self) -> str | None:
        """The operation name with the most decisive errors (None when there are none)."""
        return self.by_operation.most_common(1)[0][0] if self.by_operation else None


def aggregate(attributions: Sequence[Attribution]) -> AttributionSummary:
    """Count decisive errors per operation name and per failure mode."""
    s = AttributionSummary()
    for a in attributions:
        s.n += 1
        s.n_failed += int(a.failed)
        for d in a.decisive:
            s.by_operation[d.name] += 1
            s.by_mode[d.mode] += 1
            s.by_pair[(d.name, d.mode)] += 1
    return s


@dataclass
class PromptRewrite:
    """The JSON the optimiser model answers with."""

    prompt: str
    reason: str = ""


@dataclass
class PromptUpdate:
    """A proposed prompt for one operation.

    Args:
        op_name: The operation.
        old_prompt: Its recorded prompt.
        new_prompt: The proposal (equal to ``old_prompt`` when the model's answer was unusable).
        n_failures: Failure cases shown to the model.
        reason: The model's reason.
        changed: Whether the prompt changed.
    """

    op_name: str
    old_prompt: str
    new_prompt: str
    n_failures: int
    reason: str = ""
    changed: bool = True


def _failure_block(trace: Trace, att: Attribution, op_name: str, max_chars: int) -> str | None:
    for d in att.decisive:
        if d.name != op_name:
            continue
        op = trace.operations[d.op_id]
        ins = "; ".join(
            f"{trace.variables[v].label}={describe_value(trace.variables[v].value, max_chars)}"
            for v in op.inputs
        )
        outs = "; ".join(describe_value(trace.variables[v].value, max_chars) for v in op.outputs)
        return (
            f"- inputs: {ins}\n  output: {outs}\n  failure mode: {d.mode}\n"
            f"  question: {att.gold.question or '?'}  gold answer: {att.gold.answer}"
        )
    return None


def optimize_prompts(
    failures: Sequence[tuple[Trace, Attribution]],
    model: ChatModel,
    *,
    op_name: str | None = None,
    max_examples: int = 4,
    max_chars: int = 200,
    **sampling: Any,
) -> PromptUpdate:
    """Ask ``model`` for a better prompt for the most-blamed operation.

    Args:
        failures: ``(trace, attribution)`` pairs of attributed failures.
        model: The chat model that rewrites the prompt.
        op_name: Operation to optimise (by default the most-blamed one that recorded a prompt).
        max_examples: Failure cases shown.
        max_chars: Characters of each value shown.
        **sampling: Passed to ``model.generate`` (greedy, 160 new tokens by default).

    Returns:
        The proposal.

    Raises:
        TracingError: No decisive errors, or the operation recorded no prompt.
    """
    summary = aggregate([a for _, a in failures])
    if not summary.by_operation:
        raise TracingError("no decisive errors to learn from")

    def prompt_of(op: str) -> str | None:
        return next(
            (o.prompt for t, _ in failures for o in t.operations.values() if o.name == op and o.prompt), None
        )

    if op_name is None:  # the most-blamed operation that recorded a prompt
        op_name = next((n for n, _ in summary.by_operation.most_common() if prompt_of(n)), None)
        if op_name is None:
            raise TracingError(
                f"none of the blamed operations {sorted(summary.by_operation)} recorded a prompt"
            )
    name = op_name
    old = prompt_of(name)
    if old is None:
        raise TracingError(f"operation {name!r} recorded no prompt to optimise")
    blocks = [b for t, a in failures if (b := _failure_block(t, a, name, max_chars)) is not None][
        :max_examples
    ]
    user = (
        f"The step {name!r} of a memory pipeline uses this prompt:\n{old}\n\n"
        f"It caused these failures:\n"
        + "\n".join(blocks)
        + "\n\nWrite an improved prompt for this step that "
        "avoids these failures. " + schema_prompt(PromptRewrite)
    )
    reply = ask_structured(
        model, "You improve the prompts of LLM memory pipelines.", user, PromptRewrite, **sampling
    )
    if reply is None or not reply.prompt.strip():
        logger.warning("prompt optimiser answer unusable; keeping the old prompt of %r", name)
        return PromptUpdate(name, old, old, len(blocks), "optimiser answer unusable", changed=False)
    new = reply.prompt.strip()
    return PromptUpdate(name, old, new, len(blocks), reply.reason, changed=new != old)


@dataclass
class PromptEvaluation:
    """End-task effect of a prompt update on replayed failures.

    Args:
        n: Traces replayed.
        correct_before: Correct answers before the update.
        correct_after: Correct answers after it.
        errors: Traces that could not be replayed.
    """

    n: int
    correct_before: int
    correct_after: int
    errors: int = 0

    @property
    def delta(self) -> float:
        """Change in accuracy (after minus before)."""
        return (self.correct_after - self.correct_before) / self.n if self.n else 0.0


def evaluate_prompt_update(
    cases: Sequence[tuple[Trace, Gold]], update: PromptUpdate, *, prompt_arg: str = "prompt"
) -> PromptEvaluation:
    """Replay each trace with ``update.new_prompt`` patched into every ``update.op_name`` call.

    Args:
        cases: ``(trace, gold)`` pairs; traces need live handles.
        update: The proposal.
        prompt_arg: Argument name of the prompt.

    Returns:
        Accuracy before and after.
    """
    before = after = errors = 0
    for trace, gold in cases:
        before += int(gold.is_correct(trace.final_value))
        patches = {
            op.id: {prompt_arg: update.new_prompt}
            for op in trace.operations.values()
            if op.name == update.op_name and (prompt_arg in op.kwargs or prompt_arg in op.arg_names)
        }
        if not patches:
            after += int(gold.is_correct(trace.final_value))
            continue
        try:
            after += int(gold.is_correct(replay(trace, patches=patches).final))
        except ReplayError as exc:
            logger.warning(
                "cannot replay %s with the new prompt: %s", trace.id, DEFAULT_REDACTOR.text(str(exc))
            )
            errors += 1
            after += int(gold.is_correct(trace.final_value))
    return PromptEvaluation(len(cases), before, after, errors)
