"""Run a system on a task, score it overall and per category, and print paper-style tables."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from zjulab.crs.errors import MetricInputError, UnknownLabelError
from zjulab.crs.metrics import rank_candidates
from zjulab.crs.samples import TASKS
from zjulab.crs.task_scores import (
    elicitation_scores,
    evaluation_scores,
    generation_scores,
    recommendation_scores,
    understanding_scores,
)

__all__ = [
    "HEADLINE",
    "PAPER_BASELINES",
    "evaluate_by_category",
    "format_table",
    "run_predictions",
    "score_predictions",
]

logger = logging.getLogger(__name__)

HEADLINE: dict[str, tuple[str, ...]] = {
    "understanding": ("f1", "pair_f1"),
    "elicitation": ("f1", "micro_f1"),
    "recommendation": ("hit@10", "hit@50", "mrr@10", "all_tied"),
    "generation": ("bleu1", "bleu2", "distinct2"),
    "evaluation": ("pearson", "spearman"),
}
"""Metrics shown per task in the summary table; the first is the paper's headline metric."""

PAPER_BASELINES: dict[str, tuple[str, str, float]] = {
    "understanding": ("Bert+BiLSTM+CRF", "F1", 0.6884),
    "elicitation": ("DiaMultiClass", "F1", 0.3662),
    "recommendation": ("Bert", "Hit@10", 0.1593),
    "generation": ("KBRD", "BLEU-1", 0.1253),
    "evaluation": ("DEB", "Pearson", 0.1617),
}
"""Best baseline per task reported by the U-NEED paper on U-NEED (all categories); a
different data set from the synthetic one, listed for orientation only."""

_METHOD = {
    "understanding": "predict",
    "elicitation": "predict",
    "recommendation": "scores",
    "generation": "generate",
    "evaluation": "predict",
}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UnknownLabelError(f"unknown task {task!r}; expected one of {list(TASKS)}")


def run_predictions(system: Any, task: str, examples: Sequence[Any]) -> tuple[list[Any], float]:
    """Call the system's prediction method for ``task``.

    Returns:
        ``(predictions, seconds)``.

    Raises:
        UnknownLabelError: Unknown task.
    """
    _check_task(task)
    start = time.perf_counter()
    preds = list(getattr(system, _METHOD[task])(examples))
    return preds, time.perf_counter() - start


def score_predictions(task: str, examples: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    """Score predictions with the task's metric bundle.

    For recommendation the predictions are each example's candidate scores (what a ranker's
    ``scores`` returns); they are ranked with the pessimistic tie rule (a target tied with other
    candidates is placed after them) and the table reports the all-tied count.

    Raises:
        UnknownLabelError: Unknown task.
        MetricInputError: Predictions and examples differ in number.
    """
    _check_task(task)
    if len(examples) != len(predictions):
        raise MetricInputError(f"{task}: {len(examples)} examples but {len(predictions)} predictions")
    if task == "understanding":
        return understanding_scores(examples, predictions)
    if task == "elicitation":
        return elicitation_scores(examples, predictions)
    if task == "recommendation":
        # predictions are candidate scores; ties are ranked pessimistically (the target last)
        ranked = [
            rank_candidates(e.candidates, sc, targets=e.targets, rule="pessimistic")
            for e, sc in zip(examples, predictions)
        ]
        return recommendation_scores(examples, ranked, scores=predictions)
    if task == "generation":
        return generation_scores(examples, predictions)
    return evaluation_scores(examples, predictions)


def evaluate_by_category(
    system: Any, task: str, examples: Sequence[Any], *, min_samples: int = 3
) -> tuple[dict[str, dict[str, float]], float]:
    """Predict once, then score all examples (``"all"``) and each category separately.

    Categories with fewer than ``min_samples`` examples, or whose metric is undefined, are left
    out (logged).

    Returns:
        ``({"all": metrics, category: metrics, ...}, prediction_seconds)``.
    """
    preds, seconds = run_predictions(system, task, examples)
    out = {"all": score_predictions(task, examples, preds)}
    for cat in sorted({e.category for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.category == cat]
        if len(idx) < min_samples:
            logger.info("%s: category %s has %d samples; skipped", task, cat, len(idx))
            continue
        try:
            out[cat] = score_predictions(task, [examples[i] for i in idx], [preds[i] for i in idx])
        except MetricInputError as exc:
            logger.info("%s: category %s not scored: %s", task, cat, exc)
    return out, seconds


def _cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, floatfmt)
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".4f"
) -> str:
    """A Markdown table of ``rows`` (columns: the given ones, else the keys in first-seen order)."""
    if not rows:
        return ""
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, ""), floatfmt) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join([line, sep, *body])
