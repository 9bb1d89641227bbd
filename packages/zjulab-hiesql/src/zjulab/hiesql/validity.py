"""SQL taken from model answers exactly as written, and validity guarding against a schema (sqlglot).

:func:`extract_sql` reads a chat model's answer with sqlglot's tokenizer, so comments, string
literals and statement ends are found the way SQLite finds them; :func:`check_sql` resolves each
column against the tables in scope of its own SELECT (and the enclosing ones, for correlated
sub-queries).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.tokens import Token, TokenType

from zjulab.hiesql.schema import Schema

logger = logging.getLogger(__name__)

__all__ = ["Extraction", "Validity", "check_sql", "extract_sql", "extract_sql_answer"]

_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.S | re.I)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n?(.*?)(?:```|\Z)", re.S)
_START_ANY = re.compile(r"\b(select|with)\b", re.I)
_SENTENCE_END = re.compile(r"[.:]?\s")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_PROSE_FOLLOW = {TokenType.VAR, TokenType.DOT, TokenType.COLON}
_QUERY_TYPES = (exp.Select, exp.Union, exp.Intersect, exp.Except)
_SQL_LABELS = {"sql", "sqlite", "sqlite3", "postgresql", "mysql", ""}


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


@dataclass(frozen=True)
class Extraction:
    """Outcome of :func:`extract_sql_answer`.

    Args:
        sql: The statement as the model wrote it, comments removed and whitespace collapsed
            ("" when the answer holds no complete statement).
        source: ``"fence"``, ``"text"`` or ``""`` (nothing taken).
        reason: Why nothing was taken ("" when ``sql`` is set).
    """

    sql: str
    source: str = ""
    reason: str = ""


def _tokens(text: str) -> list[Token] | None:
    try:
        return sqlglot.tokenize(text, read="sqlite")
    except (TokenError, SqlglotError, ValueError):
        return None


def _render(text: str, toks: list[Token]) -> str:
    """Token spans of the source joined by single spaces where the source had a gap (comments dropped)."""
    out: list[str] = []
    prev_end = -1
    for t in toks:
        if out and t.start > prev_end + 1:
            out.append(" ")
        out.append(text[t.start : t.end + 1])
        prev_end = t.end
    return "".join(out)


def _one_query(sql: str) -> bool:
    try:
        trees = [t for t in sqlglot.parse(sql, read="sqlite") if t is not None]
    except (ParseError, TokenError, SqlglotError, ValueError, RecursionError):
        return False
    return len(trees) == 1 and isinstance(trees[0], _QUERY_TYPES)


def _prose_cuts(region: str, head: list[Token]) -> list[int]:
    cuts: list[int] = []
    for k in range(1, len(head)):
        nxt, prev = head[k], head[k - 1]
        if nxt.token_type != TokenType.VAR or not nxt.text[:1].isupper():
            continue
        gap = region[prev.end + 1 : nxt.start]
        follower = head[k + 1] if k + 1 < len(head) else None
        prose_follows = follower is None or follower.token_type in _PROSE_FOLLOW
        if "\n" in gap and prose_follows:
            cuts.append(k)
        elif prev.token_type in (TokenType.DOT, TokenType.COLON) and gap and not gap.strip():
            cuts.append(k - 1)  # the full stop (or colon) belongs to the prose
    return cuts


def _statement(body: str, strict: bool) -> tuple[str, str]:
    """The first complete query of ``body`` (``strict``: the whole body up to ``;`` must be one).

    Returns ``(sql, reason)``.
    """
    reason = "no SELECT or WITH"
    for m in _START_ANY.finditer(body):
        if not strict and not (
            m.group(0).isupper() or body[: m.start()].rstrip(" \t").endswith("\n") or m.start() == 0
        ):
            continue  # "you can select the names..." in prose
        region = body[m.start() :]
        if not strict:
            region = _BLANK_LINE.split(region, maxsplit=1)[0]
        toks = _tokens(region)
        if toks is None:  # an apostrophe in prose after the query: keep what precedes that sentence
            for cut in sorted((c.start() + 1 for c in _SENTENCE_END.finditer(region)), reverse=True):
                toks = _tokens(region[:cut])
                if toks is not None:
                    region = region[:cut]
                    break
        if not toks:
            reason = "unterminated string or identifier"
            continue
        semi = next((i for i, t in enumerate(toks) if t.token_type == TokenType.SEMICOLON), None)
        head = toks[:semi] if semi is not None else toks
        rest = toks[semi + 1 :] if semi is not None else []
        if strict and any(t.token_type != TokenType.SEMICOLON for t in rest):
            return "", "more than one statement"
        if not strict:  # "... WHERE country = 'Canada'." ends a sentence
            while (
                head and head[-1].token_type == TokenType.DOT and not region[head[-1].end + 1 :][:1].strip()
            ):
                head = head[:-1]
        if strict:
            sql = _render(region, head)
            return (sql, "") if _one_query(sql) else ("", "not one complete query")
        # unfenced prose: the query stops where a sentence starts, on a new line ("...\nThis
        # lists") or after a full stop ("... = 'Canada'. This lists"); else at the end
        for cut in _prose_cuts(region, head):
            sql = _render(region, head[:cut])
            if _one_query(sql):
                return sql, ""
        sql = _render(region, head)
        if _one_query(sql):
            return sql, ""
        reason = "no complete query (cut off, or not SQL)"
    return "", reason


def extract_sql_answer(text: str) -> Extraction:
    """Take the SQL query out of a chat model's answer, or nothing.

    * ``<think>...</think>`` blocks (and an unterminated one) are ignored;
    * a fenced block labelled ``sql``/``sqlite`` (or unlabelled) is preferred; it must hold one
      complete query (a trailing ``;`` is fine, a second statement is refused);
    * without a fence, the query starts at ``SELECT``/``WITH`` (upper case, or at a line start)
      and ends at ``;``, at the end of the answer, or where a prose sentence starts;
    * comments are removed by the tokenizer (a ``--`` comment never swallows the next line),
      string literals are kept verbatim, other whitespace is collapsed;
    * an answer without a complete query (cut off, prose only) gives ``""``.

    Args:
        text: The model's answer.

    Returns:
        The extraction.
    """
    body = _THINK.sub("", text)
    if "</think>" in body:  # templates that open the thinking block in the prompt
        body = body.rsplit("</think>", 1)[1]
    fences = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(body)]
    ranked = [b for label, b in fences if label in ("sql", "sqlite", "sqlite3")]
    ranked += [b for label, b in fences if label in _SQL_LABELS and label not in ("sql", "sqlite", "sqlite3")]
    reason = ""
    for block in ranked:
        sql, reason = _statement(block, strict=True)
        if sql:
            return Extraction(sql, "fence")
    if fences and ranked:
        return Extraction("", "", f"fenced block: {reason}")
    outside = _FENCE.sub("\n", body) if fences else body
    sql, reason = _statement(outside, strict=False)
    if sql:
        return Extraction(sql, "text")
    return Extraction("", "", reason)


def extract_sql(text: str) -> str:
    """The SQL query of a model answer ("" when it holds no complete query); see :func:`extract_sql_answer`."""
    return extract_sql_answer(text).sql


# --------------------------------------------------------------------------------------------
# validity against a schema
# --------------------------------------------------------------------------------------------
def _select_aliases(node: exp.Expression) -> set[str]:
    if isinstance(node, exp.Select):
        return {e.alias.lower() for e in node.expressions if isinstance(e, exp.Alias)}
    return set()


def _resolve(col: exp.Column, scope: Scope, schema: Schema) -> str:
    name = col.name.lower()
    qual = col.table.lower()
    tables = schema.tables
    chain: list[Scope] = []
    s: Scope | None = scope
    while s is not None:
        chain.append(s)
        s = s.parent
    if qual:
        for sc in chain:
            for alias, src in sc.sources.items():
                if alias.lower() != qual:
                    continue
                if isinstance(src, exp.Table):
                    if name in tables.get(src.name.lower(), ()):
                        return ""
                    return f"unknown column {col.table}.{col.name}"
                return ""  # a derived table or CTE: its outputs are checked in its own scope
        return f"unknown table or alias {col.table!r}"
    for k, sc in enumerate(chain):
        for src in sc.sources.values():
            if not isinstance(src, exp.Table) or name in tables.get(src.name.lower(), ()):
                return ""
        if k == 0 and name in _select_aliases(sc.expression):
            return ""  # ORDER BY / HAVING on an output alias
    if isinstance(col.this, exp.Identifier) and col.this.quoted:
        return ""  # SQLite reads an unknown double-quoted identifier as a string ("France")
    return f"unknown column {col.name!r}"


def check_sql(sql: str, schema: Schema) -> Validity:
    """Check that ``sql`` is one SELECT (or set operation) naming only known tables and columns.

    Each column is resolved against the tables in the FROM clause of its own SELECT, then of
    the enclosing SELECTs (correlated sub-queries); derived tables and CTEs are accepted as
    sources, output aliases may be used in ORDER BY/HAVING.

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
    except (SqlglotError, ValueError, RecursionError) as exc:
        return Validity(False, f"parse error: {exc}")
    if len(trees) != 1:
        return Validity(False, f"{len(trees)} statements")
    tree = trees[0]
    if not isinstance(tree, _QUERY_TYPES):
        return Validity(False, f"not a query: {type(tree).__name__}")
    tables = schema.tables
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for t in tree.find_all(exp.Table):
        if t.name.lower() not in tables and t.name.lower() not in ctes:
            return Validity(False, f"unknown table {t.name!r}")
    try:
        scopes = traverse_scope(tree)
    except (SqlglotError, ValueError, RecursionError) as exc:
        return Validity(False, f"cannot resolve the query's scopes: {exc}")
    for scope in scopes:
        own = scope.expression
        for col in own.find_all(exp.Column):
            name = col.name
            if not name or name == "*" or col.find_ancestor(exp.Select) is not own:
                continue
            why = _resolve(col, scope, schema)
            if why:
                return Validity(False, why)
    return Validity(True)
