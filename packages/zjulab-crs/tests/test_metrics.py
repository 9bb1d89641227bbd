import math

import pytest

from zjulab.crs.errors import MetricInputError
from zjulab.crs.metrics import (
    PRF,
    bleu,
    distinct_n,
    hit_at_k,
    mrr_at_k,
    multilabel_prf,
    ndcg_at_k,
    pair_prf,
    pearson,
    span_prf,
    spearman,
    text_tokens,
)

GOLD = [[("color", 0, 5), ("size", 10, 12)]]
PRED = [[("color", 0, 5), ("size", 9, 12), ("brand", 20, 25)]]


def test_span_exact_counts_partial_overlap_as_fp_and_fn():
    # 1 exact hit of 3 predictions and 2 gold spans: P=1/3, R=1/2, F1=0.4
    s = span_prf(GOLD, PRED)
    assert (s.correct, s.predicted, s.gold) == (1, 3, 2)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(0.4)


def test_span_overlap_mode_credits_partial_overlap_once():
    s = span_prf(GOLD, PRED, match="overlap")
    assert s.precision == pytest.approx(2 / 3)
    assert s.recall == pytest.approx(1.0)
    assert s.f1 == pytest.approx(0.8)
    # a second prediction overlapping the same gold span is not credited again, nor a wrong key
    s2 = span_prf([[("size", 0, 4)]], [[("size", 0, 2), ("size", 2, 4), ("color", 0, 4)]], match="overlap")
    assert (s2.correct, s2.predicted, s2.gold) == (1, 3, 1)


def test_span_errors():
    with pytest.raises(MetricInputError, match="1 gold entries but 2"):
        span_prf(GOLD, PRED * 2)
    with pytest.raises(MetricInputError, match="start < end"):
        span_prf([[("k", 3, 3)]], [[]])
    with pytest.raises(MetricInputError, match="match must be"):
        span_prf(GOLD, PRED, match="fuzzy")  # type: ignore[arg-type]


def test_pair_prf_multiset_and_whitespace():
    p = pair_prf([[("a", "x"), ("a", "x"), ("b", "y")]], [[("a", " x"), ("b", "z")]])
    assert (p.correct, p.predicted, p.gold) == (1, 2, 3)
    assert p.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


def test_prf_zero_division():
    assert PRF.from_counts(0, 0, 0) == PRF(0.0, 0.0, 0.0, 0, 0, 0)


def test_multilabel_samples_and_micro():
    gold = [{"a", "b"}, {"c"}, set()]
    pred = [{"a"}, {"c", "d"}, set()]
    s = multilabel_prf(gold, pred)
    assert s.precision == pytest.approx((1 + 0.5 + 1) / 3)
    assert s.recall == pytest.approx((0.5 + 1 + 1) / 3)
    assert s.f1 == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    m = multilabel_prf(gold, pred, average="micro")
    assert (m.precision, m.recall, m.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert multilabel_prf([{"a"}], [set()]).f1 == 0.0
    with pytest.raises(MetricInputError, match="no samples"):
        multilabel_prf([], [])


RANKED = [["a", "b", "c"], ["x", "y", "z"]]
TARGETS = ["b", {"z", "q"}]


def test_hit_mrr_ndcg_hand_worked():
    assert hit_at_k(RANKED, TARGETS, 1) == 0.0
    assert hit_at_k(RANKED, TARGETS, 2) == 0.5
    assert hit_at_k(RANKED, TARGETS, 3) == 1.0
    assert mrr_at_k(RANKED, TARGETS, 2) == pytest.approx(0.25)
    assert mrr_at_k(RANKED, TARGETS) == pytest.approx((1 / 2 + 1 / 3) / 2)
    # ndcg@2: sample 1 has b at rank 2 -> 1/log2(3); sample 2 nothing
    assert ndcg_at_k(RANKED, TARGETS, 2) == pytest.approx((1 / math.log2(3)) / 2)
    # ndcg@3: sample 2 has z at rank 3 (0.5) against an ideal of two hits (1 + 1/log2 3)
    expected = (1 / math.log2(3) + 0.5 / (1 + 1 / math.log2(3))) / 2
    assert ndcg_at_k(RANKED, TARGETS, 3) == pytest.approx(expected)


def test_ranking_errors():
    with pytest.raises(MetricInputError, match="no target"):
        hit_at_k([["a"]], [[]], 1)
    with pytest.raises(MetricInputError, match="k must be positive"):
        ndcg_at_k([["a"]], ["a"], 0)
    with pytest.raises(MetricInputError, match="1 gold entries but 2"):
        mrr_at_k([["a"], ["b"]], ["a"])


def test_bleu_hand_worked():
    hyp, ref = "the cat sat on the mat", "the cat is on the mat"
    # unigram precision 5/6, bigram 3/5, equal lengths (BP = 1)
    assert bleu([hyp], [ref], 1) == pytest.approx(5 / 6, abs=1e-6)
    assert bleu([hyp], [ref], 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    # brevity penalty exp(1 - 6/2) with perfect unigram precision
    assert bleu(["the cat"], [ref], 1) == pytest.approx(math.exp(-2), abs=1e-6)
    # several references per hypothesis: the closest length and clipped counts from either
    assert bleu([hyp], [[ref, hyp]], 2) == pytest.approx(1.0)


def test_bleu_chinese_tokenizer_counts_characters():
    # "zh" splits CJK characters: 3 of 4 characters match, same length
    assert bleu(["补水面膜"], ["补水面霜"], 1, tokenize="zh") == pytest.approx(0.75, abs=1e-6)


def test_bleu_errors():
    with pytest.raises(MetricInputError, match=r"n must be in 1\.\.4"):
        bleu(["a"], ["a"], 5)
    with pytest.raises(MetricInputError, match="no samples"):
        bleu([], [], 1)


def test_distinct_hand_worked():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert distinct_n(["x"], 2) == 0.0
    with pytest.raises(MetricInputError):
        distinct_n(texts, 0)


def test_text_tokens_splits_cjk_and_punctuation():
    assert text_tokens("Hi, 面膜 x2") == ["hi", ",", "面", "膜", "x2"]


def test_pearson_spearman_hand_worked():
    r, p = pearson([1, 2, 3], [1, 2, 4])
    assert r == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert 0 < p < 1
    rho, _ = spearman([1, 2, 3], [1, 2, 4])
    assert rho == pytest.approx(1.0)
    # ties get average ranks: x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]
    rho2, _ = spearman([1, 2, 2, 3], [1, 3, 2, 4])
    assert rho2 == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_correlation_edge_cases():
    r, p = pearson([1, 1, 1], [1, 2, 3])
    assert math.isnan(r) and math.isnan(p)
    with pytest.raises(MetricInputError, match="at least 2"):
        spearman([1], [1])
    with pytest.raises(MetricInputError, match="finite"):
        pearson([1, float("nan")], [1, 2])
