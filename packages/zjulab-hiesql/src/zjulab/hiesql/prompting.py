"""Text renderings of a turn shared by the decoder prompt and the LLM path.

Both read the same inputs as the encoder: the linked schema, the history utterances and the last
SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from zjulab.common.protocols import Conversation
from zjulab.hiesql.config import ContextMode
from zjulab.hiesql.linking import SchemaLinkingGraph
from zjulab.hiesql.schema import Schema

__all__ = ["SYSTEM_PROMPT", "build_llm_conversation", "describe_schema", "render_context", "schema_ddl"]

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


def schema_ddl(schema: Schema, graph: SchemaLinkingGraph | None = None) -> str:
    """The schema as ``CREATE TABLE`` statements; items linked by the graph get a ``-- mentioned`` comment."""
    linked = set(graph.linked_schema()) if graph is not None else set()
    pks = set(schema.primary_keys)
    refs = {a: schema.qualified_column(b) for a, b in schema.foreign_keys}
    out = []
    for t_idx, table in enumerate(schema.table_names_original):
        lines = []
        for c_idx in schema.columns_of(t_idx):
            name = schema.column_names_original[c_idx][1]
            ctype = "number" if schema.column_types[c_idx] == "number" else "text"
            extra = " primary key" if c_idx in pks else ""
            if c_idx in refs:
                tab, _, col = refs[c_idx].partition(".")
                extra += f" references {tab}({col})"
            note = "  -- mentioned" if f"{table}.{name}" in linked else ""
            lines.append(f"  {name} {ctype}{extra},{note}")
        if lines:
            lines[-1] = (
                lines[-1].replace(",", "", 1)
                if "--" not in lines[-1]
                else lines[-1].replace(",  --", "  --", 1)
            )
        head = f"CREATE TABLE {table} (" + ("  -- mentioned" if table in linked else "")
        out.append("\n".join([head, *lines, ");"]))
    return "\n".join(out)


def build_llm_conversation(
    schema: Schema,
    utterance: str,
    history: Sequence[str] = (),
    last_sql: str | None = None,
    graph: SchemaLinkingGraph | None = None,
    examples: Sequence[tuple[str, str]] = (),
    context: ContextMode = "history_sql",
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

    Returns:
        A conversation.
    """
    conv: Conversation = [{"role": "system", "content": f"{SYSTEM_PROMPT}\n\n{schema_ddl(schema, graph)}"}]
    for q, sql in examples:
        conv.append({"role": "user", "content": f"question: {q}"})
        conv.append({"role": "assistant", "content": sql})
    conv.append({"role": "user", "content": render_context(utterance, history, last_sql, context)})
    return conv
