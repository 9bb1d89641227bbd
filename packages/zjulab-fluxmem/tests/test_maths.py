"""Hand-worked numbers: BM25, hybrid score, PEMS and its stopping rule, the k-means k formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zjulab.fluxmem import (
    BM25Index,
    FluxMemConfig,
    FluxMemConfigError,
    PEMSTracker,
    hybrid_scores,
    kmeans,
    minmax,
    num_clusters,
    pems,
    skill_delta,
    tokenize,
)
from zjulab.fluxmem.memory import link_scores


@pytest.fixture
def bm25() -> BM25Index:
    idx = BM25Index(k1=1.5, b=0.75)
    idx.add("d1", "Apple banana apple")
    idx.add("d2", "banana cherry")
    idx.add("d3", "cherry date egg fig")
    return idx


def test_tokenize_lowercases_word_tokens():
    assert tokenize("Hi, Mel! It's 9:30.") == ["hi", "mel", "it", "s", "9", "30"]


def test_bm25_idf_and_scores_by_hand(bm25):
    # N = 3, lengths 3, 2, 4 -> avgdl = 3
    assert bm25.avgdl == pytest.approx(3.0)
    # idf(apple) = ln((3 - 1 + .5) / (1 + .5) + 1) = ln(2.6667) = 0.980829
    assert bm25.idf("apple") == pytest.approx(0.980829, abs=1e-6)
    # idf(banana) = ln((3 - 2 + .5) / 2.5 + 1) = ln(1.6) = 0.470004
    assert bm25.idf("banana") == pytest.approx(0.470004, abs=1e-6)
    # d1, apple: tf 2, dl 3: 2 * 2.5 / (2 + 1.5 * (.25 + .75)) = 5 / 3.5 -> * idf = 1.401184
    # d2, banana: tf 1, dl 2: 2.5 / (1 + 1.5 * (.25 + .75 * 2/3)) = 2.5 / 2.125 -> * idf = 0.552945
    s = bm25.score("apple", ["d1", "d2", "nope"])
    assert s.tolist() == pytest.approx([1.401184, 0.0, 0.0], abs=1e-6)
    s = bm25.score("banana", ["d1", "d2"])
    assert s.tolist() == pytest.approx([0.470004, 0.552945], abs=1e-6)
    # repeated query tokens count twice
    assert bm25.score("banana banana", ["d2"])[0] == pytest.approx(2 * 0.552945, abs=1e-6)


def test_bm25_incremental_equals_rebuild(bm25):
    bm25.remove("d3")
    bm25.add("d2", "banana cherry cherry")  # replace
    fresh = BM25Index()
    fresh.add("d1", "Apple banana apple")
    fresh.add("d2", "banana cherry cherry")
    q = "cherry banana apple"
    assert bm25.score(q, ["d1", "d2"]).tolist() == pytest.approx(fresh.score(q, ["d1", "d2"]).tolist())
    assert len(bm25) == 2 and bm25.df("egg") == 0
    a, b = bm25.top(q, 5), fresh.top(q, 5)
    assert [d for d, _ in a] == [d for d, _ in b]
    assert [v for _, v in a] == pytest.approx([v for _, v in b])


def test_bm25_top_ranks_and_respects_budget(bm25):
    # d1 = 1.401184 (apple); d2 = .470004 * 2.5 / 2.125 = .552945; d3 = .470004 * 2.5 / 2.875 = .408699
    top = bm25.top("apple cherry", 3)
    assert [d for d, _ in top] == ["d1", "d2", "d3"]
    assert [v for _, v in top] == pytest.approx([1.401184, 0.552945, 0.408699], abs=1e-6)
    # budget 1: only the rarest term (apple, df 1) is read
    assert [d for d, _ in bm25.top("apple cherry", 3, scan_budget=1)] == ["d1"]


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
        ({"bm25_b": 1.5}, "bm25_b"),
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


def test_bm25_agrees_with_bm25s_lucene():
    bm25s = pytest.importorskip("bm25s")
    docs = ["Apple banana apple", "banana cherry", "cherry date egg fig", "fig fig fig apple pie", "x y z"]
    ref = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    ref.index([tokenize(d) for d in docs], show_progress=False)
    ours = BM25Index(k1=1.5, b=0.75)
    for i, d in enumerate(docs):
        ours.add(str(i), d)
    for q in ("apple fig cherry", "banana", "fig fig egg"):
        expected = ref.get_scores(tokenize(q))
        # bm25s drops the constant (k1 + 1) factor of the Okapi numerator; rankings are identical
        got = ours.score(q, [str(i) for i in range(len(docs))])
        assert got.tolist() == pytest.approx((2.5 * expected).tolist(), rel=1e-5)
