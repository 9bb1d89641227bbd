"""Parse SQL into the Spider structure that the Spider-family exact-set-match compares.

The structure (the one the official Spider/SParC/CoSQL evaluation uses) is a dict::

    {"select": (distinct, [(agg, val_unit), ...]),
     "from": {"table_units": [("table_unit", "__t__") | ("sql", sql), ...], "conds": condition},
     "where": condition, "groupBy": [col_unit, ...], "having": condition,
     "orderBy": () | ("asc" | "desc", [val_unit, ...]), "limit": None | int,
     "intersect": None | sql, "union": None | sql, "except": None | sql}

with ``col_unit = (agg, "__table.column__", distinct)``, ``val_unit = (op, col_unit, col_unit | None)``,
``cond_unit = (not, op, val_unit, val1, val2)`` and a condition a list alternating cond units and
``"and"``/``"or"``. Operator and aggregate codes index :data:`WHERE_OPS`, :data:`UNIT_OPS` and
:data:`AGG_OPS`.

The grammar accepted is exactly the official one, including its limits: a comma join, a column
alias in SELECT, or a parenthesised column used as a value are not parsed (the evaluator then
scores the prediction as wrong). Every ``AS`` anywhere in the query defines an alias for the
token before it; an alias that equals a table name is an error.
"""

from __future__ import annotations

from typing import Any

from zjulab.hiesql.errors import SQLParseError
from zjulab.hiesql.schema import Schema
from zjulab.hiesql.sql_tokenizer import tokenize_sql

__all__ = ["AGG_OPS", "UNIT_OPS", "WHERE_OPS", "empty_sql", "parse_spider_sql"]

CLAUSES = frozenset(("select", "from", "where", "group", "order", "limit", "intersect", "union", "except"))
JOINS = frozenset(("join", "on", "as"))
WHERE_OPS = ("not", "between", "=", ">", "<", ">=", "<=", "!=", "in", "like", "is", "exists")
UNIT_OPS = ("none", "-", "+", "*", "/")
AGG_OPS = ("none", "max", "min", "count", "sum", "avg")
SET_OPS = ("intersect", "union", "except")
_ENDERS = frozenset((")", ";"))

SQLDict = dict[str, Any]


def empty_sql() -> SQLDict:
    """The structure of a query with no clause at all (what an unparsable prediction becomes)."""
    return {
        "select": (False, []),
        "from": {"table_units": [], "conds": []},
        "where": [],
        "groupBy": [],
        "having": [],
        "orderBy": [],
        "limit": None,
        "intersect": None,
        "union": None,
        "except": None,
    }


class _Fail(Exception):
    """Internal: the token stream does not fit the grammar."""


class _Reader:
    """Recursive-descent reader over one token list."""

    def __init__(self, tokens: list[str], schema: Schema) -> None:
        self.toks = tokens
        self.tables = schema.tables
        self.alias: dict[str, str] = {}
        for i, tok in enumerate(tokens):
            if tok == "as":
                if i + 1 >= len(tokens):
                    raise _Fail("'as' at the end")
                self.alias[tokens[i + 1]] = tokens[i - 1]
        for table in self.tables:
            if table in self.alias:
                raise _Fail(f"alias {table!r} equals a table name")
            self.alias[table] = table

    # -- helpers -------------------------------------------------------------------------------
    def tok(self, i: int) -> str:
        if i >= len(self.toks) or i < -len(self.toks):
            raise _Fail("ran past the end of the query")
        return self.toks[i]

    def expect(self, i: int, want: str) -> int:
        if i >= len(self.toks) or self.toks[i] != want:
            raise _Fail(f"expected {want!r} at token {i}")
        return i + 1

    def column_id(self, i: int, scope: list[str], toks: list[str] | None = None) -> tuple[int, str]:
        toks = self.toks if toks is None else toks
        if i >= len(toks):
            raise _Fail("missing column")
        word = toks[i]
        if word == "*":
            return i + 1, "__all__"
        if "." in word:
            parts = word.split(".")
            if len(parts) != 2 or parts[0] not in self.alias:
                raise _Fail(f"bad qualified column {word!r}")
            table = self.alias[parts[0]]
            if table not in self.tables or parts[1] not in self.tables[table]:
                raise _Fail(f"unknown column {word!r}")
            return i + 1, f"__{table}.{parts[1]}__"
        if not scope:
            raise _Fail(f"column {word!r} with no table in scope")
        for name in scope:
            table = self.alias[name]
            if word in self.tables.get(table, ()):
                return i + 1, f"__{table}.{word}__"
        raise _Fail(f"unknown column {word!r}")

    def col_unit(
        self, i: int, scope: list[str], toks: list[str] | None = None
    ) -> tuple[int, tuple[int, str, bool]]:
        toks = self.toks if toks is None else toks

        def at(k: int) -> str:
            if k >= len(toks):
                raise _Fail("ran past the end of the query")
            return toks[k]

        wrapped = at(i) == "("
        if wrapped:
            i += 1
        distinct = False
        if at(i) in AGG_OPS:
            agg = AGG_OPS.index(at(i))
            if at(i + 1) != "(":
                raise _Fail("aggregate without '('")
            i += 2
            if at(i) == "distinct":
                distinct = True
                i += 1
            i, col = self.column_id(i, scope, toks)
            if at(i) != ")":
                raise _Fail("aggregate without ')'")
            return i + 1, (agg, col, distinct)
        if at(i) == "distinct":
            distinct = True
            i += 1
        i, col = self.column_id(i, scope, toks)
        if wrapped:
            if at(i) != ")":
                raise _Fail("unclosed '('")
            i += 1
        return i, (0, col, distinct)

    def val_unit(self, i: int, scope: list[str]) -> tuple[int, tuple[int, Any, Any]]:
        wrapped = self.tok(i) == "("
        if wrapped:
            i += 1
        i, first = self.col_unit(i, scope)
        op, second = 0, None
        if i < len(self.toks) and self.toks[i] in UNIT_OPS:
            op = UNIT_OPS.index(self.toks[i])
            i, second = self.col_unit(i + 1, scope)
        if wrapped:
            i = self.expect(i, ")")
        return i, (op, first, second)

    def value(self, i: int, scope: list[str]) -> tuple[int, Any]:
        start = i
        wrapped = self.tok(i) == "("
        if wrapped:
            i += 1
        word = self.tok(i)
        val: Any
        if word == "select":
            i, val = self.query(i)
        elif '"' in word:
            val, i = word, i + 1
        else:
            try:
                val, i = float(word), i + 1
            except ValueError:
                end = i
                while end < len(self.toks):
                    t = self.toks[end]
                    if t in (",", ")", "and") or t in CLAUSES or t in JOINS:
                        break
                    end += 1
                _, val = self.col_unit(0, scope, self.toks[start:end])
                i = end
        if wrapped:
            i = self.expect(i, ")")
        return i, val

    def condition(self, i: int, scope: list[str]) -> tuple[int, list[Any]]:
        conds: list[Any] = []
        n = len(self.toks)
        while i < n:
            i, vu = self.val_unit(i, scope)
            negated = self.tok(i) == "not"
            if negated:
                i += 1
            if i >= n or self.toks[i] not in WHERE_OPS:
                raise _Fail(f"no comparison operator at token {i}")
            op = WHERE_OPS.index(self.toks[i])
            i += 1
            second = None
            i, first = self.value(i, scope)
            if op == 1:  # between x and y
                i = self.expect(i, "and")
                i, second = self.value(i, scope)
            conds.append((negated, op, vu, first, second))
            if i < n and (self.toks[i] in CLAUSES or self.toks[i] in _ENDERS or self.toks[i] in JOINS):
                break
            if i < n and self.toks[i] in ("and", "or"):
                conds.append(self.toks[i])
                i += 1
        return i, conds

    # -- clauses ----------------------------------------------------------------------------------
    def from_clause(self, start: int) -> tuple[int, list[Any], list[Any], list[str]]:
        try:
            i = self.toks.index("from", start) + 1
        except ValueError as exc:
            raise _Fail("no FROM clause") from exc
        scope: list[str] = []
        units: list[Any] = []
        conds: list[Any] = []
        n = len(self.toks)
        while i < n:
            wrapped = self.toks[i] == "("
            if wrapped:
                i += 1
            if self.tok(i) == "select":
                i, sub = self.query(i)
                units.append(("sql", sub))
            else:
                if self.toks[i] == "join":
                    i += 1
                name = self.tok(i)
                table = self.alias.get(name)
                if table is None or table not in self.tables:
                    raise _Fail(f"unknown table {name!r}")
                i += 3 if (i + 1 < n and self.toks[i + 1] == "as") else 1
                units.append(("table_unit", f"__{table}__"))
                scope.append(table)
            if i < n and self.toks[i] == "on":
                i, more = self.condition(i + 1, scope)
                if conds:
                    conds.append("and")
                conds.extend(more)
            if wrapped:
                i = self.expect(i, ")")
            if i < n and (self.toks[i] in CLAUSES or self.toks[i] in _ENDERS):
                break
        return i, units, conds, scope

    def select_clause(self, i: int, scope: list[str]) -> tuple[bool, list[Any]]:
        i = self.expect(i, "select")
        distinct = i < len(self.toks) and self.toks[i] == "distinct"
        if distinct:
            i += 1
        items: list[Any] = []
        while i < len(self.toks) and self.toks[i] not in CLAUSES:
            agg = 0
            if self.toks[i] in AGG_OPS:
                agg = AGG_OPS.index(self.toks[i])
                i += 1
            i, vu = self.val_unit(i, scope)
            items.append((agg, vu))
            if i < len(self.toks) and self.toks[i] == ",":
                i += 1
        return distinct, items

    def query(self, i: int) -> tuple[int, SQLDict]:
        start = i
        wrapped = self.tok(i) == "("
        if wrapped:
            i += 1
        end, units, conds, scope = self.from_clause(start)
        sql: SQLDict = {
            "from": {"table_units": units, "conds": conds},
            "select": self.select_clause(i, scope),
        }
        i = end
        n = len(self.toks)
        sql["where"] = []
        if i < n and self.toks[i] == "where":
            i, sql["where"] = self.condition(i + 1, scope)
        sql["groupBy"] = []
        if i < n and self.toks[i] == "group":
            i = self.expect(i + 1, "by")
            while i < n and self.toks[i] not in CLAUSES and self.toks[i] not in _ENDERS:
                i, cu = self.col_unit(i, scope)
                sql["groupBy"].append(cu)
                if i < n and self.toks[i] == ",":
                    i += 1
                else:
                    break
        sql["having"] = []
        if i < n and self.toks[i] == "having":
            i, sql["having"] = self.condition(i + 1, scope)
        sql["orderBy"] = []
        if i < n and self.toks[i] == "order":
            i = self.expect(i + 1, "by")
            direction, keys = "asc", []
            while i < n and self.toks[i] not in CLAUSES and self.toks[i] not in _ENDERS:
                i, vu = self.val_unit(i, scope)
                keys.append(vu)
                if i < n and self.toks[i] in ("asc", "desc"):
                    direction = self.toks[i]
                    i += 1
                if i < n and self.toks[i] == ",":
                    i += 1
                else:
                    break
            sql["orderBy"] = (direction, keys)
        sql["limit"] = None
        if i < n and self.toks[i] == "limit":
            try:
                sql["limit"] = int(self.tok(i + 1))
            except ValueError as exc:
                raise _Fail(f"LIMIT needs an integer, got {self.toks[i + 1]!r}") from exc
            i += 2
        while i < n and self.toks[i] == ";":
            i += 1
        if wrapped:
            i = self.expect(i, ")")
        while i < n and self.toks[i] == ";":
            i += 1
        for op in SET_OPS:
            sql[op] = None
        if i < n and self.toks[i] in SET_OPS:
            op = self.toks[i]
            i, sql[op] = self.query(i + 1)
        return i, sql


def parse_spider_sql(sql: str, schema: Schema) -> SQLDict:
    """Parse ``sql`` against ``schema`` into the Spider structure.

    Args:
        sql: The query text.
        schema: The database schema (table and column names are matched case-insensitively).

    Returns:
        The structure described in the module docstring, values still present.

    Raises:
        SQLParseError: When the text is outside the evaluator's grammar or names an unknown
            table or column; the message names the query.
    """
    try:
        reader = _Reader(tokenize_sql(sql), schema)
        _, out = reader.query(0)
    except (_Fail, IndexError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise SQLParseError(f"cannot parse SQL for {schema.db_id!r}: {sql!r} ({exc})") from exc
    return out
