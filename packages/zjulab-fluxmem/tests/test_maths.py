"""Hand-worked numbers: FTS5 bm25, hybrid score, PEMS and its stopping rule, the k-means k formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zjulab.fluxmem import (
    FluxMemConfig,
    FluxMemConfigError,
    FluxMemory,
    PEMSTracker,
    hybrid_scores,
    kmeans,
    minmax,
    num_clusters,
    pems,
    skill_delta,
)
from zjulab.fluxmem.memory import link_scores
from zjulab.fluxmem.nodes import MemoryNode
from zjulab.fluxmem.store import SQLiteStore, fts_query


def _fts_store(docs: dict[str, str]) -> SQLiteStore:
    store = SQLiteStore(None, 4)
    with store.write():
        for nid, text in docs.items():
            store.insert_node(
                MemoryNode(id=nid, kind="episodic", content=text, user_id="u"), np.ones(4), "{}"
            )
    return store


DOCS = {"d1": "Apple banana apple", "d2": "banana cherry", "d3": "cherry date egg fig"}


def _fts5_bm25(query: str, docs: dict[str, str], k1: float = 1.2, b: float = 0.75) -> dict[str, float]:
    """SQLite FTS5's documented bm25(), by hand: idf = ln((N - n + 0.5) / (n + 0.5)), floored at 1e-6."""
    toks = {d: [w.lower() for w in t.split()] for d, t in docs.items()}
    n_docs = len(docs)
    avgdl = sum(len(t) for t in toks.values()) / n_docs
    out = {}
    for d, words in toks.items():
        score = 0.0
        for term in dict.fromkeys(query.lower().split()):
            n = sum(term in t for t in toks.values())
            if not n:
                continue
            idf = max(math.log((n_docs - n + 0.5) / (n + 0.5)), 1e-6)
            tf = words.count(term)
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(words) / avgdl))
        out[d] = score
    return out


def test_fts_query_quotes_every_word():
    assert fts_query('Where is "Rex"?') == '"where" OR "is" OR "rex"'
    assert fts_query("?!") is None


def test_fts5_bm25_matches_the_formula_by_hand():
    store = _fts_store(DOCS)
    store.vectors.sync(store.conn)
    for q in ("apple", "banana cherry", "fig apple egg"):
        want = _fts5_bm25(q, DOCS)
        got = store.bm25_scores(q, list(DOCS))
        assert got.tolist() == pytest.approx([want[d] for d in DOCS], rel=1e-6)
    # d1 has "apple" twice in three words, nobody else has it
    assert store.bm25_top("apple banana", 3, {"user_id": "u"})[0][0] == "d1"


def test_bm25_scores_agree_with_sqlite_bm25():
    docs = {**DOCS, "d4": "fig fig fig apple pie", "d5": "x y z", "d6": "Apple, the café's apple_pie!"}
    store = _fts_store(docs)
    store.vectors.sync(store.conn)
    for q in ("apple fig cherry", "banana", "fig fig egg", "café pie"):
        match = fts_query(q)
        rows = store.conn.execute(
            "SELECT n.id, -bm25(fts) FROM fts JOIN nodes n ON n.rid = fts.rowid WHERE fts MATCH ?", (match,)
        )
        ref = dict(rows.fetchall())
        got = store.bm25_scores(q, list(docs))
        assert got.tolist() == pytest.approx([ref.get(d, 0.0) for d in docs], rel=1e-9)


def test_fts5_updates_incrementally_like_a_rebuild():
    store = _fts_store({**DOCS, "d4": "apple pie"})
    with store.write():
        store.delete_node("d4")
    fresh = _fts_store(DOCS)
    for q in ("apple", "cherry fig"):
        assert store.bm25_scores(q, list(DOCS)).tolist() == pytest.approx(
            fresh.bm25_scores(q, list(DOCS)).tolist()
        )


def test_minmax_and_hybrid_by_hand():
    assert minmax([2.0, 4.0, 3.0]).tolist() == [0.0, 1.0, 0.5]
    assert minmax([5.0, 5.0]).tolist() == [0.0, 0.0]
    # N(dense) = [1, 0, .5], N(bm25) = [0, 1, .5], N(llm) = [1, 0, .5]
    s = hybrid_scores([0.9, 0.5, 0.7], [0.0, 2.0, 1.0], [1.0, 0.0, 0.5])
    assert s.tolist() == pytest.approx([1.3, 0.5, 0.9])
    # without a verifier the llm term is dropped
    assert hybrid_scores([0.9, 0.5, 0.7], [0.0, 2.0, 1.0]).tolist() == pytest.approx([1.0, 0.5, 0.75])
    s = hybrid_scores([0.9, 0.5], [1.0, 0.0], dense_weight=2.0, bm25_weight=0.0)
    assert s.tolist() == pytest.approx([2.0, 0.0])


def test_link_scores_are_normalised_by_weights_in_play():
    cfg = FluxMemConfig()
    w = link_scores(np.array([0.9, 0.5, 0.7]), np.array([0.0, 2.0, 1.0]), [1.0, 0.0, 0.5], cfg)
    assert w.tolist() == pytest.approx([1.3 / 1.8, 0.5 / 1.8, 0.9 / 1.8])
    w = link_scores(np.array([0.9, 0.5]), np.array([1.0, 0.0]), None, cfg)
    assert w.tolist() == pytest.approx([1.0, 0.0])


def test_pems_by_hand():
    # 0.8 / (2 * ln 20) * (1 - 0.1) = 0.8 / 5.991465 * 0.9 = 0.120171
    assert pems(0.8, 2, 20, 0.1) == pytest.approx(0.120171, abs=1e-6)
    assert pems(1.0, 1, 8, 0.0) == pytest.approx(1 / math.log(8))
    assert pems(1.0, 1, 1, 0.0) == 0.0  # ln 1 = 0: no division by zero
    assert pems(1.0, 0, 0, 0.0) == 0.0  # clamped to 1 and 1


def test_skill_delta():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    assert skill_delta(a, None) == 0.0
    assert skill_delta(a, a * 3) == pytest.approx(0.0)
    assert skill_delta(a, b) == pytest.approx(1.0)
    assert skill_delta(a, np.array([1.0, 1.0])) == pytest.approx(1 - 1 / math.sqrt(2))
    assert skill_delta(a, np.zeros(2)) == 1.0


@pytest.mark.parametrize(
    ("history", "converged"),
    [([0.30], False), ([0.30, 0.295], True), ([0.30, 0.28], False), ([0.30, 0.28, 0.2799], True)],
)
def test_pems_stopping_rule(history, converged):
    t = PEMSTracker(epsilon=0.01)
    t.history = list(history)
    assert t.converged is converged


def test_pems_tracker_records():
    t = PEMSTracker(0.01)
    assert t.update(1.0, 1, 8, 0.0) == pytest.approx(0.480898, abs=1e-6)
    assert not t.converged
    t.update(1.0, 1, 8, 0.0)
    assert t.converged and len(t.history) == 2


@pytest.mark.parametrize(
    ("n", "k"), [(0, 1), (1, 1), (2, 1), (7, 1), (8, 2), (17, 2), (18, 3), (31, 3), (32, 4), (100, 7)]
)
def test_kmeans_k_formula(n, k):
    assert num_clusters(n) == k
    assert num_clusters(n) == max(1, math.floor(math.sqrt(n / 2)))


def test_kmeans_separates_blobs_deterministically():
    x = np.array([[0, 0], [0.1, 0], [10, 10], [10, 10.2], [0, 0.2]], dtype=float)
    labels = kmeans(x, 2, seed=3)
    assert labels.tolist() == [0, 0, 1, 1, 0]
    assert kmeans(x, 2, seed=3).tolist() == labels.tolist()
    assert kmeans(x, 9).max() <= 4  # k clamped to n


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prune_threshold": 1.5}, "prune_threshold"),
        ({"dense_weight": -1}, "dense_weight"),
        ({"candidate_k": 0}, "candidate_k"),
        ({"prune_threshold": 2}, "prune_threshold"),
        ({"pems_epsilon": 0}, "pems_epsilon"),
        ({"num_clusters": 0}, "num_clusters"),
        ({"dense_weight": 0, "bm25_weight": 0, "llm_weight": 0}, "must be > 0"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(FluxMemConfigError, match=match):
        FluxMemConfig(**kwargs)
    assert issubclass(FluxMemConfigError, ValueError)


def test_config_round_trip():
    cfg = FluxMemConfig(bm25_weight=0.7, num_clusters=3)
    assert FluxMemConfig.from_dict({**cfg.to_dict(), "unknown_future_key": 1}) == cfg


def test_bm25_after_deletes_and_updates_agrees_with_sqlite_and_the_row_counter_holds(tmp_path):
    docs = {**DOCS, "d4": "fig fig fig apple pie", "d5": "x y z"}
    store = _fts_store(docs)
    with store.write():
        store.delete_node("d5")
        store.set_content("d4", "cherry cherry banana", np.ones(store.dim, dtype=np.float32) / 2, "now")
    del docs["d5"]
    (n, _), fts_rows = store._corpus(), store.conn.execute("SELECT count(*) FROM fts").fetchone()[0]
    assert n == fts_rows == len(docs)
    for q in ("apple fig cherry", "banana cherry"):
        rows = store.conn.execute(
            "SELECT n.id, -bm25(fts) FROM fts JOIN nodes n ON n.rid = fts.rowid WHERE fts MATCH ?",
            (fts_query(q),),
        )
        ref = dict(rows.fetchall())
        assert store.bm25_scores(q, list(docs)).tolist() == pytest.approx(
            [ref.get(d, 0.0) for d in docs], rel=1e-9
        )


def test_a_store_without_the_row_counter_is_counted_once_on_open(enc, tmp_path):
    mem = FluxMemory.open(tmp_path / "s", enc)
    mem.add(["one apple", "two pears", "three figs"], user_id="u")
    with mem.store.write():
        mem.store.conn.execute("DELETE FROM fts_stats WHERE k = 'docs'")  # as written before the counter
    mem.close()
    again = FluxMemory.open(tmp_path / "s", enc)
    assert again.store._corpus()[0] == 3
