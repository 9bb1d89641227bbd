"""Hard-negative mining for encoder and reranker training (SkillRouter's 4/3/2/1 mix).

For each (query, positive skill) pair, negatives come from four sources in this order:
the encoder's top ranks (``n_dense``), BM25's top ranks (``n_bm25``), the positive's category
(``n_category``) and the whole pool at random (``n_random``). Every candidate that is a
labelled positive of the query, already chosen, or — with the false-negative filter — scored
above the positive by the current encoder is skipped, so each source takes its next best.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zjulab.common.errors import InputError, NotFoundError
from zjulab.common.protocols import TextEncoder
from zjulab.skillrouter.bm25 import BM25Index
from zjulab.skillrouter.config import MiningConfig
from zjulab.skillrouter.errors import EmptyPoolError
from zjulab.skillrouter.formatting import Fields, format_query, format_skill
from zjulab.skillrouter.skill import Skill, validate_pool

__all__ = ["TrainingExample", "mine_hard_negatives"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingExample:
    """One training query with its positive skill and mined negatives.

    Args:
        query: The task text.
        positive: The relevant skill.
        negatives: Mined negatives, in source order.
        sources: The source of each negative: ``"dense"``, ``"bm25"``, ``"category"`` or ``"random"``.
        filtered: Candidates dropped by the false-negative filter.
        excluded_relevant: Graded-relevant skills (any grade > 0, other positives included)
            that a source offered and that were kept out of the negatives.
        relevant_ids: Every skill id graded relevant for the query; the encoder trainer's
            batch sampler keeps them out of this example's in-batch negatives.
    """

    query: str
    positive: Skill
    negatives: list[Skill]
    sources: list[str] = field(default_factory=list)
    filtered: int = 0
    excluded_relevant: int = 0
    relevant_ids: frozenset[str] = frozenset()


def _group_pairs(pairs: Sequence[Sequence[Any]]) -> list[tuple[str, list[str], set[str]]]:
    out = []
    for i, item in enumerate(pairs):
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise InputError(
                f"pair {i} must be (query, positive id(s)) or (query, positive id(s), relevant ids), got {item!r}"
            )
        q, pos = item[0], item[1]
        ids = [pos] if isinstance(pos, str) else list(pos)
        also = set() if len(item) == 2 else ({item[2]} if isinstance(item[2], str) else set(item[2]))
        if not isinstance(q, str) or not q.strip() or not ids:
            raise InputError(f"pair {i} needs a non-empty query and at least one positive id")
        out.append((q, ids, also | set(ids)))
    return out


def _take(
    candidates: Sequence[int] | np.ndarray,
    n: int,
    scores: np.ndarray,
    limit: float,
    skip: set[int],
    used: set[int],
    filtered: set[int],
    skipped: set[int],
) -> list[int]:
    """The first ``n`` candidates not in ``skip``/``used`` and scoring at most ``limit``.

    Chosen ones are added to ``used``; those above ``limit`` to ``filtered``; relevant ones
    (``skip``) a source offered to ``skipped``.
    """
    got: list[int] = []
    for c in candidates:
        c = int(c)
        if len(got) == n:
            break
        if c < 0:  # BM25 found fewer matches than asked
            continue
        if c in skip:
            skipped.add(c)
            continue
        if c in used:
            continue
        if scores[c] > limit:
            filtered.add(c)
            continue
        got.append(c)
        used.add(c)
    return got


def mine_hard_negatives(
    pairs: Sequence[Sequence[Any]],
    skills: Sequence[Skill],
    encoder: TextEncoder,
    config: MiningConfig | None = None,
    *,
    fields: Fields = "full",
    desc_max: int = 300,
    body_max: int = 2500,
    query_prompt: str = "",
) -> list[TrainingExample]:
    """Mine negatives for each (query, positive) pair.

    Args:
        pairs: ``(query, positive skill id)``, ``(query, [positive ids])`` or
            ``(query, [positive ids], [other graded-relevant ids])``; a query with several
            positives yields one example per positive. No skill graded relevant for the query
            (its positives and the third element, e.g. grade-1 partial matches) is ever one of
            its negatives.
        skills: The pool to mine from.
        encoder: The current encoder (dense source and false-negative filter).
        config: Counts per source and the filter switch.
        fields: Skill fields in the texts (as at index time).
        desc_max: Description characters in the texts.
        body_max: Body characters in the texts.
        query_prompt: Instruction put before queries for the encoder.

    Returns:
        One :class:`TrainingExample` per positive. A source that runs out of candidates
        contributes fewer negatives (logged).

    Raises:
        EmptyPoolError: No pairs.
        NotFoundError: A positive id is not in the pool.
    """
    cfg = config or MiningConfig()
    pool = validate_pool(skills)
    grouped = _group_pairs(pairs)
    if not grouped:
        raise EmptyPoolError("no (query, positive) pairs to mine negatives for")
    pos_of = {s.id: i for i, s in enumerate(pool)}
    for _, ids, _rel in grouped:
        for pid in ids:
            if pid not in pos_of:
                raise NotFoundError(f"positive skill id {pid!r} is not in the pool")
    texts = [format_skill(s, fields=fields, desc_max=desc_max, body_max=body_max) for s in pool]
    doc_emb = np.asarray(encoder.encode(texts), dtype=np.float32)
    q_emb = np.asarray(
        encoder.encode([format_query(q, prompt=query_prompt) for q, _, _ in grouped]), dtype=np.float32
    )
    sims = q_emb @ doc_emb.T
    depth = min(cfg.search_depth, len(pool))
    bm25_ids: np.ndarray | None = None
    if cfg.n_bm25:
        _, bm25_ids = BM25Index().build(texts).search([q for q, _, _ in grouped], depth)
    rng = np.random.default_rng(cfg.seed)
    out: list[TrainingExample] = []
    short = 0
    offered_relevant = 0
    for qi, (query, ids, rel) in enumerate(grouped):
        positives = {pos_of[p] for p in rel if p in pos_of}
        dense_order = np.argsort(-sims[qi], kind="stable")[:depth]
        for pid in ids:
            p = pos_of[pid]
            pos_score = sims[qi, p]
            used: set[int] = set()
            filtered: set[int] = set()
            skipped: set[int] = set()
            limit = pos_score if cfg.filter_false_negatives else np.inf

            def take(
                candidates: Sequence[int] | np.ndarray, n: int, _limit: float = limit, _qi: int = qi
            ) -> list[int]:
                return _take(candidates, n, sims[_qi], _limit, positives, used, filtered, skipped)  # noqa: B023

            chosen: list[tuple[int, str]] = []
            chosen += [(c, "dense") for c in take(dense_order, cfg.n_dense)]
            if bm25_ids is not None:
                chosen += [(c, "bm25") for c in take(bm25_ids[qi], cfg.n_bm25)]
            if cfg.n_category and pool[p].category:
                same = [i for i, s in enumerate(pool) if s.category == pool[p].category]
                chosen += [(c, "category") for c in take(rng.permutation(same), cfg.n_category)]
            if cfg.n_random:
                chosen += [(c, "random") for c in take(rng.permutation(len(pool)), cfg.n_random)]
            if len(chosen) < cfg.total:
                short += 1
            out.append(
                TrainingExample(
                    query=query,
                    positive=pool[p],
                    negatives=[pool[c] for c, _ in chosen],
                    sources=[s for _, s in chosen],
                    filtered=len(filtered),
                    excluded_relevant=len(skipped - {p}),
                    relevant_ids=frozenset(rel),
                )
            )
            offered_relevant += len(skipped - {p})
    logger.info(
        "mined %d examples; %d graded-relevant skills offered as negatives were excluded (0 remain)",
        len(out),
        offered_relevant,
    )
    if short:
        logger.info("%d of %d examples got fewer than %d negatives", short, len(out), cfg.total)
    return out
