"""Validity guarding of generated SQL with sqlglot: one read-only query over known tables and columns."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from zjulab.hiesql.schema import Schema

logger = logging.getLogger(__name__)

__all__ = ["Validity", "check_sql", "extract_sql"]

_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)```", re.S | re.I)
_START = re.compile(r"\b(select|with)\b", re.I)


@dataclass(frozen=True)
class Validity:
    """Outcome of :func:`check_sql`.

    Args:
        valid: Whether the SQL passed every check.
        reason: Why it failed ("" when valid).
    """

    valid: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.valid


def extract_sql(text: str) -> str:
    """Pull one SQL query out of model output (a fenced block, or from the first SELECT/WITH).

    The query ends at the first semicolon or blank line; surrounding whitespace is collapsed.
    """
    m = _FENCE.search(text)
    body = m.group(1) if m else text
    s = _START.search(body)
    if s is None:
        return " ".join(body.split())
    body = body[s.start() :]
    body = re.split(r";|\n\s*\n", body, maxsplit=1)[0]
    return " ".join(body.split())


def check_sql(sql: str, schema: Schema) -> Validity:
    """Check that ``sql`` is one SELECT (or set operation) naming only known tables and columns.

    Args:
        sql: Candidate SQL.
        schema: The database schema.

    Returns:
        :class:`Validity` (truthy when valid).
    """
    if not sql.strip():
        return Validity(False, "empty")
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except (ParseError, TokenError) as exc:
        return Validity(False, f"parse error: {str(exc).splitlines()[0]}")
    if len(trees) != 1:
        return Validity(False, f"{len(trees)} statements")
    tree = trees[0]
    if not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
        return Validity(False, f"not a query: {type(tree).__name__}")
    tables = schema.tables
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    aliases: dict[str, str] = {}
    for t in tree.find_all(exp.Table):
        name = t.name.lower()
        if name not in tables and name not in ctes:
            return Validity(False, f"unknown table {t.name!r}")
        aliases[t.alias_or_name.lower()] = name
        aliases[name] = name
    derived = {s.alias_or_name.lower() for s in tree.find_all(exp.Subquery) if s.alias}
    select_aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
    all_columns = {c for cols in tables.values() for c in cols}
    for col in tree.find_all(exp.Column):
        name = col.name.lower()
        if not name or name == "*":
            continue
        qual = col.table.lower()
        if qual:
            if qual in derived or aliases.get(qual) in ctes:
                continue
            target = aliases.get(qual)
            if target is None:
                return Validity(False, f"unknown table or alias {col.table!r}")
            if name not in tables.get(target, ()):
                return Validity(False, f"unknown column {col.table}.{col.name}")
        elif name not in all_columns and name not in select_aliases and not ctes and not derived:
            if isinstance(col.this, exp.Identifier) and col.this.quoted:
                continue  # SQLite reads an unknown double-quoted identifier as a string ("France")
            return Validity(False, f"unknown column {col.name!r}")
    return Validity(True)
