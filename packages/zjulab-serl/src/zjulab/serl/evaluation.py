r"""Pairwise evaluation against a reference model, with AlpacaEval-format files.

:func:`pairwise_win_rate` asks a judge (any :class:`~zjulab.common.protocols.ChatModel`) to
compare each model output with the reference output for the same instruction, in both orders,
using the same prompt and verdict parser as training. An item scores 1 when every valid verdict
prefers the model, 0 when every one prefers the reference, 0.5 on a split.

The length-controlled win rate follows the idea of AlpacaEval 2's LC win rate in a reduced form:
a logistic model of the item scores on the normalised length difference::

    P(model wins) = sigmoid(b0 + b1 * tanh((len_model - len_reference) / std))

is fitted, and the LC win rate is ``100 * sigmoid(b0)``: the win rate the judge would give if
both outputs had the same length. (AlpacaEval's GLM also has an instruction-difficulty term
fitted across many models; with one model and one reference it is not identifiable.) Lengths are
in words, as in SERL's reward.

:func:`write_alpacaeval_outputs` writes ``[{"instruction", "output", "generator", "dataset"}]``,
the format ``alpaca_eval --model_outputs`` reads, so the official evaluator can be run on them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zjulab.common.errors import StoreError
from zjulab.common.io import read_json, write_json
from zjulab.common.protocols import ChatModel
from zjulab.serl.answers import AnswerStore, ask
from zjulab.serl.config import JudgeConfig
from zjulab.serl.errors import SERLInputError, SERLStoreError
from zjulab.serl.pairs import render_judge_prompt, strip_reasoning, word_count

__all__ = [
    "PairwiseRecord",
    "WinRateResult",
    "generate_outputs",
    "length_controlled_win_rate",
    "pairwise_win_rate",
    "read_alpacaeval_outputs",
    "write_alpacaeval_outputs",
    "write_annotations",
]

logger = logging.getLogger(__name__)


@dataclass
class PairwiseRecord:
    """One instruction's comparison.

    Attributes:
        instruction: The instruction.
        output: The evaluated model's output.
        reference: The reference output.
        verdicts: Per judgment, 1.0 if it preferred the model, 0.0 the reference, None if invalid.
        raw: The judge's raw outputs.
        score: Mean of the valid verdicts (None when there is none).
    """

    instruction: str
    output: str
    reference: str
    verdicts: list[float | None]
    raw: list[str]
    score: float | None

    @property
    def preference(self) -> float | None:
        """AlpacaEval's convention: 1 = reference (output_1) wins, 2 = model (output_2) wins."""
        return None if self.score is None else 1.0 + self.score


@dataclass
class WinRateResult:
    """Win rate of a model against a reference, in percent.

    Attributes:
        win_rate: Mean item score x 100 over items with a valid verdict.
        standard_error: Standard error of ``win_rate``.
        lc_win_rate: Length-controlled win rate (see the module docstring).
        n: Items with at least one valid verdict.
        wins: Items the model won outright.
        losses: Items the reference won outright.
        ties: Items with split verdicts.
        invalid: Items without any valid verdict (left out of the rates).
        records: Per-item details.
    """

    win_rate: float
    standard_error: float
    lc_win_rate: float
    n: int
    wins: int
    losses: int
    ties: int
    invalid: int
    records: list[PairwiseRecord] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary numbers (without per-item records)."""
        return {
            "win_rate": self.win_rate,
            "standard_error": self.standard_error,
            "length_controlled_winrate": self.lc_win_rate,
            "n": self.n,
            "n_wins": self.wins,
            "n_losses": self.losses,
            "n_ties": self.ties,
            "n_invalid": self.invalid,
        }


def _sigmoid(z: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def length_controlled_win_rate(
    scores: Sequence[float] | np.ndarray,
    model_lengths: Sequence[int],
    reference_lengths: Sequence[int],
    *,
    l2: float = 1e-6,
    max_iter: int = 100,
) -> float:
    """LC win rate in percent: ``100 * sigmoid(b0)`` of the length-regressed logistic model.

    Args:
        scores: Item scores in ``[0, 1]`` (1 = model preferred).
        model_lengths: Model output lengths (words).
        reference_lengths: Reference output lengths (words).
        l2: Ridge penalty that keeps the fit finite when wins are perfectly separable.
        max_iter: Newton steps at most.

    Raises:
        SERLInputError: Lengths differ, no items, or scores outside ``[0, 1]``.
    """
    y = np.asarray(scores, dtype=np.float64)
    if not (len(y) == len(model_lengths) == len(reference_lengths)) or len(y) == 0:
        raise SERLInputError(
            f"need equally many scores and lengths, got {len(y)}, {len(model_lengths)}, {len(reference_lengths)}"
        )
    if np.any((y < 0) | (y > 1)):
        raise SERLInputError("scores must lie in [0, 1]")
    diff = np.asarray(model_lengths, dtype=np.float64) - np.asarray(reference_lengths, dtype=np.float64)
    sd = diff.std()
    x = np.tanh(diff / sd) if sd > 0 else np.zeros_like(diff)
    design = np.stack([np.ones_like(x), x], axis=1)
    beta = np.zeros(2)
    for _ in range(max_iter):
        p = _sigmoid(design @ beta)
        grad = design.T @ (p - y) + l2 * beta
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(100.0 * _sigmoid(beta[0]))


def pairwise_win_rate(
    instructions: Sequence[str],
    outputs: Sequence[str],
    references: Sequence[str],
    judge: ChatModel,
    *,
    config: JudgeConfig | None = None,
    both_orders: bool = True,
    answers: AnswerStore | None = None,
    **sampling: Any,
) -> WinRateResult:
    """Judge model outputs against reference outputs and report the (LC) win rate.

    Args:
        instructions: The instructions.
        outputs: The evaluated model's outputs, aligned with ``instructions``.
        references: The reference model's outputs, aligned with ``instructions``.
        judge: The judge chat model.
        config: Judge settings (template, verdict format, reasoning marker, judge sampling).
        both_orders: Judge each item with the model shown first and second (position-bias
            control); ``False`` shows the reference first only, as AlpacaEval does.
        answers: Where the judge's answers are kept (see :mod:`zjulab.serl.answers`): after a
            :class:`~zjulab.serl.errors.SERLRemoteError`, calling again with the same store sends
            only the requests that failed.
        **sampling: Overrides of the judge's sampling settings.

    A judge output cut off at the token limit has no verdict (the item counts as invalid if no
    other judgment of it is valid).

    Raises:
        SERLInputError: The three lists differ in length or are empty.
        SERLRemoteError: Some judge requests got no answer.
    """
    cfg = config or JudgeConfig()
    if not (len(instructions) == len(outputs) == len(references)) or not instructions:
        raise SERLInputError(
            f"need equally many instructions, outputs and references, got "
            f"{len(instructions)}, {len(outputs)}, {len(references)}"
        )
    clean = (lambda t: strip_reasoning(t, cfg.reasoning_end)) if cfg.strip_reasoning else (lambda t: t)
    prompts: list[str] = []
    model_first: list[bool] = []
    for instr, out, ref in zip(instructions, outputs, references):
        o, r = clean(out), clean(ref)
        prompts.append(render_judge_prompt(instr, r, o, cfg.judge_template))
        model_first.append(False)
        if both_orders:
            prompts.append(render_judge_prompt(instr, o, r, cfg.judge_template))
            model_first.append(True)
    opts: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature}
    opts.update(sampling)
    got = ask(judge, [[{"role": "user", "content": p}] for p in prompts], answers, **opts)
    raw = [a.text for a in got]
    per_item = 2 if both_orders else 1
    records: list[PairwiseRecord] = []
    for i, (instr, out, ref) in enumerate(zip(instructions, outputs, references)):
        votes: list[float | None] = []
        texts = raw[i * per_item : (i + 1) * per_item]
        done = [a.finished for a in got[i * per_item : (i + 1) * per_item]]
        for text, first, ok in zip(texts, model_first[i * per_item : (i + 1) * per_item], done):
            v = cfg.parse(text) if ok else None
            votes.append(None if v is None else float((v == 1) == first))
        valid = [v for v in votes if v is not None]
        score = sum(valid) / len(valid) if valid else None
        records.append(PairwiseRecord(instr, out, ref, votes, list(texts), score))
    scored = [r for r in records if r.score is not None]
    invalid = len(records) - len(scored)
    if invalid:
        logger.warning("%d of %d items got no valid verdict and are left out", invalid, len(records))
    if not scored:
        return WinRateResult(math.nan, math.nan, math.nan, 0, 0, 0, 0, invalid, records)
    s = np.array([r.score for r in scored], dtype=np.float64)
    se = float(100 * s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else math.nan
    lc = length_controlled_win_rate(
        s,
        [word_count(clean(r.output)) for r in scored],
        [word_count(clean(r.reference)) for r in scored],
    )
    return WinRateResult(
        win_rate=float(100 * s.mean()),
        standard_error=se,
        lc_win_rate=lc,
        n=len(s),
        wins=int((s == 1).sum()),
        losses=int((s == 0).sum()),
        ties=int(((s > 0) & (s < 1)).sum()),
        invalid=invalid,
        records=records,
    )


def generate_outputs(
    chat_model: ChatModel, instructions: Sequence[str], answers: AnswerStore | None = None, **sampling: Any
) -> list[str]:
    """Answer each instruction as a single user turn (for an evaluation run).

    Args:
        chat_model: The model evaluated.
        instructions: The instructions.
        answers: Where the answers are kept (see :mod:`zjulab.serl.answers`); after a
            :class:`~zjulab.serl.errors.SERLRemoteError` a new call with it asks only the rest.
        **sampling: Sampling keywords.

    Raises:
        SERLRemoteError: Some instructions got no answer.
    """
    got = ask(chat_model, [[{"role": "user", "content": i}] for i in instructions], answers, **sampling)
    return [a.text for a in got]


def write_alpacaeval_outputs(
    path: str | os.PathLike[str],
    instructions: Sequence[str],
    outputs: Sequence[str],
    generator: str,
    dataset: str | None = None,
) -> None:
    """Write model outputs as AlpacaEval's ``model_outputs`` JSON (atomically).

    Raises:
        SERLInputError: The lists differ in length.
    """
    if len(instructions) != len(outputs):
        raise SERLInputError(f"{len(instructions)} instructions but {len(outputs)} outputs")
    rows: list[dict[str, Any]] = []
    for instr, out in zip(instructions, outputs):
        row: dict[str, Any] = {"instruction": instr, "output": out, "generator": generator}
        if dataset is not None:
            row["dataset"] = dataset
        rows.append(row)
    write_json(path, rows)


def read_alpacaeval_outputs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read an AlpacaEval outputs file (a JSON list, or JSON lines) of ``instruction``/``output`` rows.

    Raises:
        SERLStoreError: Missing file, invalid JSON, or a row without ``instruction`` / ``output``
            (the message names the file and the row).
    """
    from zjulab.common.io import read_jsonl

    p = os.fspath(path)
    try:
        data: Any = read_jsonl(p) if p.endswith(".jsonl") else read_json(p)
    except StoreError as exc:
        raise SERLStoreError(str(exc)) from exc
    if not isinstance(data, list):
        raise SERLStoreError(f"{p}: expected a JSON list of outputs, got {type(data).__name__}")
    for i, row in enumerate(data):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("instruction"), str)
            or not isinstance(row.get("output"), str)
        ):
            raise SERLStoreError(f"{p}: row {i} needs string 'instruction' and 'output' fields")
    return data


def write_annotations(
    path: str | os.PathLike[str], result: WinRateResult, generator: str, reference: str
) -> None:
    """Write per-item judgments in AlpacaEval's annotation layout (``preference`` 1..2), atomically.

    The file is ``{"format", "version", "summary", "annotations": [...]}``; each annotation has
    ``output_1`` = the reference and ``output_2`` = the model, as in AlpacaEval.
    """
    rows = [
        {
            "instruction": r.instruction,
            "output_1": r.reference,
            "output_2": r.output,
            "generator_1": reference,
            "generator_2": generator,
            "preference": r.preference,
            "raw_completion": r.raw,
        }
        for r in result.records
    ]
    write_json(
        path,
        {"format": "zjulab-serl/annotations", "version": 1, "summary": result.to_dict(), "annotations": rows},
    )
