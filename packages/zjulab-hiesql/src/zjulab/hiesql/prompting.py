"""Text renderings of a turn shared by the decoder prompt and the LLM path.

Both read the same inputs as the encoder: the linked schema, the history utterances and the last
SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from zjulab.common.protocols import Conversation
from zjulab.hiesql.config import ContextMode
from zjulab.hiesql.linking import SchemaLinkingGraph
from zjulab.hiesql.schema import Schema

__all__ = [
    "SYSTEM_PROMPT",
    "build_llm_conversation",
    "count_tokens",
    "describe_schema",
    "pruned_schema_ddl",
    "quote_identifier",
    "render_context",
    "schema_ddl",
]

SYSTEM_PROMPT = (
    "You translate questions about a SQLite database into one SQLite SELECT query. The question may "
    "refer to earlier questions and to the previous query; resolve such references. Answer with "
    "the SQL query only."
)


def describe_schema(schema: Schema, graph: SchemaLinkingGraph | None = None, marks: bool = True) -> str:
    """One line per table ``table(col, col*, ...)``, then foreign keys; linked items get a ``!``.

    Args:
        schema: The schema.
        graph: A linking graph; items it links to the question, history or SQL are marked.
        marks: Add ``*`` after primary keys and ``!`` after linked items.

    Returns:
        The text.
    """
    linked = set(graph.linked_schema()) if graph is not None else set()
    pks = set(schema.primary_keys)
    lines = []
    for t_idx, table in enumerate(schema.table_names_original):
        cols = []
        for c_idx in schema.columns_of(t_idx):
            name = schema.column_names_original[c_idx][1]
            mark = (
                ("*" if c_idx in pks else "") + ("!" if f"{table}.{name}" in linked else "") if marks else ""
            )
            cols.append(name + mark)
        tmark = "!" if marks and table in linked else ""
        lines.append(f"{table}{tmark}({', '.join(cols)})")
    fks = [f"{schema.qualified_column(a)} = {schema.qualified_column(b)}" for a, b in schema.foreign_keys]
    if fks:
        lines.append("foreign keys: " + "; ".join(fks))
    return "\n".join(lines)


def render_context(
    utterance: str, history: Sequence[str], last_sql: str | None, context: ContextMode = "history_sql"
) -> str:
    """The question with (depending on ``context``) earlier questions and the previous SQL."""
    parts = []
    if context != "utterance" and history:
        parts.append("earlier questions: " + " | ".join(history))
    if context == "history_sql" and last_sql:
        parts.append(f"previous SQL: {last_sql}")
    parts.append(f"question: {utterance}")
    return "\n".join(parts)


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"\w+|[^\w\s]")
#: Words that cannot stand unquoted as a name in SQLite DDL.
_RESERVED = frozenset(
    [
        "abort",
        "action",
        "add",
        "after",
        "all",
        "alter",
        "analyze",
        "and",
        "as",
        "asc",
        "attach",
        "autoincrement",
        "before",
        "begin",
        "between",
        "by",
        "cascade",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "commit",
        "conflict",
        "constraint",
        "create",
        "cross",
        "current",
        "current_date",
        "current_time",
        "current_timestamp",
        "database",
        "default",
        "deferrable",
        "deferred",
        "delete",
        "desc",
        "detach",
        "distinct",
        "drop",
        "each",
        "else",
        "end",
        "escape",
        "except",
        "exclusive",
        "exists",
        "explain",
        "fail",
        "for",
        "foreign",
        "from",
        "full",
        "glob",
        "group",
        "having",
        "if",
        "ignore",
        "immediate",
        "in",
        "index",
        "indexed",
        "initially",
        "inner",
        "insert",
        "instead",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "key",
        "left",
        "like",
        "limit",
        "match",
        "natural",
        "no",
        "not",
        "notnull",
        "null",
        "of",
        "offset",
        "on",
        "or",
        "order",
        "outer",
        "plan",
        "pragma",
        "primary",
        "query",
        "raise",
        "recursive",
        "references",
        "regexp",
        "reindex",
        "release",
        "rename",
        "replace",
        "restrict",
        "right",
        "rollback",
        "row",
        "savepoint",
        "select",
        "set",
        "table",
        "temp",
        "temporary",
        "then",
        "to",
        "transaction",
        "trigger",
        "union",
        "unique",
        "update",
        "using",
        "vacuum",
        "values",
        "view",
        "virtual",
        "when",
        "where",
        "with",
        "without",
    ]
)


def quote_identifier(name: str) -> str:
    """``name`` as SQLite reads it: bare when it is a plain word, else double-quoted (``"order id"``)."""
    if _PLAIN.match(name) and name.lower() not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def count_tokens(text: str) -> int:
    """A tokenizer-free token estimate: words and punctuation marks (used for schema budgets)."""
    return len(_TOKEN.findall(text))


def schema_ddl(schema: Schema, graph: SchemaLinkingGraph | None = None) -> str:
    """The schema as ``CREATE TABLE`` statements; items linked by the graph get a ``-- mentioned`` comment."""
    return pruned_schema_ddl(schema, graph, budget=None)


def _value_notes(graph: SchemaLinkingGraph | None) -> dict[str, list[str]]:
    notes: dict[str, list[str]] = {}
    if graph is None:
        return notes
    for item, how in graph.linked_schema().items():
        for h in how:
            if h.startswith("value_match <- ") and "(" not in h.split("<-", 1)[1].strip()[1:-1]:
                word = h.split("<-", 1)[1].strip()
                if word not in notes.setdefault(item, []):
                    notes[item].append(word)
    return notes


def pruned_schema_ddl(
    schema: Schema,
    graph: SchemaLinkingGraph | None = None,
    budget: int | None = None,
    count: Callable[[str], int] = count_tokens,
) -> str:
    """The schema as ``CREATE TABLE`` statements, linked items first, within a token budget.

    Tables linked by the graph (directly or through a linked column) come first, in schema order;
    within a table, linked columns are marked ``-- mentioned`` (with the question words that
    matched a stored value). With a ``budget``, items are kept in this order until it is spent:
    linked columns, the keys of linked tables (for joins), the other columns of linked tables,
    then the keys and columns of the other tables. Every kept table keeps its primary key and
    the columns its kept foreign keys need. Items are taken strictly in this order: the first one
    that does not fit ends the schema.

    Args:
        schema: The schema.
        graph: The linking graph (``None``: nothing is linked, schema order).
        budget: Most tokens (by ``count``) of the rendered text; ``None`` keeps everything.
        count: Token counter (e.g. a model tokenizer's ``lambda t: len(tok(t).input_ids)``).

    Returns:
        The DDL text.
    """
    linked = set(graph.linked_schema()) if graph is not None else set()
    values = _value_notes(graph)
    pks = set(schema.primary_keys)
    refs = {a: b for a, b in schema.foreign_keys}
    keys = pks | set(refs)
    names = schema.table_names_original
    col_item = {c: f"{names[t]}.{n}" for c, (t, n) in enumerate(schema.column_names_original) if t >= 0}
    linked_tables = [
        t
        for t, name in enumerate(names)
        if name in linked or any(col_item[c] in linked for c in schema.columns_of(t))
    ]
    other_tables = [t for t in range(len(names)) if t not in linked_tables]
    order: list[int] = []  # columns by priority
    for group in (
        [c for t in linked_tables for c in schema.columns_of(t) if col_item[c] in linked],
        [c for t in linked_tables for c in schema.columns_of(t) if c in keys],
        [c for t in linked_tables for c in schema.columns_of(t)],
        [c for t in other_tables for c in schema.columns_of(t) if c in keys],
        [c for t in other_tables for c in schema.columns_of(t)],
    ):
        order += [c for c in group if c not in order]
    table_rank = {t: k for k, t in enumerate(linked_tables + other_tables)}

    def render(kept: set[int]) -> str:
        out = []
        for t in sorted({schema.column_names_original[c][0] for c in kept}, key=table_rank.__getitem__):
            table = names[t]
            lines = []
            for c in schema.columns_of(t):
                if c not in kept:
                    continue
                name = schema.column_names_original[c][1]
                ctype = "number" if schema.column_types[c] == "number" else "text"
                extra = " primary key" if c in pks else ""
                if c in refs and refs[c] in kept:
                    rt, rn = schema.column_names_original[refs[c]]
                    extra += f" references {quote_identifier(names[rt])}({quote_identifier(rn)})"
                note = ""
                if col_item[c] in linked:
                    note = "  -- mentioned"
                    if col_item[c] in values:
                        note += ", matches " + ", ".join(values[col_item[c]])
                lines.append([f"  {quote_identifier(name)} {ctype}{extra}", note])
            for k, (text, note) in enumerate(lines):
                lines[k] = [text + ("," if k < len(lines) - 1 else ""), note]
            head = f"CREATE TABLE {quote_identifier(table)} (" + ("  -- mentioned" if table in linked else "")
            out.append("\n".join([head, *(t + n for t, n in lines), ");"]))
        return "\n".join(out)

    if budget is None:
        return render(set(order))
    kept: set[int] = set()
    for c in order:
        trial = set(kept) | {c}
        t = schema.column_names_original[c][0]
        trial |= {p for p in schema.columns_of(t) if p in pks}  # a kept table keeps its key
        if count(render(trial)) > budget:
            break  # strict priority: nothing of lower rank displaces what did not fit
        kept = trial
    return render(kept)


def build_llm_conversation(
    schema: Schema,
    utterance: str,
    history: Sequence[str] = (),
    last_sql: str | None = None,
    graph: SchemaLinkingGraph | None = None,
    examples: Sequence[tuple[str, str]] = (),
    context: ContextMode = "history_sql",
    schema_budget: int | None = None,
) -> Conversation:
    """The chat prompt of the LLM path.

    The system message holds the instructions and the schema as ``CREATE TABLE`` statements
    (linked tables and columns are commented ``-- mentioned``); demonstrations become earlier
    user/assistant turns; the last user message carries the earlier questions, the previous SQL
    and the question.

    Args:
        schema: Database schema.
        utterance: Current question.
        history: Earlier questions, oldest first.
        last_sql: The previous turn's SQL.
        graph: The linking graph.
        examples: Optional ``(question, SQL)`` demonstrations on the same database.
        context: Which context to include.
        schema_budget: Token budget of the schema text (see :func:`pruned_schema_ddl`).

    Returns:
        A conversation.
    """
    conv: Conversation = [
        {"role": "system", "content": f"{SYSTEM_PROMPT}\n\n{pruned_schema_ddl(schema, graph, schema_budget)}"}
    ]
    for q, sql in examples:
        conv.append({"role": "user", "content": f"question: {q}"})
        conv.append({"role": "assistant", "content": sql})
    conv.append({"role": "user", "content": render_context(utterance, history, last_sql, context)})
    return conv
