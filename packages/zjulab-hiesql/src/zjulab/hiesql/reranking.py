"""Beam/sample re-ranking with validity guarding: the first candidate that passes wins."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zjulab.hiesql.errors import SandboxError
from zjulab.hiesql.linking import SchemaLinkingGraph
from zjulab.hiesql.schema import Schema
from zjulab.hiesql.validity import check_sql

logger = logging.getLogger(__name__)

__all__ = ["Prediction", "rerank_candidates"]


@dataclass
class Prediction:
    """The SQL chosen for one turn and how it was chosen.

    Args:
        sql: The chosen SQL (the top candidate when none is valid).
        valid: Whether the chosen SQL passed the validity guard.
        candidates: Every candidate in model order, with its score (log-probability or 0).
        rejected: ``(candidate, reason)`` for candidates the guard rejected before the choice.
        graph: The turn's linking graph.
    """

    sql: str
    valid: bool
    candidates: list[tuple[str, float]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    graph: SchemaLinkingGraph | None = None


def rerank_candidates(
    candidates: Sequence[tuple[str, float]],
    schema: Schema,
    db_path: str | Path | None = None,
    graph: SchemaLinkingGraph | None = None,
) -> Prediction:
    """Pick the best-scored candidate that passes the validity guard.

    Valid means: sqlglot parses it against the schema and, with a database, the sandbox runs it.

    Candidates keep the model's order among themselves: invalid ones are moved behind valid ones.

    Args:
        candidates: ``(sql, score)`` in model order (best first).
        schema: The schema to check against.
        db_path: Optional SQLite file; candidates must also execute there.
        graph: Linking graph to attach to the prediction.

    Returns:
        The prediction.
    """
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for sql, _score in candidates:
        if sql in seen:
            continue
        seen.add(sql)
        verdict = check_sql(sql, schema)
        if verdict and db_path is not None:
            from zjulab.hiesql.sandbox import SQLiteSandbox

            try:
                with SQLiteSandbox(db_path) as box:
                    box.execute(sql, max_rows=1)
            except SandboxError as exc:
                rejected.append((sql, f"execution: {exc}"))
                continue
        if verdict:
            return Prediction(sql, True, list(candidates), rejected, graph)
        rejected.append((sql, verdict.reason))
    top = candidates[0][0] if candidates else ""
    return Prediction(top, False, list(candidates), rejected, graph)
