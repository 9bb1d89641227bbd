"""Per-task metric bundles shared by baselines, trained models and LLM variants.

Each function takes the task's examples and one prediction per example and returns a flat
``{metric: value}`` dict, so every system of a task is scored by the same code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from zjulab.crs.errors import MetricInputError
from zjulab.crs.metrics import (
    bleu,
    char_tokens,
    count_all_tied,
    distinct_n,
    hit_at_k,
    mrr_at_k,
    multilabel_prf,
    ndcg_at_k,
    pair_prf,
    pearson,
    sentence_bleu,
    span_prf,
    spearman,
    text_tokens,
)
from zjulab.crs.samples import (
    ElicitationExample,
    EvaluationExample,
    GenerationExample,
    RecommendationExample,
    UnderstandingExample,
)

logger = logging.getLogger(__name__)

__all__ = [
    "elicitation_scores",
    "evaluation_scores",
    "generation_scores",
    "recommendation_scores",
    "understanding_scores",
]

Span = tuple[str, int, int]


def _valued(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if v.strip()]


def understanding_scores(
    examples: Sequence[UnderstandingExample],
    spans: Sequence[Sequence[Span]] | None = None,
    pairs: Sequence[Sequence[tuple[str, str]]] | None = None,
) -> dict[str, float]:
    """Task 1: exact-span P/R/F1 (when ``spans`` are given) and ``(key, value)`` pair P/R/F1.

    Pairs are compared only where the value is non-empty (value-less mentions have no span to
    tag). When only ``spans`` are given, pairs are read off the text.
    """
    if spans is None and pairs is None:
        raise MetricInputError("understanding_scores needs spans or pairs")
    out: dict[str, float] = {}
    if spans is not None:
        s = span_prf([e.spans for e in examples], spans)
        out.update(precision=s.precision, recall=s.recall, f1=s.f1)
        if pairs is None:
            pairs = [[(k, e.text[a:b]) for k, a, b in sp] for e, sp in zip(examples, spans)]
    assert pairs is not None
    p = pair_prf([_valued(e.pairs) for e in examples], [_valued(x) for x in pairs])
    out.update(pair_precision=p.precision, pair_recall=p.recall, pair_f1=p.f1)
    if spans is None:
        out.update(precision=p.precision, recall=p.recall, f1=p.f1)
    return out


def elicitation_scores(
    examples: Sequence[ElicitationExample], predicted: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Task 2: sample-averaged multi-label P/R/F1 (the paper's setting) and micro F1."""
    gold = [e.targets for e in examples]
    s = multilabel_prf(gold, predicted)
    m = multilabel_prf(gold, predicted, average="micro")
    return {"precision": s.precision, "recall": s.recall, "f1": s.f1, "micro_f1": m.f1}


REC_KS: tuple[int, ...] = (10, 50)
"""Cut-offs of the recommendation table (the paper reports Hit/NDCG/MRR at 10 and 50)."""


def recommendation_scores(
    examples: Sequence[RecommendationExample],
    ranked: Sequence[Sequence[str]],
    ks: Sequence[int] = REC_KS,
    *,
    scores: Sequence[Sequence[float]] | None = None,
) -> dict[str, float]:
    """Task 3: Hit@k, NDCG@k and MRR@k for each ``k`` in ``ks``.

    With ``scores`` (each example's candidate scores) the table also carries ``all_tied``: the
    number of examples whose candidates all scored the same, whose metrics therefore reflect
    only the tie rule.
    """
    targets = [e.targets for e in examples]
    out: dict[str, float] = {}
    if scores is not None:
        if len(scores) != len(examples):
            raise MetricInputError(
                f"recommendation_scores: {len(examples)} examples but {len(scores)} score lists"
            )
        out["all_tied"] = count_all_tied(scores)
    for k in ks:
        out[f"hit@{k}"] = hit_at_k(ranked, targets, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, targets, k)
        out[f"mrr@{k}"] = mrr_at_k(ranked, targets, k)
    return out


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def generation_scores(
    examples: Sequence[GenerationExample], responses: Sequence[str], *, tokenize: str | None = None
) -> dict[str, float]:
    """Task 4: the authors' BLEU-1..4, corpus BLEU-1..4 (sacrebleu) and Distinct-1..4.

    * ``bleu1``..``bleu4``: :func:`~zjulab.crs.metrics.sentence_bleu`, the definition of the
      authors' code and of the paper's table (sentence BLEU with all weight on order n, averaged
      over responses); on Chinese every character is a token (:func:`~zjulab.crs.metrics.char_tokens`,
      as the authors' ``list(text)``), otherwise :func:`~zjulab.crs.metrics.text_tokens`.
    * ``corpus_bleu1``..``corpus_bleu4``: sacrebleu's corpus BLEU, cumulative over orders
      1..n (``zh`` tokenizer for Chinese).
    * ``distinct1``..``distinct4``: distinct n-grams over all n-grams of all responses, with
      :func:`~zjulab.crs.metrics.text_tokens` (one token per CJK character, also right after
      letters or digits).

    Args:
        examples: Gold examples (their ``response`` is the reference).
        responses: Generated responses.
        tokenize: sacrebleu tokenizer of the corpus BLEU; ``None`` picks ``"zh"`` when any
            reference contains Chinese characters (U-NEED) and ``"13a"`` otherwise. Chinese
            references also switch the authors' BLEU to character tokens.
    """
    refs = [e.response for e in examples]
    chinese = any(_CJK.search(r) for r in refs)
    if tokenize is None:
        tokenize = "zh" if chinese else "13a"
    toks = char_tokens if chinese else text_tokens
    out = {f"bleu{n}": sentence_bleu(responses, refs, n, tokenizer=toks) for n in (1, 2, 3, 4)}
    out.update({f"corpus_bleu{n}": bleu(responses, refs, n, tokenize=tokenize) for n in (1, 2, 3, 4)})
    out.update({f"distinct{n}": distinct_n(responses, n) for n in (1, 2, 3, 4)})
    return out


def evaluation_scores(examples: Sequence[EvaluationExample], predicted: Sequence[float]) -> dict[str, float]:
    """Task 5: PCC, SCC and cosine against the human scores.

    Pearson and Spearman correlation (with their p-values) and the cosine similarity of the
    predicted and human score vectors, the paper's three task-5 metrics.
    """
    gold = [e.score for e in examples]
    for name, values in (("predicted", predicted), ("human", gold)):
        if len(values) > 1 and len(set(values)) == 1:
            logger.warning(
                "task 5: every %s score is %r on %d examples: the correlations are undefined (nan)",
                name,
                values[0],
                len(values),
            )
    r, rp = pearson(predicted, gold)
    rho, sp = spearman(predicted, gold)
    a, b = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cos = float(a @ b) / denom if denom > 0 else float("nan")
    return {"pearson": r, "pearson_p": rp, "spearman": rho, "spearman_p": sp, "cosine": cos}
