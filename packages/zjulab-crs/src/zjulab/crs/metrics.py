"""The metrics of the five U-NEED tasks.

* Task 1 (understanding): :func:`span_prf` over ``(key, start, end)`` spans and
  :func:`pair_prf` over ``(key, value)`` pairs (what an LLM, which gives no offsets, can be
  scored on).
* Task 2 (elicitation): :func:`multilabel_prf`.
* Task 3 (recommendation): :func:`hit_at_k`, :func:`mrr_at_k`, :func:`ndcg_at_k`.
* Task 4 (generation): :func:`sentence_bleu` (the authors' BLEU-n: sentence level, n-gram
  order n alone, averaged), :func:`bleu` (sacrebleu corpus BLEU, cumulative) and
  :func:`distinct_n`.
* Task 5 (evaluation): :func:`pearson` and :func:`spearman` (scipy).

All functions take one entry per sample and check that the lengths agree.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from zjulab.crs.errors import MetricInputError

__all__ = [
    "PRF",
    "bleu",
    "count_all_tied",
    "distinct_n",
    "hit_at_k",
    "mrr_at_k",
    "multilabel_prf",
    "ndcg_at_k",
    "pair_prf",
    "pearson",
    "char_tokens",
    "rank_candidates",
    "sentence_bleu",
    "span_prf",
    "spearman",
    "text_tokens",
]

logger = logging.getLogger(__name__)

Span = tuple[str, int, int]


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 with the counts behind them.

    Attributes:
        precision: Correct predictions / predictions (0 when nothing was predicted).
        recall: Correct predictions / gold items (0 when there is no gold item).
        f1: Harmonic mean of precision and recall (0 when both are 0).
        correct: Matched predictions (micro averages) or the number of samples (sample average).
        predicted: Number of predictions.
        gold: Number of gold items.
    """

    precision: float
    recall: float
    f1: float
    correct: int = 0
    predicted: int = 0
    gold: int = 0

    @staticmethod
    def from_counts(correct: int, predicted: int, gold: int) -> PRF:
        """Micro P/R/F1 from counts."""
        p = correct / predicted if predicted else 0.0
        r = correct / gold if gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return PRF(p, r, f, correct, predicted, gold)


def _check_lengths(a: Sequence[object], b: Sequence[object], what: str) -> None:
    if len(a) != len(b):
        raise MetricInputError(f"{what}: {len(a)} gold entries but {len(b)} predictions")


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] == b[0] and max(a[1], b[1]) < min(a[2], b[2])


def span_prf(
    gold: Sequence[Iterable[Span]],
    pred: Sequence[Iterable[Span]],
    *,
    match: Literal["exact", "overlap"] = "exact",
) -> PRF:
    """Micro precision/recall/F1 of labelled spans.

    A span is ``(key, start, end)`` with an exclusive end. With ``match="exact"`` (the paper's
    setting) a prediction is correct only when key, start and end all equal a gold span's, so a
    partial overlap counts as one false positive *and* one false negative. With
    ``match="overlap"`` a prediction is correct when it shares at least one character and the
    key with a gold span not yet matched (each gold span is matched at most once, predictions
    taken in start order).

    Args:
        gold: Gold spans, one collection per sample.
        pred: Predicted spans, one collection per sample.
        match: ``"exact"`` or ``"overlap"``.

    Returns:
        Micro-averaged :class:`PRF`.

    Raises:
        MetricInputError: Lengths differ, a span is malformed, or ``match`` is unknown.
    """
    _check_lengths(gold, pred, "span_prf")
    if match not in ("exact", "overlap"):
        raise MetricInputError(f"match must be 'exact' or 'overlap', got {match!r}")
    correct = n_pred = n_gold = 0
    for i, (g_raw, p_raw) in enumerate(zip(gold, pred)):
        g, p = list(g_raw), list(p_raw)
        for s in (*g, *p):
            if len(s) != 3 or not (isinstance(s[1], int) and isinstance(s[2], int)) or s[1] >= s[2]:
                raise MetricInputError(f"sample {i}: span {s!r} is not (key, start, end) with start < end")
        n_pred += len(p)
        n_gold += len(g)
        if match == "exact":
            correct += sum((Counter(map(tuple, g)) & Counter(map(tuple, p))).values())
        else:
            free = list(g)
            for s in sorted(p, key=lambda x: (x[1], x[2])):
                hit = next((j for j, t in enumerate(free) if _overlaps(s, t)), None)
                if hit is not None:
                    free.pop(hit)
                    correct += 1
    return PRF.from_counts(correct, n_pred, n_gold)


def pair_prf(gold: Sequence[Iterable[tuple[str, str]]], pred: Sequence[Iterable[tuple[str, str]]]) -> PRF:
    """Micro P/R/F1 of ``(key, value)`` pairs, counted as multisets per sample.

    Keys and values are compared after stripping surrounding white space.

    Raises:
        MetricInputError: Lengths differ.
    """
    _check_lengths(gold, pred, "pair_prf")
    correct = n_pred = n_gold = 0
    for g_raw, p_raw in zip(gold, pred):
        g = Counter((k.strip(), v.strip()) for k, v in g_raw)
        p = Counter((k.strip(), v.strip()) for k, v in p_raw)
        n_gold += sum(g.values())
        n_pred += sum(p.values())
        correct += sum((g & p).values())
    return PRF.from_counts(correct, n_pred, n_gold)


def multilabel_prf(
    gold: Sequence[Iterable[str]],
    pred: Sequence[Iterable[str]],
    *,
    average: Literal["samples", "micro"] = "samples",
) -> PRF:
    """Multi-label precision/recall/F1.

    ``average="samples"`` (the default, as for the paper's elicitation table) computes P, R and
    F1 for each sample and averages each over samples, so the reported F1 is not the harmonic
    mean of the reported P and R. A sample with an empty gold set and an empty prediction scores
    1/1/1; an empty prediction against a non-empty gold set scores 0/0/0, and vice versa.
    ``average="micro"`` pools the counts over samples.

    Raises:
        MetricInputError: Lengths differ, no samples, or ``average`` is unknown.
    """
    _check_lengths(gold, pred, "multilabel_prf")
    if not gold:
        raise MetricInputError("multilabel_prf: no samples")
    sets = [(set(g), set(p)) for g, p in zip(gold, pred)]
    tp = sum(len(g & p) for g, p in sets)
    n_pred = sum(len(p) for _, p in sets)
    n_gold = sum(len(g) for g, _ in sets)
    if average == "micro":
        return PRF.from_counts(tp, n_pred, n_gold)
    if average != "samples":
        raise MetricInputError(f"average must be 'samples' or 'micro', got {average!r}")
    ps, rs, fs = [], [], []
    for g, p in sets:
        if not g and not p:
            ps.append(1.0)
            rs.append(1.0)
            fs.append(1.0)
            continue
        hit = len(g & p)
        pi = hit / len(p) if p else 0.0
        ri = hit / len(g) if g else 0.0
        ps.append(pi)
        rs.append(ri)
        fs.append(2 * pi * ri / (pi + ri) if pi + ri else 0.0)
    n = len(sets)
    return PRF(sum(ps) / n, sum(rs) / n, sum(fs) / n, n, n_pred, n_gold)


def _ranking_inputs(
    ranked: Sequence[Sequence[str]], targets: Sequence[Iterable[str] | str], k: int | None, what: str
) -> list[tuple[list[str], set[str]]]:
    _check_lengths(targets, ranked, what)
    if not ranked:
        raise MetricInputError(f"{what}: no samples")
    if k is not None and k <= 0:
        raise MetricInputError(f"{what}: k must be positive, got {k}")
    out = []
    for i, (r, t) in enumerate(zip(ranked, targets)):
        tset = {t} if isinstance(t, str) else set(t)
        if not tset:
            raise MetricInputError(f"{what}: sample {i} has no target item")
        out.append((list(r)[:k] if k is not None else list(r), tset))
    return out


TieRule = Literal["pessimistic", "seeded"]


def _tie_key(seed: int, item_id: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x1f{item_id}".encode(), digest_size=8).digest()


def rank_candidates(
    candidates: Sequence[str],
    scores: Sequence[float],
    *,
    targets: Iterable[str] = (),
    rule: TieRule = "seeded",
    seed: int = 0,
) -> list[str]:
    """Candidates best first, ties broken by a rule that does not depend on their order.

    Higher scores come first. Among equal scores:

    * ``rule="seeded"`` orders by a keyed hash of ``(seed, item_id)`` -- a fixed pseudo-random
      permutation, the same whatever order the candidates were listed in;
    * ``rule="pessimistic"`` puts every item of ``targets`` after all non-target items of the
      same score (the target is ranked last within its tie), then uses the seeded order.

    Args:
        candidates: Candidate item ids (duplicates are dropped, first occurrence kept).
        scores: One score per candidate.
        targets: Relevant items (used by ``"pessimistic"`` only).
        rule: ``"seeded"`` or ``"pessimistic"``.
        seed: Seed of the pseudo-random order.

    Raises:
        MetricInputError: Lengths differ, a score is not finite, or the rule is unknown.
    """
    _check_lengths(candidates, scores, "rank_candidates")
    if rule not in ("pessimistic", "seeded"):
        raise MetricInputError(f"rule must be 'pessimistic' or 'seeded', got {rule!r}")
    best: dict[str, float] = {}
    for c, s in zip(candidates, scores):
        v = float(s)
        if not math.isfinite(v):
            raise MetricInputError(f"rank_candidates: score of {c!r} is not finite ({s!r})")
        best.setdefault(c, v)
    tset = set(targets) if rule == "pessimistic" else set()
    return sorted(best, key=lambda c: (-best[c], c in tset, _tie_key(seed, c)))


def count_all_tied(score_lists: Iterable[Sequence[float]]) -> int:
    """How many samples have two or more candidates that all share one score.

    On such a sample the ranking carries no information: its metrics reflect the tie rule only.
    """
    return sum(1 for s in score_lists if len(s) > 1 and len({float(x) for x in s}) == 1)


def hit_at_k(ranked: Sequence[Sequence[str]], targets: Sequence[Iterable[str] | str], k: int) -> float:
    """Share of samples with at least one target among the first ``k`` ranked items.

    Args:
        ranked: Item ids best first, one list per sample.
        targets: The relevant item id(s) of each sample.
        k: Cut-off.

    Raises:
        MetricInputError: Lengths differ, no samples, a sample without target, or ``k <= 0``.
    """
    rows = _ranking_inputs(ranked, targets, k, "hit_at_k")
    return sum(any(x in t for x in r) for r, t in rows) / len(rows)


def mrr_at_k(
    ranked: Sequence[Sequence[str]], targets: Sequence[Iterable[str] | str], k: int | None = None
) -> float:
    """Mean reciprocal rank of the first target, 0 when it is not within the first ``k``.

    ``k=None`` looks at the whole ranking.
    """
    rows = _ranking_inputs(ranked, targets, k, "mrr_at_k")
    total = 0.0
    for r, t in rows:
        rank = next((i for i, x in enumerate(r, start=1) if x in t), None)
        total += 1.0 / rank if rank else 0.0
    return total / len(rows)


def ndcg_at_k(ranked: Sequence[Sequence[str]], targets: Sequence[Iterable[str] | str], k: int) -> float:
    r"""Mean NDCG@k with binary relevance.

    :math:`\mathrm{DCG@k} = \sum_{i=1}^{k} rel_i / \log_2(i + 1)`, divided by the DCG of the
    ideal ranking, which puts ``min(|targets|, k)`` relevant items first.
    """
    rows = _ranking_inputs(ranked, targets, k, "ndcg_at_k")
    total = 0.0
    for r, t in rows:
        dcg = sum(1.0 / math.log2(i + 1) for i, x in enumerate(r, start=1) if x in t)
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(t), k) + 1))
        total += dcg / ideal
    return total / len(rows)


_CJK_CLASS = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
)
_TOKEN = re.compile(rf"[{_CJK_CLASS}]|[\U00020000-\U0003134f]|[^\W_{_CJK_CLASS}]+|[^\w\s]", re.UNICODE)


def text_tokens(text: str) -> list[str]:
    """Split text for Distinct-n (and, with the same rule, what sacrebleu's ``zh`` tokenizer does).

    Each CJK character (also right after letters or digits: ``"30ml装"`` is ``30ml`` + ``装``),
    each run of non-CJK letters/digits and each punctuation mark is one token; tokens are
    lower-cased. This is the character-level segmentation used for Chinese BLEU/Distinct.

    Example:
        ``text_tokens("Hi, 面膜 x2")`` gives ``["hi", ",", "面", "膜", "x2"]``.
    """
    return [t.lower() for t in _TOKEN.findall(text)]


def distinct_n(texts: Sequence[str], n: int, tokenizer: Callable[[str], list[str]] = text_tokens) -> float:
    """Distinct-n: distinct n-grams over all n-grams of all ``texts`` (corpus level).

    Returns 0.0 when the texts hold no n-gram.

    Raises:
        MetricInputError: ``n < 1``.
    """
    if n < 1:
        raise MetricInputError(f"distinct_n: n must be >= 1, got {n}")
    grams: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        toks = tokenizer(text)
        grams.update(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


def char_tokens(text: str) -> list[str]:
    """Every character but white space is one token (the authors' Chinese BLEU tokens)."""
    return [ch for ch in text if not ch.isspace()]


def sentence_bleu(
    hypotheses: Sequence[str],
    references: Sequence[str],
    n: int = 1,
    *,
    tokenizer: Callable[[str], list[str]] = text_tokens,
) -> float:
    """The authors' BLEU-n: NLTK sentence BLEU with all weight on n-grams of order ``n``, averaged.

    For each pair, ``BP * p_n`` (brevity penalty times the modified precision of ``n``-grams
    alone, not the geometric mean over orders 1..n; no smoothing, so a hypothesis without a
    matching ``n``-gram scores 0), then the mean over pairs. This is ``gen_evaluate`` of the
    authors' released metric code (LLM-CRS, ``metrics/gen.py``) and CRSLab's ``bleu@k``,
    behind the paper's GPT-2/Transformer/KBRD/NTRD rows; :func:`bleu` is the corpus-level,
    cumulative BLEU of sacrebleu, a different number.

    Args:
        hypotheses: Generated texts.
        references: One reference per hypothesis.
        n: n-gram order, 1..4.
        tokenizer: Text to tokens: :func:`char_tokens` for Chinese (what the authors do),
            :func:`text_tokens` (default) otherwise.

    Raises:
        MetricInputError: Lengths differ, no samples, or ``n`` outside 1..4.
    """
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    _check_lengths(references, hypotheses, "sentence_bleu")
    if not hypotheses:
        raise MetricInputError("sentence_bleu: no samples")
    if not 1 <= n <= 4:
        raise MetricInputError(f"sentence_bleu: n must be in 1..4, got {n}")
    weights = tuple(1.0 if i == n - 1 else 0.0 for i in range(4))
    total = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on every zero n-gram count
        for hyp, ref in zip(hypotheses, references):
            total += float(nltk_sentence_bleu([tokenizer(str(ref))], tokenizer(str(hyp)), weights=weights))
    return total / len(hypotheses)


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    n: int = 1,
    *,
    tokenize: str = "13a",
) -> float:
    """Corpus BLEU-n in [0, 1] through sacrebleu.

    Brevity penalty times the geometric mean of the modified 1..n-gram precisions (cumulative
    BLEU-n, no smoothing).

    Args:
        hypotheses: Generated texts.
        references: One reference per hypothesis, or a list of references per hypothesis (all
            lists the same length).
        n: Highest n-gram order (1 for BLEU-1, 2 for BLEU-2).
        tokenize: sacrebleu tokenizer: ``"13a"`` for English, ``"zh"`` for Chinese (one token
            per character), ``"char"``, ``"none"``...

    Raises:
        MetricInputError: Lengths differ, no samples, or ``n`` outside 1..4.
    """
    from sacrebleu.metrics import BLEU

    _check_lengths(references, hypotheses, "bleu")
    if not hypotheses:
        raise MetricInputError("bleu: no samples")
    if not 1 <= n <= 4:
        raise MetricInputError(f"bleu: n must be in 1..4, got {n}")
    if all(isinstance(r, str) for r in references):
        ref_streams = [[str(r) for r in references]]
    else:
        lengths = {len(r) for r in references}
        if len(lengths) != 1:
            raise MetricInputError("bleu: every hypothesis needs the same number of references")
        ref_streams = [[r[j] for r in references] for j in range(lengths.pop())]  # type: ignore[index]
    metric = BLEU(max_ngram_order=n, tokenize=tokenize)
    return float(metric.corpus_score(list(hypotheses), ref_streams).score) / 100.0


def _paired(x: Sequence[float], y: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    _check_lengths(x, y, what)
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 1 or len(a) < 2:
        raise MetricInputError(f"{what}: need two 1-d sequences of at least 2 values")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise MetricInputError(f"{what}: values must be finite")
    return a, b


def _correlation(fn: Callable[..., object], a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        logger.warning("%s: one input is constant; the correlation is undefined (nan)", what)
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fn(a, b)
    return float(res.statistic), float(res.pvalue)  # type: ignore[attr-defined]


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Pearson correlation and its two-sided p-value (scipy); ``(nan, nan)`` for a constant input.

    Raises:
        MetricInputError: Lengths differ, fewer than 2 values, or non-finite values.
    """
    from scipy import stats

    a, b = _paired(x, y, "pearson")
    return _correlation(stats.pearsonr, a, b, "pearson")


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman rank correlation and its p-value.

    Ties get average ranks; a constant input gives ``(nan, nan)``.

    Raises:
        MetricInputError: Lengths differ, fewer than 2 values, or non-finite values.
    """
    from scipy import stats

    a, b = _paired(x, y, "spearman")
    return _correlation(stats.spearmanr, a, b, "spearman")
