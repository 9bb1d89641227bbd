"""Evaluation in the SkillRouter benchmark's format: task file + relevance file → metrics."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zjulab.common.errors import InputError, NotFoundError
from zjulab.common.io import read_json
from zjulab.skillrouter.errors import EmptyPoolError, SkillParseError
from zjulab.skillrouter.metrics import METRIC_NAMES, compute_metrics, mean_metrics
from zjulab.skillrouter.skill import iter_json_lines

if TYPE_CHECKING:
    from zjulab.skillrouter.router import SkillRouter

__all__ = ["EvalReport", "Task", "evaluate", "evaluate_rankings", "format_table", "load_tasks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One routing task with its ground truth.

    Args:
        id: Task id.
        query: The task statement given to the router.
        relevant: Ground-truth skill ids (Hit, MRR, Recall, FullCoverage count these).
        grades: Graded relevance per judged skill id (nDCG's gains).
        metadata: Other fields of the task record (domain, split, ...).
    """

    id: str
    query: str
    relevant: frozenset[str]
    grades: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _read_task_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    seen: dict[str, int] = {}
    for lineno, row in iter_json_lines(path):
        if not isinstance(row, dict) or "task_id" not in row:
            raise SkillParseError("a task line must be an object with 'task_id'", str(path), lineno)
        tid = str(row["task_id"])
        if tid in seen:  # a second copy would be scored under the first one's id, silently
            raise SkillParseError(f"task id {tid!r} already on line {seen[tid]}", str(path), lineno)
        seen[tid] = lineno
        rows.append(row)
    return rows


def load_tasks(
    tasks_path: str | os.PathLike[str],
    relevance_path: str | os.PathLike[str] | None = None,
    *,
    mode: Literal["core", "all", "single"] = "core",
    split: str | None = None,
) -> list[Task]:
    """Load tasks in the SkillRouter benchmark format.

    ``tasks.jsonl`` has ``task_id`` and ``instruction_text`` per line; ``relevance.json`` maps
    each task id to ``gt_skill_ids``, ``core_gt_ids``, ``relevance`` (grades) and
    ``task_type``. The modes are the authors' (``evaluate_predictions.py --task_mode``):

    * ``"core"``: ``generic_only`` tasks are skipped (75 of 87 remain), ground truth
      ``core_gt_ids``;
    * ``"all"``: every task, ``generic_only`` included (87), ground truth ``gt_skill_ids``;
    * ``"single"``: tasks with exactly one ``gt_skill_ids`` entry (24), ``generic_only`` included.

    A task line may instead carry its own ``relevance`` map and ``relevant`` list (the demo
    pool's format); then no relevance file is needed.

    Args:
        tasks_path: The JSONL task file.
        relevance_path: The relevance JSON (default: ``relevance.json`` beside the tasks, if any).
        mode: ``"core"``, ``"all"`` or ``"single"``.
        split: Keep only tasks whose ``split`` field equals this.

    Raises:
        NotFoundError: A file is missing.
        SkillParseError: A bad JSON line (file and line named).
        EmptyPoolError: No task is left.
    """
    if mode not in ("core", "all", "single"):
        raise InputError(f"mode must be 'core', 'all' or 'single', got {mode!r}")
    tpath = Path(tasks_path)
    if not tpath.is_file():
        raise NotFoundError(f"task file not found: {tpath}")
    rel_all: dict[str, Any] = {}
    rpath = Path(relevance_path) if relevance_path is not None else tpath.with_name("relevance.json")
    if relevance_path is not None and not rpath.is_file():
        raise NotFoundError(f"relevance file not found: {rpath}")
    if rpath.is_file():
        rel_all = read_json(rpath)
    tasks = []
    for row in _read_task_lines(tpath):
        if split is not None and row.get("split") != split:
            continue
        tid = str(row["task_id"])
        entry = rel_all.get(tid) or {
            "relevance": row.get("relevance", {}),
            "gt_skill_ids": row.get("relevant", []),
            "task_type": row.get("task_type", ""),
        }
        if mode == "core" and entry.get("task_type") == "generic_only":
            continue
        gt = entry.get("gt_skill_ids", [])
        if mode == "core":
            gt = entry.get("core_gt_ids", gt)
        elif mode == "single" and len(set(gt)) != 1:
            continue
        query = row.get("instruction_text") or row.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InputError(f"{tpath}: task {tid!r} has no instruction_text")
        meta = {
            k: v
            for k, v in row.items()
            if k not in ("task_id", "instruction_text", "query", "relevance", "relevant")
        }
        grades = {str(k): float(v) for k, v in (entry.get("relevance") or {}).items()}
        tasks.append(Task(tid, query, frozenset(map(str, gt)), grades, meta))
    if not tasks:
        raise EmptyPoolError(f"no scorable tasks in {tpath}" + (f" with split={split!r}" if split else ""))
    return tasks


@dataclass
class EvalReport:
    """Metrics of one method over a task set.

    Args:
        name: Method label.
        per_task: Metrics of each scored task.
        mean: Mean of each metric over scored tasks.
        skipped: Tasks with no ground-truth skill in the pool (not scored).
        strata: The authors' strata: ``"single"`` (one ground-truth skill) and ``"multi"``
            (several), each a mean over its tasks, and ``"counts"`` of tasks in each.
        duplicates: Rankings that listed some id more than once (scored de-duplicated).
    """

    name: str
    per_task: dict[str, dict[str, float]]
    mean: dict[str, float]
    skipped: list[str] = field(default_factory=list)
    strata: dict[str, dict[str, float]] = field(default_factory=dict)
    duplicates: int = 0

    @property
    def n_tasks(self) -> int:
        """Number of scored tasks."""
        return len(self.per_task)


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]],
    tasks: Sequence[Task],
    *,
    pool_ids: set[str] | None = None,
    name: str = "",
) -> EvalReport:
    """Score ranked skill-id lists (``{task_id: [ids]}``, the benchmark's prediction format).

    With ``pool_ids``, ground truth and grades are restricted to skills in the pool and tasks
    left without ground truth are skipped, as in the benchmark's tiered scoring.

    Raises:
        InputError: A task has no ranking.
    """
    per_task, skipped = {}, []
    single, multi = [], []
    dups = 0
    for t in tasks:
        gt, grades = set(t.relevant), dict(t.grades)
        if pool_ids is not None:
            gt &= pool_ids
            grades = {k: v for k, v in grades.items() if k in pool_ids}
        if not gt:
            skipped.append(t.id)
            continue
        if t.id not in rankings:
            raise InputError(f"no ranking for task {t.id!r}")
        ranked = list(rankings[t.id])
        if len(set(ranked)) != len(ranked):
            dups += 1
        per_task[t.id] = compute_metrics(ranked, gt, grades or None)
        (single if len(t.relevant) == 1 else multi).append(per_task[t.id])
    if skipped:
        logger.info("%d tasks have no ground-truth skill in the pool and are not scored", len(skipped))
    if dups:
        logger.warning("%d rankings list an id more than once; each id counts at its first rank", dups)
    strata = {"single": mean_metrics(single), "multi": mean_metrics(multi)}
    strata["counts"] = {"single": float(len(single)), "multi": float(len(multi))}
    return EvalReport(name, per_task, mean_metrics(list(per_task.values())), skipped, strata, dups)


def evaluate(
    router: SkillRouter,
    tasks: Sequence[Task],
    *,
    depth: int = 50,
    rerank: bool | None = None,
    name: str = "",
    batch_size: int = 16,
) -> EvalReport:
    """Route every task with ``router`` (indexed already) and score the rankings.

    Args:
        router: An indexed router.
        tasks: Tasks from :func:`load_tasks` or the demo pool.
        depth: Ranking depth (capped at the pool size); Recall@50 needs 50.
        rerank: Override the router's ``rerank`` setting.
        name: Label of the report.
        batch_size: Tasks routed per call.
    """
    if not tasks:
        raise EmptyPoolError("no tasks to evaluate")
    k = min(depth, len(router))
    rankings: dict[str, list[str]] = {}
    for i in range(0, len(tasks), batch_size):
        chunk = list(tasks[i : i + batch_size])
        for t, routed in zip(chunk, router.route_many([t.query for t in chunk], k, rerank=rerank)):
            rankings[t.id] = [r.skill.id for r in routed]
    return evaluate_rankings(rankings, tasks, pool_ids={s.id for s in router.skills}, name=name)


def format_table(
    reports: Sequence[EvalReport], metrics: Sequence[str] = ("Hit@1", "nDCG@10", "Recall@10")
) -> str:
    """A plain-text table: one row per report, one column per metric (percent)."""
    for m in metrics:
        if m not in METRIC_NAMES:
            raise InputError(f"unknown metric {m!r}; choose from {METRIC_NAMES}")
    width = max([len(r.name) for r in reports] + [6])
    head = f"{'method':<{width}}  " + "  ".join(f"{m:>10}" for m in metrics) + "   tasks"
    lines = [head, "-" * len(head)]
    for r in reports:
        cells = "  ".join(f"{100 * r.mean.get(m, 0.0):>10.1f}" for m in metrics)
        lines.append(f"{r.name:<{width}}  {cells}   {r.n_tasks:>5}")
    return "\n".join(lines)
