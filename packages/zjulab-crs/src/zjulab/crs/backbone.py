"""Pretrained encoders as trainable backbones: loading, pooling and a pooled linear head."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import torch
from torch import nn

from zjulab.common.device import resolve_device, resolve_dtype
from zjulab.common.encoders import pool_hidden
from zjulab.common.loading import load_causal_lm, load_encoder, load_tokenizer

__all__ = ["EncoderHead", "load_backbone"]

logger = logging.getLogger(__name__)


def load_backbone(
    model: Any,
    tokenizer: Any = None,
    *,
    kind: Literal["encoder", "causal"] = "encoder",
    device: str = "auto",
    dtype: str = "float32",
) -> tuple[Any, Any]:
    """Return ``(model, tokenizer)`` on ``device``.

    Args:
        model: Hub id, local directory, or a loaded ``PreTrainedModel`` (used as is, and
            trained in place).
        tokenizer: Tokenizer or its id/path; defaults to the model's.
        kind: ``"encoder"`` (``AutoModel``) or ``"causal"`` (``AutoModelForCausalLM``).
        device: Target device.
        dtype: Weight dtype when loading by name.

    Raises:
        ModelNotAvailableError: The model is neither cached nor reachable.
    """
    if isinstance(model, (str, os.PathLike)):
        loader = load_encoder if kind == "encoder" else load_causal_lm
        name = str(model)
        model = loader(name, device=device, dtype=dtype)
        if tokenizer is None:
            tokenizer = name
    else:
        dev = resolve_device(device)
        model = model.to(dev)
        if dtype not in ("auto", None):
            model = model.to(resolve_dtype(dtype, dev))
    if tokenizer is None:
        tokenizer = getattr(model.config, "_name_or_path", None)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class EncoderHead(nn.Module):
    """An encoder, pooling, dropout and a linear layer with ``out_dim`` outputs.

    Used for the multi-label elicitation classifier (one logit per attribute) and the quality
    regressor (one output).

    Args:
        encoder: A transformers ``AutoModel``.
        out_dim: Number of outputs.
        pooling: ``"cls"`` or ``"mean"``.
        dropout: Dropout before the linear layer.
    """

    def __init__(
        self, encoder: nn.Module, out_dim: int, pooling: Literal["cls", "mean"] = "mean", dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        hidden = int(encoder.config.hidden_size)  # type: ignore[union-attr,arg-type]
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any) -> torch.Tensor:
        """Outputs ``[B, out_dim]``."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        pooled = pool_hidden(out, attention_mask, self.pooling)
        return self.head(self.dropout(pooled.to(self.head.weight.dtype)))
