"""The schema-linking graph: question, history and last-SQL tokens linked to tables and columns.

Nodes are the words of the current utterance, the words of each history utterance, the tokens of
the last SQL, every table and every column. Edges carry one of :data:`EDGE_TYPES`:

* ``exact_match`` / ``partial_match``: an n-gram of an utterance equals a table or column name,
  or is a part of it (the longest, exact match wins over a partial one);
* ``value_match``: an utterance n-gram equals a value stored in a text column (with a database);
* ``sql_column`` / ``sql_table``: a last-SQL token names a column (aliases resolved) or a table;
* ``column_of``: a column belongs to a table; ``primary_key``: it is that table's primary key;
* ``foreign_key``: column to referenced column; ``table_foreign_key``: between their tables.

The graph is a ``rustworkx.PyDiGraph``; :meth:`SchemaLinkingGraph.relation_between` gives the
relation of any two nodes in both directions (a reverse edge reads ``<type>_rev``), which is what
the relation-aware encoder consumes.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import rustworkx as rx

from zjulab.hiesql.config import LinkingConfig
from zjulab.hiesql.errors import HieSqlError, SandboxError, SQLParseError
from zjulab.hiesql.sandbox import READ_SANDBOX, SQLiteSandbox
from zjulab.hiesql.schema import Schema, natural_name
from zjulab.hiesql.sql_tokenizer import tokenize_sql

logger = logging.getLogger(__name__)

__all__ = ["EDGE_TYPES", "RELATIONS", "LinkNode", "SchemaLinkingGraph", "build_linking_graph", "words"]

EDGE_TYPES = (
    "exact_match",
    "partial_match",
    "value_match",
    "sql_column",
    "sql_table",
    "column_of",
    "primary_key",
    "foreign_key",
    "table_foreign_key",
)
#: Relation vocabulary of the encoder: "none", "same_node", then each edge type and its reverse.
RELATIONS: tuple[str, ...] = ("none", "same_node", *(r for e in EDGE_TYPES for r in (e, f"{e}_rev")))
_REL_ID = {r: i for i, r in enumerate(RELATIONS)}
_WORD = re.compile(r"\w+|[^\w\s]")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "for",
        "to",
        "by",
        "with",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "how",
        "many",
        "much",
        "show",
        "list",
        "give",
        "tell",
        "me",
        "all",
        "each",
        "every",
        "that",
        "this",
        "these",
        "those",
        "their",
        "its",
        "it",
        "as",
        "from",
    ]
)

NodeKind = Literal["question", "history", "sql", "table", "column"]


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of an utterance."""
    return [w.lower() for w in _WORD.findall(text)]


@dataclass(frozen=True)
class LinkNode:
    """A node of the linking graph.

    Args:
        kind: ``question``, ``history``, ``sql``, ``table`` or ``column``.
        text: The word, SQL token, or table/column name.
        index: Position in its utterance/SQL, or the table/column index in the schema.
        turn: For history words, how many turns back (1 = previous turn); else 0.
    """

    kind: NodeKind
    text: str
    index: int
    turn: int = 0


class SchemaLinkingGraph:
    """A built linking graph with lookup helpers.

    Args:
        graph: The underlying ``rustworkx.PyDiGraph`` (payloads :class:`LinkNode`, edge payloads
            edge-type strings).
        schema: The schema it links to.
    """

    def __init__(self, graph: rx.PyDiGraph, schema: Schema) -> None:
        self.graph = graph
        self.schema = schema
        self._by_key: dict[tuple[str, int, int], int] = {}
        for idx in graph.node_indices():
            n: LinkNode = graph[idx]
            self._by_key[(n.kind, n.turn, n.index)] = idx

    def node_id(self, kind: NodeKind, index: int, turn: int = 0) -> int:
        """Graph index of a node (e.g. ``node_id("column", 3)``)."""
        return self._by_key[(kind, turn, index)]

    def nodes(self, kind: NodeKind | None = None) -> list[tuple[int, LinkNode]]:
        """``(graph index, node)`` pairs, optionally of one kind, in insertion order."""
        return [
            (i, self.graph[i])
            for i in self.graph.node_indices()
            if kind is None or self.graph[i].kind == kind
        ]

    def edges(self, edge_type: str | None = None) -> list[tuple[LinkNode, LinkNode, str]]:
        """``(source, target, type)`` triples, optionally of one type."""
        out = []
        for s, t, et in self.graph.weighted_edge_list():
            if edge_type is None or et == edge_type:
                out.append((self.graph[s], self.graph[t], et))
        return out

    def relation_between(self, a: int, b: int) -> str:
        """Relation name from node ``a`` to node ``b`` (``"same_node"``, an edge type, ``<type>_rev`` or ``"none"``)."""
        if a == b:
            return "same_node"
        fwd = self.graph.get_all_edge_data(a, b) if self.graph.has_edge(a, b) else []
        if fwd:
            return str(_best(fwd))
        rev = self.graph.get_all_edge_data(b, a) if self.graph.has_edge(b, a) else []
        if rev:
            return f"{_best(rev)}_rev"
        return "none"

    def relation_id(self, a: int, b: int) -> int:
        """Index in :data:`RELATIONS` of :meth:`relation_between`."""
        return _REL_ID[self.relation_between(a, b)]

    def linked_schema(self) -> dict[str, list[str]]:
        """Schema items reached from the current question, history or last SQL, with how.

        Returns:
            ``"table"`` or ``"table.column"`` -> sorted list of ``"<edge type> <- <word>"``.
        """
        out: dict[str, set[str]] = {}
        for s, t in self.graph.edge_list():
            src, dst = self.graph[s], self.graph[t]
            et = _best(self.graph.get_all_edge_data(s, t))
            if src.kind in ("question", "history", "sql") and dst.kind in ("table", "column"):
                key = (
                    self.schema.table_names_original[dst.index]
                    if dst.kind == "table"
                    else self.schema.qualified_column(dst.index)
                )
                where = (
                    ""
                    if src.kind == "question"
                    else f" ({src.kind}{'-' + str(src.turn) if src.turn else ''})"
                )
                out.setdefault(key, set()).add(f"{et} <- {src.text!r}{where}")
        return {k: sorted(v) for k, v in sorted(out.items())}


_PRIORITY = {e: i for i, e in enumerate(EDGE_TYPES)}


def _best(types: Sequence[Any]) -> str:
    return str(min(types, key=lambda e: _PRIORITY.get(e, 99)))


def _stem(word: str) -> str:
    # A light plural folding ("singers" -> "singer", "countries" -> "country") for name matching.
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _name_words(name: str) -> list[str]:
    return [_stem(w) for w in words(natural_name(name))]


#: Longest stored value read for value matching (an utterance n-gram of ``max_ngram`` words
#: never matches a longer one).
VALUE_MAX_CHARS = 200
_VALUE_CACHE: OrderedDict[tuple[Any, ...], dict[int, set[str]]] = OrderedDict()
_VALUE_CACHE_SIZE = 32
_VALUE_LOCK = threading.Lock()


def _file_key(path: Path) -> tuple[Any, ...]:
    # the database file and its WAL: a change to either reads the values again
    out: list[Any] = [str(path)]
    for f in (path, path.with_name(path.name + "-wal")):
        try:
            st = f.stat()
            out += [st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            out += [None]
    return tuple(out)


def _read_values(
    db_path: str | Path,
    schema: Schema,
    limit: int,
    timeout_s: float = 2.0,
    sandbox: SQLiteSandbox | None = None,
    isolation: Literal["process", "in_process"] = "process",
) -> dict[int, set[str]]:
    """Distinct short values of the text columns, read through the sandbox within ``timeout_s``.

    A user's database is untrusted input like generated SQL: every read goes through
    :class:`~zjulab.hiesql.sandbox.SQLiteSandbox` (read-only, authorizer, function allow-list,
    value and row caps; by default in a worker process killed at the deadline). Views are not
    read. One statement takes at most a quarter of the budget, so one slow table cannot starve
    the others. A complete read is cached per file (path, inode, size, mtime, and those of its
    WAL); one cut by the time budget is used but not cached, so the next turn reads again.
    """
    path = Path(db_path).resolve()
    text_cols = tuple(
        (c_idx, schema.table_names_original[t_idx], col)
        for c_idx, (t_idx, col) in enumerate(schema.column_names_original)
        if t_idx >= 0 and schema.column_types[c_idx] == "text"
    )
    key = (_file_key(path), int(limit), text_cols)
    with _VALUE_LOCK:
        if key in _VALUE_CACHE:
            _VALUE_CACHE.move_to_end(key)
            return _VALUE_CACHE[key]
    values: dict[int, set[str]] = {}
    own = sandbox is None
    box = sandbox
    if own:
        try:
            box = SQLiteSandbox(path, replace(READ_SANDBOX, isolation=isolation, max_rows=int(limit)))
        except HieSqlError as exc:
            logger.warning("value matching skipped, cannot open %s: %s", db_path, exc)
            return values
    assert box is not None
    deadline = time.monotonic() + timeout_s
    per_statement = max(0.25, timeout_s / 4)
    complete = True  # a read cut by time is used for this graph but never cached
    try:
        try:  # views are skipped: their values come from tables, and evaluating them may be costly
            views = {
                str(r[0]).lower()
                for r in box.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'view'", timeout_s=per_statement
                ).rows
            }
        except SandboxError as exc:
            logger.warning("value matching skipped, cannot list the views of %s: %s", db_path, exc)
            return values
        for c_idx, table, col in text_cols:
            if table.lower() in views:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("value matching stopped after %gs in %s", timeout_s, db_path)
                complete = False
                break
            qc, qt = col.replace('"', '""'), table.replace('"', '""')
            sql = (
                f'SELECT DISTINCT "{qc}" FROM "{qt}" WHERE "{qc}" IS NOT NULL '
                f'AND length("{qc}") <= {VALUE_MAX_CHARS} LIMIT {int(limit)}'
            )
            try:
                rows = box.execute(sql, max_rows=int(limit), timeout_s=min(left, per_statement)).rows
            except SandboxError as exc:  # a slow, refused or broken view or column: skip it
                logger.warning("value matching skipped %s.%s in %s: %s", table, col, db_path, exc)
                complete = complete and not ("time limit" in str(exc) or "no time left" in str(exc))
                continue
            values[c_idx] = {" ".join(words(str(r[0]))) for r in rows if str(r[0]).strip()}
    finally:
        if own:
            box.close()
    if not complete:
        return values
    with _VALUE_LOCK:
        _VALUE_CACHE[key] = values
        while len(_VALUE_CACHE) > _VALUE_CACHE_SIZE:
            _VALUE_CACHE.popitem(last=False)
    return values


def _link_utterance(
    g: rx.PyDiGraph,
    toks: list[str],
    node_ids: list[int],
    schema: Schema,
    table_nodes: list[int],
    column_nodes: dict[int, int],
    values: dict[int, set[str]],
    cfg: LinkingConfig,
) -> None:
    names: list[tuple[int, list[str], list[str]]] = []  # (node, nl words, original words)
    for t_idx, node in enumerate(table_nodes):
        names.append(
            (node, _name_words(schema.table_names[t_idx]), _name_words(schema.table_names_original[t_idx]))
        )
    for c_idx, node in column_nodes.items():
        names.append(
            (
                node,
                _name_words(schema.column_names[c_idx][1]),
                _name_words(schema.column_names_original[c_idx][1]),
            )
        )
    linked: dict[tuple[int, int], str] = {}
    n = len(toks)
    for size in range(min(cfg.max_ngram, n), 0, -1):
        for start in range(0, n - size + 1):
            raw = toks[start : start + size]
            if all(w in _STOP or not w.isalnum() for w in raw):
                continue
            text = " ".join(raw)
            gram = [_stem(w) for w in raw]
            for node, nl, orig in names:
                if gram in (nl, orig):
                    kind = "exact_match"
                elif (
                    len(text) >= cfg.partial_min_chars
                    and not any(w in _STOP for w in raw)
                    and (_contains(nl, gram) or _contains(orig, gram))
                ):
                    kind = "partial_match"
                else:
                    continue
                for k in range(start, start + size):
                    key = (node_ids[k], node)
                    if key not in linked or (kind == "exact_match" and linked[key] != "exact_match"):
                        linked[key] = kind
            for c_idx, vals in values.items():
                if text in vals:
                    for k in range(start, start + size):
                        linked.setdefault((node_ids[k], column_nodes[c_idx]), "value_match")
    for (a, b), kind in linked.items():
        g.add_edge(a, b, kind)


def _contains(name: list[str], gram: list[str]) -> bool:
    m = len(gram)
    return any(name[i : i + m] == gram for i in range(len(name) - m + 1))


def _link_sql(
    g: rx.PyDiGraph,
    sql_toks: list[str],
    sql_nodes: list[int],
    schema: Schema,
    table_nodes: list[int],
    column_nodes: dict[int, int],
) -> None:
    tables = {t.lower(): i for i, t in enumerate(schema.table_names_original)}
    alias: dict[str, str] = {}
    for i, tok in enumerate(sql_toks):
        if tok == "as" and 0 < i < len(sql_toks) - 1 and sql_toks[i - 1] in tables:
            alias[sql_toks[i + 1]] = sql_toks[i - 1]
    cols: dict[tuple[str, str], int] = {}
    for c_idx, (t_idx, name) in enumerate(schema.column_names_original):
        if t_idx >= 0:
            cols[(schema.table_names_original[t_idx].lower(), name.lower())] = c_idx
    mentioned = [alias.get(t, t) for t in sql_toks if alias.get(t, t) in tables]
    for node, tok in zip(sql_nodes, sql_toks):
        if tok in tables:
            g.add_edge(node, table_nodes[tables[tok]], "sql_table")
        elif "." in tok:
            a, _, c = tok.partition(".")
            hit = cols.get((alias.get(a, a), c))
            if hit is not None:
                g.add_edge(node, column_nodes[hit], "sql_column")
        else:
            for t in dict.fromkeys(mentioned):
                found = cols.get((t, tok))
                if found is not None:
                    g.add_edge(node, column_nodes[found], "sql_column")
                    break


def build_linking_graph(
    schema: Schema,
    utterance: str,
    history: Sequence[str] = (),
    last_sql: str | None = None,
    db_path: str | Path | None = None,
    config: LinkingConfig | None = None,
    sandbox: SQLiteSandbox | None = None,
) -> SchemaLinkingGraph:
    """Build the schema-linking graph of one turn.

    Args:
        schema: The database schema.
        utterance: The current utterance.
        history: Earlier utterances of the interaction, oldest first.
        last_sql: The SQL predicted for the previous turn (None at the first turn).
        db_path: SQLite file for value matching (optional; read through the sandbox).
        config: Linking settings.
        sandbox: A sandbox over ``db_path`` to read the values with (e.g. a session's); one
            with :data:`~zjulab.hiesql.sandbox.READ_SANDBOX` limits when omitted.

    Returns:
        The graph.
    """
    cfg = config or LinkingConfig()
    g = rx.PyDiGraph(multigraph=False)
    q_words = words(utterance)
    q_nodes = [g.add_node(LinkNode("question", w, i)) for i, w in enumerate(q_words)]
    h_nodes: list[tuple[list[str], list[int]]] = []
    for back, text in enumerate(reversed(list(history)), start=1):
        ws = words(text)
        h_nodes.append((ws, [g.add_node(LinkNode("history", w, i, back)) for i, w in enumerate(ws)]))
    sql_toks: list[str] = []
    if last_sql:
        try:
            sql_toks = tokenize_sql(last_sql)
        except SQLParseError:
            sql_toks = last_sql.lower().split()
    s_nodes = [g.add_node(LinkNode("sql", t, i)) for i, t in enumerate(sql_toks)]
    table_nodes = [g.add_node(LinkNode("table", t, i)) for i, t in enumerate(schema.table_names_original)]
    column_nodes = {
        c_idx: g.add_node(LinkNode("column", name, c_idx))
        for c_idx, (t_idx, name) in enumerate(schema.column_names_original)
        if t_idx >= 0
    }
    pks = set(schema.primary_keys)
    for c_idx, node in column_nodes.items():
        t_idx = schema.column_names_original[c_idx][0]
        g.add_edge(node, table_nodes[t_idx], "primary_key" if c_idx in pks else "column_of")
    for a, b in schema.foreign_keys:
        if a in column_nodes and b in column_nodes:
            g.add_edge(column_nodes[a], column_nodes[b], "foreign_key")
            ta, tb = schema.column_names_original[a][0], schema.column_names_original[b][0]
            if ta != tb and not g.has_edge(table_nodes[ta], table_nodes[tb]):
                g.add_edge(table_nodes[ta], table_nodes[tb], "table_foreign_key")
    values = (
        _read_values(
            db_path, schema, cfg.value_sample_rows, cfg.value_timeout_s, sandbox, cfg.value_isolation
        )
        if (db_path and cfg.value_match)
        else {}
    )
    _link_utterance(g, q_words, q_nodes, schema, table_nodes, column_nodes, values, cfg)
    for ws, nodes in h_nodes:
        _link_utterance(g, ws, nodes, schema, table_nodes, column_nodes, values, cfg)
    _link_sql(g, sql_toks, s_nodes, schema, table_nodes, column_nodes)
    return SchemaLinkingGraph(g, schema)
