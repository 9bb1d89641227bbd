"""Task 3, user needs-based recommendation: rank candidate items.

:class:`BiEncoderRanker` is the dense BERT-style ranker: one encoder embeds the query (the
elicited needs plus the knowledge of the user's most recent behaviour items) and each candidate
item (its knowledge tuples); items are ranked by cosine similarity. Training minimises the
softmax cross-entropy of the recommended item against negatives sampled from the candidate
list, with a temperature. :class:`AttributeMatchRanker` is the baseline: it counts how many
needs an item's knowledge satisfies, adds a bonus for items the user interacted with and a small
popularity prior from the behaviour log; with the match and history weights at zero it is a
pure popularity ranker.

Nothing from after the predicted turn is used: an example's history holds only behaviours
before ``example.time`` (see :func:`~zjulab.crs.samples.build_recommendation`) and popularity
counts only behaviours before it. Ties are broken by :func:`~zjulab.crs.metrics.rank_candidates`
(``rank`` uses the seeded order; ``evaluate`` is pessimistic by default and reports how many
examples were all-tied), never by the order of the candidate list.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from zjulab.common.encoders import pool_hidden
from zjulab.crs.backbone import load_backbone
from zjulab.crs.checkpoint import read_checkpoint, save_checkpoint
from zjulab.crs.config import RankerConfig
from zjulab.crs.dialogue import Behaviour, Item, canonical_time, latest_time
from zjulab.crs.errors import NotTrainedError
from zjulab.crs.metrics import TieRule, rank_candidates
from zjulab.crs.samples import RecommendationExample
from zjulab.crs.task_scores import recommendation_scores
from zjulab.crs.training import TrainHistory, module_device, train_loop

__all__ = ["AttributeMatchRanker", "BiEncoderRanker", "CandidateRanker", "item_text", "query_text"]

logger = logging.getLogger(__name__)


def item_text(item_id: str, items: Mapping[str, Item]) -> str:
    """An item's knowledge as text (its id when the item is unknown)."""
    item = items.get(item_id)
    return item.text() if item is not None and item.knowledge else f"item {item_id}"


def query_text(example: RecommendationExample, items: Mapping[str, Item], max_history: int = 3) -> str:
    """The ranker's query: category, needs, and the knowledge of recent behaviour items."""
    needs = "; ".join(f"{k}: {v}" for k, v in example.needs) or "none"
    text = f"category: {example.category}\nneeds: {needs}"
    recent = list(dict.fromkeys(reversed(example.history)))[:max_history] if max_history else []
    if recent:
        text += "\nviewed: " + " | ".join(item_text(i, items) for i in recent)
    return text


def _rank_all(
    examples: Sequence[RecommendationExample], scores: Sequence[Sequence[float]], rule: TieRule, seed: int
) -> list[list[str]]:
    return [
        rank_candidates(e.candidates, sc, targets=e.targets, rule=rule, seed=seed)
        for e, sc in zip(examples, scores)
    ]


class CandidateRanker:
    """What every task-3 ranker shares: ``rank`` and ``evaluate`` from its ``scores``.

    A subclass provides ``scores(examples)`` (each example's candidate scores, in candidate
    order) and ``tie_seed``; ties follow :func:`~zjulab.crs.metrics.rank_candidates`.
    """

    tie_seed: int

    def scores(self, examples: Sequence[RecommendationExample]) -> list[list[float]]:
        """Each example's candidate scores, in candidate order (the subclass's ranking)."""
        raise NotImplementedError

    def rank(self, examples: Sequence[RecommendationExample]) -> list[list[str]]:
        """Each example's candidates, best first (ties in the seeded order)."""
        return _rank_all(examples, self.scores(examples), "seeded", self.tie_seed)

    def evaluate(
        self, examples: Sequence[RecommendationExample], *, tie_rule: TieRule = "pessimistic"
    ) -> dict[str, float]:
        """Hit/NDCG/MRR at 10 and 50 and the all-tied count on ``examples``."""
        sc = self.scores(examples)
        return recommendation_scores(examples, _rank_all(examples, sc, tie_rule, self.tie_seed), scores=sc)


class _Tower(nn.Module):
    def __init__(self, encoder: nn.Module, pooling: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(pool_hidden(h.float(), attention_mask, self.pooling), dim=-1)  # type: ignore[arg-type]


class BiEncoderRanker(CandidateRanker):
    """Trainable dense bi-encoder ranker (shared encoder for queries and items).

    Args:
        items: Item knowledge by id.
        config: Settings.
        model: A loaded encoder (trained in place) instead of ``config.model_name_or_path``.
        tokenizer: Its tokenizer.
    """

    task = "recommendation"

    def __init__(
        self,
        items: Mapping[str, Item],
        config: RankerConfig | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
    ) -> None:
        self.items = items
        self.config = config or RankerConfig()
        self._model_src = model if model is not None else self.config.model_name_or_path
        self._tok_src = tokenizer
        self.net: _Tower | None = None
        self.tokenizer: Any = None

    def _ensure(self) -> _Tower:
        if self.net is None:
            encoder, self.tokenizer = load_backbone(
                self._model_src, self._tok_src, device=self.config.device, dtype=self.config.dtype
            )
            self.net = _Tower(encoder, self.config.pooling).to(module_device(encoder))
        return self.net

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        net = self._ensure()
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        dev = module_device(net)
        return net(enc["input_ids"].to(dev), enc["attention_mask"].to(dev))

    def fit(self, examples: Sequence[RecommendationExample]) -> TrainHistory:
        """Train with sampled-softmax cross-entropy over the candidates."""
        net = self._ensure()
        cfg = self.config
        rng = random.Random(cfg.seed)

        def loss_fn(batch: list[RecommendationExample]) -> torch.Tensor:
            groups = []
            for e in batch:
                negs = [c for c in e.candidates if c not in e.targets]
                negs = rng.sample(negs, min(cfg.num_negatives, len(negs)))
                negs += [negs[-1] if negs else e.targets[0]] * (cfg.num_negatives - len(negs))
                groups.append([e.targets[0], *negs])
            q = self._embed([query_text(e, self.items, cfg.max_history) for e in batch])
            d = self._embed([item_text(i, self.items) for g in groups for i in g]).view(
                len(batch), -1, q.size(-1)
            )
            logits = torch.einsum("bh,bnh->bn", q, d) / cfg.temperature
            return nn.functional.cross_entropy(
                logits, torch.zeros(len(batch), dtype=torch.long, device=q.device)
            )

        return train_loop(net, examples, loss_fn, cfg, desc="ranker")

    @torch.no_grad()
    def scores(self, examples: Sequence[RecommendationExample]) -> list[list[float]]:
        """Each example's candidate scores (cosine similarity), in candidate order."""
        net = self._ensure()
        net.eval()
        bs = self.config.batch_size
        ids = list(dict.fromkeys(c for e in examples for c in e.candidates))
        vecs = [
            self._embed([item_text(i, self.items) for i in ids[j : j + bs]]) for j in range(0, len(ids), bs)
        ]
        table = dict(zip(ids, torch.cat(vecs))) if vecs else {}
        out: list[list[float]] = []
        for j in range(0, len(examples), bs):
            chunk = examples[j : j + bs]
            qs = self._embed([query_text(e, self.items, self.config.max_history) for e in chunk])
            for e, q in zip(chunk, qs):
                if not e.candidates:
                    out.append([])
                    continue
                out.append((torch.stack([table[c] for c in e.candidates]) @ q).tolist())
        return out

    @property
    def tie_seed(self) -> int:
        """Seed of the tie order."""
        return self.config.seed

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint directory (the item table is not saved)."""
        if self.net is None:
            raise NotTrainedError("nothing to save: fit() first")
        save_checkpoint(
            path, task=self.task, config=self.config, backbone=self.net.encoder, tokenizer=self.tokenizer
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], items: Mapping[str, Item], *, device: str | None = None
    ) -> BiEncoderRanker:
        """Load a checkpoint written by :meth:`save`."""
        cfg_dict, _, backbone, _ = read_checkpoint(path, cls.task)
        if device is not None:
            cfg_dict["device"] = device
        obj = cls(items, RankerConfig(**cfg_dict), model=str(backbone), tokenizer=str(backbone))
        obj._ensure().eval()
        return obj


class AttributeMatchRanker(CandidateRanker):
    """Baseline ranker: needs matched by the item's knowledge, behaviour history, popularity.

    ``score = match_weight * matched_needs + history_weight * [item in history]
    + popularity_weight * log(1 + count) / log(1 + max_count)``, where ``count`` is the number of
    behaviours on the item strictly before ``example.time`` and ``max_count`` the largest such
    count among the example's candidates. Ties follow :func:`~zjulab.crs.metrics.rank_candidates`.

    Args:
        items: Item knowledge by id.
        behaviours: Behaviour log (for popularity).
        match_weight: Weight of each need whose value equals one of the item's values.
        history_weight: Bonus for items the user interacted with.
        popularity_weight: Weight of the normalised log popularity.
        seed: Seed of the tie order.
    """

    task = "recommendation"

    def __init__(
        self,
        items: Mapping[str, Item],
        behaviours: Sequence[Behaviour] = (),
        *,
        match_weight: float = 1.0,
        history_weight: float = 0.5,
        popularity_weight: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.items = items
        self.match_weight = match_weight
        self.history_weight = history_weight
        self.popularity_weight = popularity_weight
        self.seed = seed
        times: dict[str, list[str]] = defaultdict(list)
        for b in behaviours:
            # a date alone counts as its day's last moment: never before a turn of that day
            times[b.item_id].append(latest_time(b.time, f"behaviour of user {b.user_id} on item {b.item_id}"))
        self._times = {k: sorted(v) for k, v in times.items()}

    def count_before(self, item_id: str, time: str) -> int:
        """Behaviours on ``item_id`` strictly before ``time`` (none when ``time`` is ``""``).

        Times are compared as times (:func:`~zjulab.crs.dialogue.canonical_time`), not as text.
        """
        when = canonical_time(time, "recommendation example time")
        if not when:
            return 0
        return bisect.bisect_left(self._times.get(item_id, []), when)

    @classmethod
    def popularity(cls, items: Mapping[str, Item], behaviours: Sequence[Behaviour]) -> AttributeMatchRanker:
        """A pure popularity ranker."""
        return cls(items, behaviours, match_weight=0.0, history_weight=0.0, popularity_weight=1.0)

    def fit(self, examples: Sequence[RecommendationExample]) -> AttributeMatchRanker:
        """Nothing to learn; returns ``self``."""
        return self

    def score(self, example: RecommendationExample, item_id: str, *, norm: float | None = None) -> float:
        """The baseline score of one candidate.

        ``norm`` is ``log(1 + max_count)``, computed from the example's candidates when omitted.
        """
        if norm is None:
            norm = self._norm(example)
        item = self.items.get(item_id)
        values = {v.strip().lower() for _, v in item.knowledge} if item else set()
        matched = sum(1 for _, v in example.needs if v.strip().lower() in values)
        seen = 1.0 if item_id in example.history else 0.0
        pop = math.log1p(self.count_before(item_id, example.time)) / norm
        return self.match_weight * matched + self.history_weight * seen + self.popularity_weight * pop

    def _norm(self, example: RecommendationExample) -> float:
        top = max((self.count_before(c, example.time) for c in example.candidates), default=0)
        return math.log1p(top) or 1.0

    def scores(self, examples: Sequence[RecommendationExample]) -> list[list[float]]:
        """Each example's candidate scores, in candidate order."""
        out = []
        for e in examples:
            norm = self._norm(e)
            out.append([self.score(e, c, norm=norm) for c in e.candidates])
        return out

    @property
    def tie_seed(self) -> int:
        """Seed of the tie order."""
        return self.seed
