"""Training and evaluation of the relevance discriminator (BCE on response tokens only)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zjulab.rtt.config import DiscriminatorConfig
from zjulab.rtt.discriminator import RelevanceDiscriminator
from zjulab.rtt.errors import LabelAlignmentError
from zjulab.rtt.labels import RelevanceExample, token_labels

__all__ = ["DiscriminatorTrainer", "EncodedExample", "TokenScores", "encode_examples", "token_f1"]

logger = logging.getLogger(__name__)


@dataclass
class EncodedExample:
    """A relevance example tokenised for one discriminator.

    Attributes:
        input_ids: Prompt (instruction + criterion) then response ids.
        labels: Per position: -100 on the prompt, 0/1 on response tokens.
    """

    input_ids: list[int]
    labels: list[int]


@dataclass
class TokenScores:
    """Token-level detection scores.

    Attributes:
        precision: Predicted-relevant tokens that are relevant.
        recall: Relevant tokens predicted relevant.
        f1: Harmonic mean of the two (0 when both are 0).
        tokens: Response tokens scored.
    """

    precision: float
    recall: float
    f1: float
    tokens: int


def token_f1(predicted: Sequence[int], gold: Sequence[int]) -> TokenScores:
    """Precision, recall and F1 of 0/1 token predictions against 0/1 labels.

    Raises:
        LabelAlignmentError: The sequences differ in length.
    """
    if len(predicted) != len(gold):
        raise LabelAlignmentError(f"{len(predicted)} predictions for {len(gold)} labels")
    tp = sum(1 for p, g in zip(predicted, gold) if p and g)
    fp = sum(1 for p, g in zip(predicted, gold) if p and not g)
    fn = sum(1 for p, g in zip(predicted, gold) if g and not p)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TokenScores(precision, recall, f1, len(gold))


def encode_examples(
    disc: RelevanceDiscriminator, examples: Sequence[RelevanceExample]
) -> list[EncodedExample]:
    """Tokenise examples: prompt ids labelled -100, response ids labelled from their spans."""
    out = []
    for ex in examples:
        prompt = disc.prompt_ids(ex.criterion)
        room = max(disc.max_length - len(prompt), 1)
        ids, labels = token_labels(ex.response, ex.spans, disc.tokenizer, max_tokens=room)
        out.append(EncodedExample(prompt + ids, [-100] * len(prompt) + labels))
    return out


def _collate(batch: list[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e.labels)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class DiscriminatorTrainer:
    """Fits a :class:`RelevanceDiscriminator` with BCE on response tokens.

    The loop runs under an ``accelerate.Accelerator`` (created when not given), so the same
    code trains on CPU, one GPU, or many GPUs under ``accelerate launch``.

    Args:
        discriminator: The model to train (LoRA is enabled here when ``config.lora_r`` is set).
        config: Training settings.
        accelerator: An existing ``Accelerator``; default: a new one.
    """

    def __init__(
        self,
        discriminator: RelevanceDiscriminator,
        config: DiscriminatorConfig | None = None,
        *,
        accelerator: Any = None,
    ) -> None:
        self.config = config or DiscriminatorConfig()
        self.discriminator = discriminator
        if self.config.lora_r is not None and not discriminator.is_lora:
            discriminator.enable_lora(
                self.config.lora_r,
                self.config.lora_alpha,
                self.config.lora_dropout,
                self.config.lora_target_modules,
            )
        self._accelerator = accelerator
        self.history: list[float] = []

    @property
    def accelerator(self) -> Any:
        """The ``Accelerator`` driving the loop."""
        if self._accelerator is None:
            from accelerate import Accelerator
            from accelerate.state import AcceleratorState

            if AcceleratorState._shared_state:
                # a process runs one accelerate state (a GRPO trainer may have made it): join it
                self._accelerator = Accelerator()
            else:
                self._accelerator = Accelerator(cpu=self.discriminator.device.type == "cpu")
        return self._accelerator

    def loss(self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None) -> torch.Tensor:
        """Mean BCE over the response tokens of a collated batch."""
        model = model or self.discriminator
        logits = model(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]
        keep = labels != -100
        pos_weight = None
        if self.config.pos_weight is not None:
            pos_weight = torch.tensor(self.config.pos_weight, device=logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits[keep], labels[keep].to(logits.dtype), pos_weight=pos_weight
        )

    def train(self, examples: Sequence[RelevanceExample]) -> list[float]:
        """Train for ``config.epochs`` passes; returns the loss of every step.

        Raises:
            LabelAlignmentError: An example's spans do not fit its response.
        """
        cfg = self.config
        if not examples:
            raise LabelAlignmentError("no training examples")
        from torch.utils.data import DataLoader

        encoded = encode_examples(self.discriminator, examples)
        pad_id = int(self.discriminator.tokenizer.pad_token_id)
        gen = torch.Generator().manual_seed(cfg.seed)
        loader: Any = DataLoader(
            encoded,  # type: ignore[arg-type]
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=lambda b: _collate(b, pad_id),
        )
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        acc = self.accelerator
        model, optim, loader = acc.prepare(self.discriminator, optim, loader)
        model.train()
        random.seed(cfg.seed)
        step = 0
        for epoch in range(cfg.epochs):
            for batch in loader:
                loss = self.loss(batch, model)
                acc.backward(loss)
                optim.step()
                optim.zero_grad()
                value = float(loss.detach().item())
                self.history.append(value)
                step += 1
                if step % cfg.log_every == 0:
                    logger.info("discriminator epoch %d step %d loss %.4f", epoch, step, value)
        model.eval()
        # drop any mixed-precision forward wrapper so inference runs in the model's own dtype
        self.discriminator = acc.unwrap_model(model, keep_fp32_wrapper=False)
        return list(self.history[-step:])

    @torch.no_grad()
    def evaluate(self, examples: Sequence[RelevanceExample], *, batch_size: int = 16) -> TokenScores:
        """Token precision / recall / F1 at ``config.threshold`` over every response token."""
        disc = self.discriminator
        encoded = [token_labels(ex.response, ex.spans, disc.tokenizer) for ex in examples]
        probs = disc.predict_ids(
            [ex.criterion for ex in examples], [ids for ids, _ in encoded], batch_size=batch_size
        )
        pred: list[int] = []
        gold: list[int] = []
        for (_, labels), p in zip(encoded, probs):
            pred.extend(int(v > self.config.threshold) for v in p.tolist())
            gold.extend(labels)
        return token_f1(pred, gold)
