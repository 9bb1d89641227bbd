"""Task 2, user needs elicitation: which attributes should the assistant ask about next.

:class:`AttributeClassifier` encodes the recent dialogue (most recent turns kept when the
input is too long) and the needs known so far, and predicts a multi-label set of attributes
with one sigmoid per attribute (the paper's ``DiaMultiClass`` set-up), trained with binary
cross-entropy. :class:`FrequencyElicitor` is the training-free baseline: per category, the
attributes assistants asked most often in training, skipping those the user already gave.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zjulab.common.batching import padding_side
from zjulab.crs.backbone import EncoderHead, load_backbone
from zjulab.crs.config import ElicitationConfig
from zjulab.crs.encoder_model import EncoderModel
from zjulab.crs.errors import NotTrainedError
from zjulab.crs.samples import ElicitationExample, render_context
from zjulab.crs.task_scores import elicitation_scores
from zjulab.crs.training import TrainHistory, module_device, seeded_init, train_loop

__all__ = ["AttributeClassifier", "FrequencyElicitor", "elicitation_text"]

logger = logging.getLogger(__name__)


def elicitation_text(example: ElicitationExample, max_turns: int = 6) -> str:
    """The classifier's input: category, known needs, then the recent turns."""
    known = "; ".join(f"{k}={v}" for k, v in example.known) or "none"
    return f"category: {example.category}\nknown: {known}\n{render_context(example.context, max_turns)}"


class AttributeClassifier(EncoderModel):
    """Trainable multi-label attribute classifier (encoder + pooled linear head + BCE).

    Args:
        config: Settings.
        model: A loaded encoder (trained in place) instead of ``config.model_name_or_path``.
        tokenizer: Its tokenizer.
    """

    task = "elicitation"
    config_class = ElicitationConfig

    def __init__(
        self, config: ElicitationConfig | None = None, *, model: Any = None, tokenizer: Any = None
    ) -> None:
        super().__init__(config, model=model, tokenizer=tokenizer)
        self.config: ElicitationConfig
        self.net: EncoderHead | None
        self.labels: list[str] = []

    def _meta(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def _restore(self, meta: dict[str, Any]) -> None:
        self._build(meta["labels"])

    def _build(self, labels: Sequence[str]) -> None:
        cfg = self.config
        encoder, self.tokenizer = load_backbone(
            self._model_src, self._tok_src, device=cfg.device, dtype=cfg.dtype
        )
        self.labels = list(labels)
        with seeded_init(cfg.seed):
            net = EncoderHead(encoder, len(self.labels), cfg.pooling)
        self.net = net.to(module_device(encoder))

    def _encode(self, examples: Sequence[ElicitationExample]) -> dict[str, torch.Tensor]:
        assert self.net is not None
        with padding_side(self.tokenizer, None, truncation="left"):  # keep the most recent turns
            enc = self.tokenizer(
                [elicitation_text(e, self.config.max_turns) for e in examples],
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
            )
        dev = module_device(self.net)
        return {"input_ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)}

    def fit(self, examples: Sequence[ElicitationExample]) -> TrainHistory:
        """Build the label set from ``examples`` and train with BCE."""
        self._build(sorted({t for e in examples for t in e.targets}))
        assert self.net is not None
        index = {t: i for i, t in enumerate(self.labels)}

        def loss_fn(batch: list[ElicitationExample]) -> torch.Tensor:
            assert self.net is not None
            logits = self.net(**self._encode(batch))
            target = torch.zeros_like(logits)
            for i, e in enumerate(batch):
                for t in e.targets:
                    target[i, index[t]] = 1.0
            return nn.functional.binary_cross_entropy_with_logits(logits, target)

        head = list(self.net.head.parameters())
        return train_loop(self.net, examples, loss_fn, self.config, head_params=head, desc="elicitation")

    @torch.no_grad()
    def predict_proba(self, examples: Sequence[ElicitationExample]) -> torch.Tensor:
        """Sigmoid probabilities ``[N, num_labels]`` (label order: :attr:`labels`)."""
        if self.net is None:
            raise NotTrainedError("AttributeClassifier used before fit() or load()")
        self.net.eval()
        parts = []
        for i in range(0, len(examples), self.config.batch_size):
            parts.append(
                torch.sigmoid(self.net(**self._encode(examples[i : i + self.config.batch_size])))
                .float()
                .cpu()
            )
        return torch.cat(parts) if parts else torch.zeros(0, len(self.labels))

    def predict(self, examples: Sequence[ElicitationExample]) -> list[list[str]]:
        """Attributes above ``threshold``, at least ``min_labels`` of them (most probable first)."""
        probs = self.predict_proba(examples)
        out = []
        for row in probs:
            order = torch.argsort(row, descending=True).tolist()
            chosen = [j for j in order if row[j] >= self.config.threshold]
            if len(chosen) < self.config.min_labels:
                chosen = order[: self.config.min_labels]
            out.append([self.labels[j] for j in chosen])
        return out

    def evaluate(self, examples: Sequence[ElicitationExample]) -> dict[str, float]:
        """Multi-label P/R/F1 on ``examples``."""
        return elicitation_scores(examples, self.predict(examples))


class FrequencyElicitor:
    """Baseline: ask the category's most frequently asked attributes not yet known.

    Args:
        k: Attributes predicted per question.
    """

    task = "elicitation"

    def __init__(self, k: int = 1) -> None:
        self.k = k
        self.order: dict[str, list[str]] = {}
        self.overall: list[str] = []

    def fit(self, examples: Sequence[ElicitationExample]) -> FrequencyElicitor:
        """Count how often each attribute is asked, per category (ties by attribute name)."""
        per: dict[str, Counter[str]] = defaultdict(Counter)
        total: Counter[str] = Counter()
        for e in examples:
            per[e.category].update(e.targets)
            total.update(e.targets)
        # most frequent first, equal counts by attribute name (never by file order)
        self.order = {c: sorted(cnt, key=lambda a, n=cnt: (-n[a], a)) for c, cnt in per.items()}
        self.overall = sorted(total, key=lambda a: (-total[a], a))
        return self

    def predict(self, examples: Sequence[ElicitationExample]) -> list[list[str]]:
        """The ``k`` most frequent attributes of the example's category not already known."""
        if not self.overall:
            raise NotTrainedError("FrequencyElicitor.predict() called before fit()")
        out = []
        for e in examples:
            known = {k for k, _ in e.known}
            ranked = self.order.get(e.category, self.overall)
            out.append([a for a in ranked if a not in known][: self.k] or ranked[: self.k])
        return out

    def evaluate(self, examples: Sequence[ElicitationExample]) -> dict[str, float]:
        """Multi-label P/R/F1 on ``examples``."""
        return elicitation_scores(examples, self.predict(examples))
