"""Beam/sample re-ranking with validity guarding: the first candidate that passes wins."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from zjulab.hiesql.config import SandboxConfig
from zjulab.hiesql.errors import SandboxError
from zjulab.hiesql.linking import SchemaLinkingGraph
from zjulab.hiesql.sandbox import ExecutionResult, SQLiteSandbox
from zjulab.hiesql.schema import Schema
from zjulab.hiesql.validity import check_sql

logger = logging.getLogger(__name__)

__all__ = ["Prediction", "repair_with_linking", "rerank_candidates"]


@dataclass
class Prediction:
    """The SQL chosen for one turn and how it was chosen.

    Args:
        sql: The chosen SQL (the top candidate when none is valid).
        valid: Whether the chosen SQL passed the validity guard (and, with a database, ran).
        candidates: Every candidate in model order, with its score (log-probability or 0).
        rejected: ``(candidate, reason)`` for candidates the guard rejected before the choice.
        graph: The turn's linking graph.
        result: The chosen candidate's rows when it was executed during the check (reused by
            :class:`~zjulab.hiesql.session.Text2SQLSession`, never executed twice).
        error: Why no answer was produced at all (e.g. the model server failed), else "".
    """

    sql: str
    valid: bool
    candidates: list[tuple[str, float]] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    graph: SchemaLinkingGraph | None = None
    result: ExecutionResult | None = None
    error: str = ""


def rerank_candidates(
    candidates: Sequence[tuple[str, float]],
    schema: Schema,
    db_path: str | Path | None = None,
    graph: SchemaLinkingGraph | None = None,
    *,
    sandbox: SQLiteSandbox | None = None,
    sandbox_config: SandboxConfig | None = None,
    rejected: Sequence[tuple[str, str]] = (),
    repair: bool = False,
) -> Prediction:
    """Pick the best-scored candidate that passes the validity guard (execution-guided).

    Valid means: sqlglot parses it against the schema and, with a database, the sandbox runs it
    without error. Candidates that fail in the sandbox are dropped before the choice; the
    chosen candidate's result is kept on the prediction.

    Candidates keep the model's order among themselves: invalid ones are moved behind valid ones.

    Args:
        candidates: ``(sql, score)`` in model order (best first).
        schema: The schema to check against.
        db_path: Optional SQLite file; candidates must also execute there.
        graph: Linking graph to attach to the prediction.
        sandbox: The sandbox that executes candidates (its limits govern); one over ``db_path``
            with ``sandbox_config`` is opened (and closed) when omitted.
        sandbox_config: Limits of that sandbox.
        rejected: Candidates already rejected upstream (e.g. answers cut off at the token
            limit), reported first.
        repair: When no candidate passes, try :func:`repair_with_linking` (the result is then
            not SQL the model wrote; off by default).

    Returns:
        The prediction.
    """
    rejected_out: list[tuple[str, str]] = list(rejected)
    own = sandbox is None and db_path is not None
    box = SQLiteSandbox(db_path, sandbox_config) if own else sandbox  # type: ignore[arg-type]
    seen: set[str] = set()
    try:
        for sql, _score in candidates:
            if sql in seen:
                continue
            seen.add(sql)
            verdict = check_sql(sql, schema)
            if not verdict:
                rejected_out.append((sql or "(no SQL in the answer)", verdict.reason))
                continue
            result = None
            if box is not None:
                try:
                    result = box.execute(sql)
                except SandboxError as exc:
                    rejected_out.append((sql, f"execution: {exc}"))
                    continue
            return Prediction(sql, True, list(candidates), rejected_out, graph, result)
        if repair and graph is not None:
            for sql, _score in candidates:
                fixed = repair_with_linking(sql, schema, graph)
                if fixed is None or fixed in seen or not check_sql(fixed, schema):
                    continue
                result = None
                if box is not None:
                    try:
                        result = box.execute(fixed)
                    except SandboxError as exc:
                        rejected_out.append((fixed, f"execution: {exc}"))
                        continue
                rejected_out.append((sql, f"repaired with the linked schema into {fixed!r}"))
                return Prediction(fixed, True, list(candidates), rejected_out, graph, result)
    finally:
        if own and box is not None:
            box.close()
    top = candidates[0][0] if candidates else ""
    return Prediction(top, False, list(candidates), rejected_out, graph)


_LINK_RANK = {"exact_match": 0, "value_match": 1}  # partial matches are too loose to substitute


def repair_with_linking(sql: str, schema: Schema, graph: SchemaLinkingGraph) -> str | None:
    """Replace unknown table/column names in ``sql`` by the items the question links to.

    An unknown table becomes the table the current question (or, failing that, the history)
    names most directly; an unknown column becomes the best-linked column of the query's tables
    not already used in the query (exact name match before value match — partial matches are
    never used — and the current question before the history). Used only when no model candidate is valid.

    Args:
        sql: A candidate that failed the validity guard.
        schema: The schema.
        graph: The turn's linking graph.

    Returns:
        The repaired SQL, or None when nothing could be substituted.
    """
    try:
        tree = sqlglot.parse_one(sql, read="sqlite")
    except (ParseError, TokenError):
        return None
    if tree is None:
        return None
    tables = schema.tables
    ranked_tables: list[tuple[int, str]] = []
    ranked_cols: list[tuple[int, str, str]] = []
    for src, dst, et in graph.edges():
        if src.kind not in ("question", "history") or et not in _LINK_RANK:
            continue
        rank = _LINK_RANK[et] + (0 if src.kind == "question" else 2)
        if dst.kind == "table":
            ranked_tables.append((rank, schema.table_names_original[dst.index].lower()))
        elif dst.kind == "column":
            t_idx, name = schema.column_names_original[dst.index]
            ranked_cols.append((rank, schema.table_names_original[t_idx].lower(), name.lower()))
    changed = False
    for t in tree.find_all(exp.Table):
        if t.name.lower() not in tables and ranked_tables:
            t.set("this", exp.to_identifier(min(ranked_tables)[1]))
            changed = True
    used_tables = {t.name.lower() for t in tree.find_all(exp.Table)}
    all_columns = {c for ts in used_tables for c in tables.get(ts, ())}
    used = {c.name.lower() for c in tree.find_all(exp.Column)}
    for col in tree.find_all(exp.Column):
        name = col.name.lower()
        if not name or name in all_columns or (isinstance(col.this, exp.Identifier) and col.this.quoted):
            continue
        options = sorted(r for r in ranked_cols if r[1] in used_tables and r[2] not in used)
        if not options:
            return None
        col.set("this", exp.to_identifier(options[0][2]))
        used.add(options[0][2])
        changed = True
    return tree.sql(dialect="sqlite") if changed else None
