"""The encoder input of one turn: [current; history; last SQL; schema] with its relation matrix.

Token layout (``[CLS]``/``[SEP]`` are the tokenizer's own specials, or BOS/EOS without them)::

    [CLS] current utterance [SEP] previous utterance [SEP] ... [SEP] last SQL [SEP] table col col ... table col ... [SEP]

History utterances come most recent first (so truncation drops the oldest); with
``context="utterance"`` the history and the SQL are left out, with ``"history"`` the SQL is.
Every word, SQL token, table and column is a node of the linking graph; each subword token
records its node, so the relation between two tokens is the relation between their nodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from zjulab.hiesql.config import ContextMode
from zjulab.hiesql.errors import HieSqlConfigError
from zjulab.hiesql.linking import EDGE_TYPES, RELATIONS, SchemaLinkingGraph

logger = logging.getLogger(__name__)

__all__ = ["SEGMENTS", "EncoderInput", "build_encoder_input", "node_relation_matrix"]

#: Segment ids of the tokens.
SEGMENTS = ("special", "question", "history", "sql", "schema")
_SEG = {s: i for i, s in enumerate(SEGMENTS)}
_REL = {r: i for i, r in enumerate(RELATIONS)}
_PRIORITY = {e: i for i, e in enumerate(EDGE_TYPES)}


@dataclass
class EncoderInput:
    """One encoded turn.

    Args:
        input_ids: Token ids.
        segments: Segment id per token (index into :data:`SEGMENTS`).
        nodes: Linking-graph node per token (-1 for special tokens).
        relations: ``(len, len)`` relation ids (index into
            :data:`~zjulab.hiesql.linking.RELATIONS`).
        graph: The linking graph.
    """

    input_ids: list[int]
    segments: list[int]
    nodes: list[int]
    relations: np.ndarray
    graph: SchemaLinkingGraph

    def __len__(self) -> int:
        return len(self.input_ids)


def node_relation_matrix(graph: SchemaLinkingGraph) -> tuple[np.ndarray, dict[int, int]]:
    """Relation ids between every pair of graph nodes.

    Returns:
        ``(matrix, position)`` where ``position`` maps a graph index to its row.
    """
    idx = list(graph.graph.node_indices())
    pos = {n: k for k, n in enumerate(idx)}
    m = np.zeros((len(idx), len(idx)), dtype=np.int64)
    np.fill_diagonal(m, _REL["same_node"])
    best: dict[tuple[int, int], str] = {}
    for s, t, et in graph.graph.weighted_edge_list():
        key = (s, t)
        if key not in best or _PRIORITY[et] < _PRIORITY[best[key]]:
            best[key] = et
    for (s, t), et in best.items():
        m[pos[s], pos[t]] = _REL[et]
        if (t, s) not in best:
            m[pos[t], pos[s]] = _REL[f"{et}_rev"]
    return m, pos


def _specials(tokenizer: Any) -> tuple[int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise HieSqlConfigError("the encoder tokenizer needs CLS/SEP (or BOS/EOS) tokens")
    return int(cls_id), int(sep_id)


def build_encoder_input(
    tokenizer: Any, graph: SchemaLinkingGraph, context: ContextMode = "history_sql", max_length: int = 512
) -> EncoderInput:
    """Lay out one turn for the encoder.

    Args:
        tokenizer: The encoder's tokenizer.
        graph: The turn's linking graph (built with the history and last SQL).
        context: ``"utterance"``, ``"history"`` or ``"history_sql"``.
        max_length: Token budget; the oldest history goes first, then the SQL's tail, then the
            schema's tail.

    Returns:
        The input.
    """
    if context not in ("utterance", "history", "history_sql"):
        raise HieSqlConfigError(f"unknown context {context!r}")
    cls_id, sep_id = _specials(tokenizer)
    q = graph.nodes("question")
    hist: dict[int, list[tuple[int, Any]]] = {}
    for gi, n in graph.nodes("history"):
        hist.setdefault(n.turn, []).append((gi, n))
    sql = graph.nodes("sql")
    schema_nodes: list[tuple[int, Any]] = []
    columns = {n.index: gi for gi, n in graph.nodes("column")}
    for gi, t in graph.nodes("table"):
        schema_nodes.append((gi, t))
        for c_idx in graph.schema.columns_of(t.index):
            if c_idx in columns:
                schema_nodes.append((columns[c_idx], graph.graph[columns[c_idx]]))

    def text_of(n: Any) -> str:
        if n.kind == "table":
            return str(graph.schema.table_names[n.index])
        if n.kind == "column":
            return str(graph.schema.column_names[n.index][1])
        return str(n.text)

    every = q + [x for k in sorted(hist) for x in hist[k]] + sql + schema_nodes
    pieces = (
        tokenizer([" " + text_of(n) for _, n in every], add_special_tokens=False)["input_ids"]
        if every
        else []
    )
    ids_of = {gi: list(p) for (gi, _), p in zip(every, pieces)}

    def span(nodes: list[tuple[int, Any]], seg: str) -> list[tuple[int, int, int]]:
        return [(tid, _SEG[seg], gi) for gi, _ in nodes for tid in ids_of[gi]]

    q_part = span(q, "question")
    h_parts = [span(hist[k], "history") for k in sorted(hist)] if context != "utterance" else []
    s_part = span(sql, "sql") if context == "history_sql" and sql else []
    sc_part = span(schema_nodes, "schema")

    def total() -> int:
        return (
            2
            + len(q_part)
            + sum(len(h) + 1 for h in h_parts)
            + (len(s_part) + 1 if s_part else 0)
            + len(sc_part)
        )

    while total() > max_length and h_parts:
        h_parts.pop()  # the oldest history utterance
    if total() > max_length and s_part:
        s_part = s_part[: max(0, len(s_part) - (total() - max_length))]
    if total() > max_length:
        sc_part = sc_part[: max(0, len(sc_part) - (total() - max_length))]
        logger.warning("encoder input cut to %d tokens; part of the schema was dropped", max_length)
    if total() > max_length:
        q_part = q_part[: max(0, len(q_part) - (total() - max_length))]
    sep = (sep_id, _SEG["special"], -1)
    seq = [(cls_id, _SEG["special"], -1), *q_part, sep]
    for h in h_parts:
        seq += [*h, sep]
    if s_part:
        seq += [*s_part, sep]
    seq += [*sc_part, sep]
    node_m, pos = node_relation_matrix(graph)
    rows = np.array([pos[g] if g >= 0 else -1 for _, _, g in seq], dtype=np.int64)
    padded = np.zeros((node_m.shape[0] + 1, node_m.shape[0] + 1), dtype=np.int64)
    padded[:-1, :-1] = node_m
    rel = padded[rows[:, None], rows[None, :]]
    return EncoderInput([t for t, _, _ in seq], [s for _, s, _ in seq], [g for _, _, g in seq], rel, graph)


def prefix_positions(enc: EncoderInput, k: int) -> list[int]:
    """The ``k`` encoder positions handed to the decoder as its soft prefix, by priority.

    Question tokens first, then schema tokens the linking graph ties to the question, history
    or last SQL (their relation-aware states carry the linking), then last-SQL and history
    tokens, then the other schema tokens and special tokens; each group in sequence order. The
    first ``k`` sequence positions (the old rule) mostly hold the question and history, so the
    states of linked schema items seldom reached the decoder.
    """
    seg = np.asarray(enc.segments)
    context = np.isin(seg, [_SEG["question"], _SEG["history"], _SEG["sql"]])
    linked = np.zeros(len(seg), dtype=bool)
    if context.any():
        rel = enc.relations[:, context]
        linked = (rel > 1).any(axis=1) & (seg == _SEG["schema"])  # 0 none, 1 same_node
    rank = np.full(len(seg), 5)
    rank[seg == _SEG["schema"]] = 4
    rank[seg == _SEG["history"]] = 3
    rank[seg == _SEG["sql"]] = 2
    rank[linked] = 1
    rank[seg == _SEG["question"]] = 0
    order = np.lexsort((np.arange(len(seg)), rank))
    return sorted(int(i) for i in order[:k])
