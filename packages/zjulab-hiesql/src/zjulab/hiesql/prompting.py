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

__all__ = ["SYSTEM_PROMPT", "build_llm_conversation", "describe_schema", "render_context"]

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
            mark = ("*" if c_idx in pks else "") + ("!" if f"{table}.{name}" in linked else "") if marks else ""
            cols.append(name + mark)
        tmark = "!" if marks and table in linked else ""
        lines.append(f"{table}{tmark}({', '.join(cols)})")
    fks = [f"{schema.qualified_column(a)} = {schema.qualified_column(b)}" for a, b in schema.foreign_keys]
    if fks:
        lines.append("foreign keys: " + "; ".join(fks))
    return "\n".join(lines)


def render_context(utterance: str, history: Sequence[str], last_sql: str | None, context: ContextMode = "history_sql") -> str:
    """The question with (depending on ``context``) earlier questions and the previous SQL."""
    parts = []
    if context != "utterance" and history:
        parts.append("earlier questions: " + " | ".join(history))
    if context == "history_sql" and last_sql:
        parts.append(f"previous SQL: {last_sql}")
    parts.append(f"question: {utterance}")
    return "\n".join(parts)


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

    Args:
        schema: Database schema.
        utterance: Current question.
        history: Earlier questions, oldest first.
        last_sql: The previous turn's SQL.
        graph: The linking graph (linked items are marked with ``!``).
        examples: Optional ``(question, SQL)`` demonstrations on the same database.
        context: Which context to include.

    Returns:
        A conversation (system + user messages).
    """
    user = [f"Database tables (* primary key, ! mentioned):\n{describe_schema(schema, graph)}"]
    if examples:
        user.append("Examples:\n" + "\n".join(f"Q: {q}\nSQL: {s}" for q, s in examples))
    user.append(render_context(utterance, history, last_sql, context))
    user.append("SQL:")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(user)}]
