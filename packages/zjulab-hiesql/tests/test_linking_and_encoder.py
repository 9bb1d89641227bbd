from __future__ import annotations

import numpy as np
import pytest
import torch

from zjulab.common.testing import tiny_encoder
from zjulab.hiesql.config import EncoderConfig
from zjulab.hiesql.encoder import HieSqlEncoder, collate_encoder_inputs
from zjulab.hiesql.encoder_input import SEGMENTS, build_encoder_input
from zjulab.hiesql.errors import HieSqlConfigError
from zjulab.hiesql.linking import RELATIONS, build_linking_graph
from zjulab.hiesql.rat import RelationAwareAttention


def edge_set(g):
    return {
        (s.kind, s.text, s.turn, t.kind, t.text, e)
        for s, t, e in g.edges()
        if s.kind in ("question", "history", "sql")
    }


def test_graph_edges_hand_built(concert_schema, concert_db):
    g = build_linking_graph(
        concert_schema,
        "Which singers sang in 2014 at Arena?",
        history=["Show the concerts"],
        last_sql="SELECT T2.year FROM singer AS T1 JOIN concert AS T2 ON T1.singer_id = T2.singer_id",
        db_path=concert_db,
    )
    assert edge_set(g) == {
        ("question", "singers", 0, "table", "singer", "exact_match"),
        ("question", "singers", 0, "column", "singer_id", "partial_match"),
        ("question", "arena", 0, "column", "stadium", "value_match"),
        ("history", "concerts", 1, "table", "concert", "exact_match"),
        ("history", "concerts", 1, "column", "concert_id", "partial_match"),
        ("sql", "t2.year", 0, "column", "year", "sql_column"),
        ("sql", "singer", 0, "table", "singer", "sql_table"),
        ("sql", "concert", 0, "table", "concert", "sql_table"),
        ("sql", "t1.singer_id", 0, "column", "singer_id", "sql_column"),
        ("sql", "t2.singer_id", 0, "column", "singer_id", "sql_column"),
    }
    schema_edges = {(s.text, t.text, e) for s, t, e in g.edges() if s.kind in ("table", "column")}
    assert ("singer_id", "singer", "primary_key") in schema_edges
    assert ("name", "singer", "column_of") in schema_edges
    assert ("singer_id", "singer_id", "foreign_key") in schema_edges
    assert ("concert", "singer", "table_foreign_key") in schema_edges
    # the foreign-key column of concert and the key of singer are told apart by the SQL aliases
    t2 = [(s.text, t.index) for s, t, e in g.edges("sql_column") if s.text.endswith("singer_id")]
    assert sorted(t2) == [("t1.singer_id", 1), ("t2.singer_id", 6)]
    q = g.node_id("question", 1)
    assert g.relation_between(q, g.node_id("table", 0)) == "exact_match"
    assert g.relation_between(g.node_id("table", 0), q) == "exact_match_rev"
    assert g.relation_between(q, g.node_id("table", 1)) == "none"
    assert "singer" in g.linked_schema()


def test_exact_token_layout(concert_schema):
    _, tok = tiny_encoder()
    g = build_linking_graph(
        concert_schema, "how old", ["list singers", "only france"], "SELECT age FROM singer"
    )
    x = build_encoder_input(tok, g, "history_sql", 512)

    def ids(words):
        return [i for w in words for i in tok(" " + w, add_special_tokens=False)["input_ids"]]

    cls, sep = tok.cls_token_id, tok.sep_token_id
    schema_words = [
        "singer",
        "singer id",
        "name",
        "country",
        "age",
        "concert",
        "concert id",
        "singer id",
        "year",
        "stadium",
    ]
    expected = [
        cls,
        *ids(["how", "old"]),
        sep,
        *ids(["only", "france"]),  # most recent history first
        sep,
        *ids(["list", "singers"]),
        sep,
        *ids(["select", "age", "from", "singer"]),
        sep,
        *ids(schema_words),
        sep,
    ]
    assert x.input_ids == expected
    seg_names = [SEGMENTS[s] for s in x.segments]
    n_q = len(ids(["how", "old"]))
    assert seg_names[: n_q + 2] == ["special"] + ["question"] * n_q + ["special"]
    assert seg_names.count("history") == len(ids(["only", "france", "list", "singers"]))
    assert seg_names.count("sql") == len(ids(["select", "age", "from", "singer"]))
    assert x.relations.shape == (len(expected), len(expected))
    # without history/SQL the same utterance and schema remain
    u = build_encoder_input(tok, g, "utterance", 512)
    assert u.input_ids == [cls, *ids(["how", "old"]), sep, *ids(schema_words), sep]
    h = build_encoder_input(tok, g, "history", 512)
    assert "sql" not in [SEGMENTS[s] for s in h.segments] and "history" in [SEGMENTS[s] for s in h.segments]


def test_relation_matrix_and_truncation(concert_schema):
    _, tok = tiny_encoder()
    g = build_linking_graph(concert_schema, "singer age", ["a " * 40, "b " * 40], "SELECT age FROM singer")
    x = build_encoder_input(tok, g, "history_sql", 512)
    q_tok = x.nodes.index(g.node_id("question", 0))
    t_tok = x.nodes.index(g.node_id("table", 0))
    assert RELATIONS[x.relations[q_tok, t_tok]] == "exact_match"
    assert RELATIONS[x.relations[t_tok, q_tok]] == "exact_match_rev"
    assert RELATIONS[x.relations[q_tok, q_tok]] == "same_node"
    assert x.relations[0].tolist() == [0] * len(x)  # [CLS] has no relation
    short = build_encoder_input(tok, g, "history_sql", 60)
    assert len(short) <= 60
    turns = {g.graph[n].turn for n in short.nodes if n >= 0 and g.graph[n].kind == "history"}
    assert 2 not in turns  # the oldest history utterance went first


def test_rat_attention_reduces_to_plain_attention_and_uses_relations():
    torch.manual_seed(0)
    att = RelationAwareAttention(8, 2, len(RELATIONS), dropout=0.0).eval()
    x = torch.randn(1, 3, 8)
    rel = torch.zeros(1, 3, 3, dtype=torch.long)
    mask = torch.ones(1, 3)
    q, k, v = att.qkv(x).view(1, 3, 3, 2, 4).permute(2, 0, 3, 1, 4)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
    ref = att.out(ref.transpose(1, 2).reshape(1, 3, 8))
    assert torch.allclose(att(x, rel, mask), ref, atol=1e-6)
    with torch.no_grad():
        att.rel_k.weight[3].fill_(1.0)
    rel[0, 0, 1] = 3
    out = att(x, rel, mask)
    assert not torch.allclose(out[0, 0], ref[0, 0]) and torch.allclose(out[0, 1:], ref[0, 1:], atol=1e-6)
    with pytest.raises(HieSqlConfigError, match="does not divide"):
        RelationAwareAttention(10, 3, 4)


def test_encoder_forward_and_padding(concert_schema):
    model, tok = tiny_encoder()
    enc = HieSqlEncoder(model, EncoderConfig(rat_heads=4, rat_layers=1, dropout=0.0)).eval()
    a = build_encoder_input(tok, build_linking_graph(concert_schema, "singer names"), "history_sql")
    b = build_encoder_input(
        tok, build_linking_graph(concert_schema, "how many concerts in each year", ["x"]), "history_sql"
    )
    batch = collate_encoder_inputs([a, b], tok.pad_token_id)
    out = enc(**batch)
    alone = enc(**collate_encoder_inputs([a], tok.pad_token_id))
    assert out.shape == (2, len(b), 32)
    assert torch.allclose(out[0, : len(a)], alone[0], atol=1e-5)  # padding does not leak
    assert np.array_equal(batch["relations"][0, : len(a), : len(a)].numpy(), a.relations)
