"""Task 5, pre-sales dialogue evaluation: predict a response's human quality score.

:class:`QualityRegressor` encodes ``(context, response)`` as a sentence pair and regresses the
score with a linear head on the pooled output (mean-squared error on standardised scores), in
the spirit of the paper's DEB baseline. :class:`RuberScorer` is the training-free baseline: the
unreferenced part of RUBER, the cosine between the embeddings of the context and the response
(the paper's ``Bert-RUBER`` row).
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
from zjulab.crs.training import TrainHistory, module_device, train_loop

__all__ = ["QualityRegressor", "RuberScorer"]

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
            self.net = EncoderHead(encoder, 1, cfg.pooling).to(module_device(encoder))
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
