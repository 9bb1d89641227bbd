"""Task 5, pre-sales dialogue evaluation: predict a response's human quality score.

:class:`QualityRegressor` encodes ``(context, response)`` as a sentence pair and regresses the
score with a linear head on the pooled output (mean-squared error on standardised scores), in
the spirit of the paper's DEB baseline. :class:`Ruber` is RUBER: a referenced score (max-min
pooled word embeddings of response and reference) and an unreferenced network trained by
negative sampling, normalised and combined. :class:`RuberScorer` is an untrained stand-in: the
cosine between the embeddings of the context and the response (no training, no reference).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from zjulab.common.batching import padding_side
from zjulab.common.protocols import TextEncoder
from zjulab.crs.backbone import EncoderHead, load_backbone
from zjulab.crs.config import QualityConfig
from zjulab.crs.encoder_model import EncoderModel
from zjulab.crs.errors import NotTrainedError
from zjulab.crs.samples import EvaluationExample, render_context
from zjulab.crs.task_scores import evaluation_scores
from zjulab.crs.training import TrainHistory, module_device, seeded_init, train_loop

__all__ = ["QualityRegressor", "Ruber", "RuberScorer"]

logger = logging.getLogger(__name__)


class QualityRegressor(EncoderModel):
    """Trainable quality regressor (encoder on the context/response pair + linear head).

    Args:
        config: Settings.
        model: A loaded encoder (trained in place) instead of ``config.model_name_or_path``.
        tokenizer: Its tokenizer.
    """

    task = "evaluation"
    config_class = QualityConfig

    def __init__(
        self, config: QualityConfig | None = None, *, model: Any = None, tokenizer: Any = None
    ) -> None:
        super().__init__(config, model=model, tokenizer=tokenizer)
        self.config: QualityConfig
        self.net: EncoderHead | None
        self.mean = 0.0
        self.std = 1.0

    def _meta(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def _restore(self, meta: dict[str, Any]) -> None:
        self._build()
        self.mean, self.std = float(meta["mean"]), float(meta["std"])

    def _build(self) -> EncoderHead:
        if self.net is None:
            cfg = self.config
            encoder, self.tokenizer = load_backbone(
                self._model_src, self._tok_src, device=cfg.device, dtype=cfg.dtype
            )
            with seeded_init(cfg.seed):
                net = EncoderHead(encoder, 1, cfg.pooling)
            self.net = net.to(module_device(encoder))
        return self.net

    def _encode(self, examples: Sequence[EvaluationExample]) -> dict[str, torch.Tensor]:
        net = self._build()
        with padding_side(self.tokenizer, None, truncation="left"):  # drop the oldest context first
            enc = self.tokenizer(
                [render_context(e.context, self.config.max_turns) or "-" for e in examples],
                [e.response for e in examples],
                padding=True,
                truncation="longest_first",  # the longer side (usually the context) loses tokens first
                max_length=self.config.max_length,
                return_tensors="pt",
            )
        dev = module_device(net)
        out = {"input_ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)}
        if "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"].to(dev)
        return out

    def fit(self, examples: Sequence[EvaluationExample]) -> TrainHistory:
        """Train on standardised scores with mean-squared error."""
        net = self._build()
        scores = [e.score for e in examples]
        self.mean = statistics.fmean(scores) if scores else 0.0
        self.std = statistics.pstdev(scores) if len(scores) > 1 else 1.0
        self.std = self.std or 1.0

        def loss_fn(batch: list[EvaluationExample]) -> torch.Tensor:
            pred = net(**self._encode(batch)).squeeze(-1)
            target = torch.tensor([(e.score - self.mean) / self.std for e in batch], device=pred.device)
            return nn.functional.mse_loss(pred.float(), target)

        return train_loop(
            net, examples, loss_fn, self.config, head_params=list(net.head.parameters()), desc="quality"
        )

    @torch.no_grad()
    def predict(self, examples: Sequence[EvaluationExample]) -> list[float]:
        """Predicted scores on the original scale."""
        if self.net is None:
            raise NotTrainedError("QualityRegressor.predict() called before fit() or load()")
        self.net.eval()
        out: list[float] = []
        for i in range(0, len(examples), self.config.batch_size):
            pred = (
                self.net(**self._encode(examples[i : i + self.config.batch_size])).squeeze(-1).float().cpu()
            )
            out += (pred * self.std + self.mean).tolist()
        return out

    def evaluate(self, examples: Sequence[EvaluationExample]) -> dict[str, float]:
        """Pearson/Spearman against the human scores."""
        return evaluation_scores(examples, self.predict(examples))


class RuberScorer:
    """Baseline: cosine similarity of context and response embeddings (unreferenced RUBER).

    Args:
        encoder: Any :class:`~zjulab.common.protocols.TextEncoder`; defaults to a 512-d
            :class:`~zjulab.common.testing.HashingEncoder`.
        max_turns: Context turns embedded.
    """

    task = "evaluation"

    def __init__(self, encoder: TextEncoder | None = None, max_turns: int = 4) -> None:
        if encoder is None:
            from zjulab.common.testing import HashingEncoder

            encoder = HashingEncoder(512)
        self.encoder = encoder
        self.max_turns = max_turns

    def fit(self, examples: Sequence[EvaluationExample]) -> RuberScorer:
        """Nothing to learn; returns ``self``."""
        return self

    def predict(self, examples: Sequence[EvaluationExample]) -> list[float]:
        """Cosine of each context/response pair."""
        if not examples:
            return []
        ctx = self.encoder.encode([render_context(e.context, self.max_turns) for e in examples])
        rsp = self.encoder.encode([e.response for e in examples])
        return [float(x) for x in np.sum(ctx * rsp, axis=1)]

    def evaluate(self, examples: Sequence[EvaluationExample]) -> dict[str, float]:
        """Pearson/Spearman against the human scores."""
        return evaluation_scores(examples, self.predict(examples))


class _Unreferenced(nn.Module):
    """RUBER's unreferenced scorer over frozen sentence embeddings.

    An MLP on ``[c; r; c * r]`` with a sigmoid output.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3 * dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(torch.cat([c, r, c * r], dim=-1))).squeeze(-1)


class Ruber:
    """RUBER (Tao et al., 2018): referenced + trained unreferenced response scores.

    * **Referenced**: as in RUBER, the cosine of the response's and the reference's
      max-min pooled word embeddings (each text's word vectors reduced to their element-wise
      maximum and minimum, concatenated), mapped to ``[0, 1]``; used when an example has a
      ``reference`` (the gold response). Words are :func:`~zjulab.crs.metrics.text_tokens`
      (one per CJK character, one per other word), each embedded alone by ``encoder``.
      ``referenced_pooling="sentence"`` uses the cosine of whole-sentence embeddings instead
      (the BERT-RUBER variant).
    * **Unreferenced**: a small network on the context and response embeddings trained, as in
      RUBER, by negative sampling: the true response of a training context must outscore a
      response drawn from another example by ``margin`` (hinge loss). No human score is used.

    The two are min-max normalised over the scored batch and combined by ``combine``
    (``"min"``, the default of the RUBER-and-Bert-RUBER reference code's hybrid score;
    ``"mean"`` arithmetic, ``"max"``, ``"gmean"`` geometric: RUBER's other heuristics);
    without references only the unreferenced score is returned. Scores are therefore relative
    to the batch scored together (one example alone always scores 0.5): score a whole test set
    in one call. In a batch where only some examples have a reference, those without one get
    their normalised unreferenced score alone (a warning says so). Embeddings come from
    ``encoder`` (frozen); the default is the hashing test-double encoder, which hashes
    white-space-delimited words: on Chinese text without spaces a whole phrase is one token and
    it carries next to no signal, so for U-NEED pass a Chinese encoder (the CLI uses
    ``bert-base-chinese`` there).

    Args:
        encoder: A :class:`~zjulab.common.protocols.TextEncoder`.
        max_turns: Context turns embedded.
        steps: Training steps of the unreferenced network.
        batch_size: Pairs per step.
        learning_rate: Adam learning rate.
        margin: Hinge margin.
        hidden: Hidden width of the network.
        combine: How the two scores are combined.
        seed: Seed of negative sampling and initialisation.
        referenced_pooling: ``"max-min"`` (RUBER's) or ``"sentence"``.
    """

    task = "evaluation"

    def __init__(
        self,
        encoder: TextEncoder | None = None,
        *,
        max_turns: int = 4,
        steps: int = 200,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        margin: float = 0.5,
        hidden: int = 128,
        combine: str = "min",  # the reference code's hybrid default
        seed: int = 0,
        referenced_pooling: str = "max-min",
    ) -> None:
        from zjulab.crs.errors import CrsConfigError

        if combine not in ("mean", "min", "max", "gmean"):
            raise CrsConfigError(f"combine must be one of mean, min, max, gmean; got {combine!r}")
        if referenced_pooling not in ("max-min", "sentence"):
            raise CrsConfigError(
                f"referenced_pooling must be 'max-min' or 'sentence'; got {referenced_pooling!r}"
            )
        self.referenced_pooling = referenced_pooling
        if steps < 1 or batch_size < 2 or margin <= 0:
            raise CrsConfigError("steps >= 1, batch_size >= 2 and margin > 0 are required")
        if encoder is None:
            from zjulab.common.testing import HashingEncoder

            encoder = HashingEncoder(512)
        self.encoder = encoder
        self.max_turns = max_turns
        self.steps, self.batch_size, self.learning_rate = steps, batch_size, learning_rate
        self.margin, self.hidden, self.combine, self.seed = margin, hidden, combine, seed
        self.net: _Unreferenced | None = None
        self.train_losses: list[float] = []

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.encoder.encode(list(texts)), dtype=np.float32))

    def fit(self, examples: Sequence[EvaluationExample]) -> Ruber:
        """Train the unreferenced network on the examples' (context, response) pairs."""
        from zjulab.crs.errors import DataFormatError

        if len(examples) < 2:
            raise DataFormatError("Ruber.fit needs at least 2 examples (negatives come from other examples)")
        # a negative is another example's response; one equal to the positive (up to case and
        # spacing) scores the same and teaches nothing, so it is drawn again among the examples
        # with another response, and a set with one response is refused
        groups: dict[str, int] = {}
        resp = torch.tensor(
            [groups.setdefault(" ".join(e.response.split()).casefold(), len(groups)) for e in examples]
        )
        if len(groups) < 2:
            shown = (
                examples[0].response if len(examples[0].response) <= 80 else examples[0].response[:77] + "..."
            )
            raise DataFormatError(
                f"Ruber.fit needs at least 2 different responses; all {len(examples)} examples have "
                f"{shown!r}, so every negative would equal its positive"
            )
        # examples ordered by response group: group g holds order[start[g] : start[g] + size[g]]
        order = torch.argsort(resp, stable=True)
        size = torch.bincount(resp)
        start = torch.cumsum(size, 0) - size
        gen = torch.Generator().manual_seed(self.seed)
        c = self._embed([render_context(e.context, self.max_turns) for e in examples])
        r = self._embed([e.response for e in examples])
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global RNG untouched
            torch.manual_seed(self.seed)
            self.net = _Unreferenced(c.size(-1), self.hidden)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.learning_rate)
        n = len(examples)
        self.train_losses = []
        for _ in range(self.steps):
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=gen)
            neg = (idx + torch.randint(1, n, idx.shape, generator=gen)) % n  # another example
            clash = resp[neg] == resp[idx]
            if clash.any():
                # uniform over the examples outside the positive's group: the k-th of them
                g = resp[idx[clash]]
                k = (torch.rand(int(clash.sum()), generator=gen, dtype=torch.float64) * (n - size[g])).long()
                neg[clash] = order[torch.where(k < start[g], k, k + size[g])]
            pos_s, neg_s = self.net(c[idx], r[idx]), self.net(c[idx], r[neg])
            loss = torch.clamp(self.margin - pos_s + neg_s, min=0).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.train_losses.append(float(loss.detach()))
        return self

    @torch.no_grad()
    def unreferenced(self, examples: Sequence[EvaluationExample]) -> list[float]:
        """The trained network's score of each (context, response) pair, in ``[0, 1]``."""
        if self.net is None:
            raise NotTrainedError("Ruber.unreferenced() called before fit()")
        c = self._embed([render_context(e.context, self.max_turns) for e in examples])
        r = self._embed([e.response for e in examples])
        return self.net(c, r).tolist()

    def referenced(self, examples: Sequence[EvaluationExample]) -> list[float | None]:
        """Cosine of response and reference mapped to ``[0, 1]`` (``None`` without a reference)."""
        # a blank reference is no reference (a file may hold an empty or white-space cell)
        has = [i for i, e in enumerate(examples) if e.reference and e.reference.strip()]
        out: list[float | None] = [None] * len(examples)
        if not has:
            return out
        if self.referenced_pooling == "sentence":
            a = self._embed([examples[i].response for i in has])
            b = self._embed([examples[i].reference for i in has])
        else:
            a = self._max_min([examples[i].response for i in has])
            b = self._max_min([examples[i].reference for i in has])
        cos = nn.functional.cosine_similarity(a, b, dim=-1)  # 0 when a text has no word
        for i, v in zip(has, cos.tolist()):
            out[i] = (v + 1.0) / 2.0
        return out

    def _max_min(self, texts: Sequence[str]) -> torch.Tensor:
        """RUBER's sentence vectors: ``[max; min]`` over each text's word embeddings."""
        from zjulab.crs.metrics import text_tokens

        words = [text_tokens(t) for t in texts]
        vocab = list(dict.fromkeys(w for ws in words for w in ws))
        dim = self.encoder.dim  # also the width of a batch without any word
        table = self._embed(vocab) if vocab else torch.zeros((0, dim))
        index = {w: j for j, w in enumerate(vocab)}
        rows = []
        for ws in words:
            if not ws:
                rows.append(torch.zeros(2 * dim))
                continue
            vecs = table[[index[w] for w in ws]]
            rows.append(torch.cat([vecs.max(0).values, vecs.min(0).values]))
        return torch.stack(rows)

    def predict(self, examples: Sequence[EvaluationExample]) -> list[float]:
        """The combined RUBER score of each example."""
        if not examples:
            return []
        un = np.asarray(self.unreferenced(examples))
        ref = self.referenced(examples)
        if all(x is None for x in ref):
            return un.tolist()

        def norm(x: np.ndarray) -> np.ndarray:
            span = float(x.max() - x.min())
            return (x - x.min()) / span if span > 0 else np.full_like(x, 0.5)

        u = norm(un)
        have = np.array([x is not None for x in ref])
        if not have.all():
            logger.warning(
                "RUBER: %d of %d examples have no reference and are scored by the unreferenced part alone",
                int((~have).sum()),
                len(ref),
            )
        rv = np.array([x if x is not None else 0.0 for x in ref])
        rn = u.copy()
        rn[have] = norm(rv[have])
        pair = np.stack([u, rn])
        if self.combine == "mean":
            comb = pair.mean(0)
        elif self.combine == "min":
            comb = pair.min(0)
        elif self.combine == "max":
            comb = pair.max(0)
        else:
            comb = np.sqrt(pair.prod(0))
        return comb.tolist()

    def evaluate(self, examples: Sequence[EvaluationExample]) -> dict[str, float]:
        """PCC/SCC/cosine against the human scores."""
        return evaluation_scores(examples, self.predict(examples))
