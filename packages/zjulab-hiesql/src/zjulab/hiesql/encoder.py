"""The HIE-SQL encoder: a pretrained transformer followed by relation-aware layers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from zjulab.hiesql._torch import nn, torch  # first: a typed error without the [torch] extra

# isort: split

from zjulab.hiesql.config import EncoderConfig
from zjulab.hiesql.encoder_input import SEGMENTS, EncoderInput
from zjulab.hiesql.linking import RELATIONS
from zjulab.hiesql.rat import RelationAwareLayer

logger = logging.getLogger(__name__)

__all__ = ["HieSqlEncoder", "collate_encoder_inputs"]


def collate_encoder_inputs(
    batch: Sequence[EncoderInput], pad_id: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Right-pad a batch of inputs into tensors.

    Returns:
        ``input_ids``, ``attention_mask``, ``segments`` ``(B, L)`` and ``relations`` ``(B, L, L)``.
    """
    n = max(len(x) for x in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    seg = torch.zeros((len(batch), n), dtype=torch.long)
    rel = torch.zeros((len(batch), n, n), dtype=torch.long)
    for i, x in enumerate(batch):
        m = len(x)
        ids[i, :m] = torch.tensor(x.input_ids)
        mask[i, :m] = 1
        seg[i, :m] = torch.tensor(x.segments)
        rel[i, :m, :m] = torch.from_numpy(x.relations)
    return {
        k: v.to(device)
        for k, v in {"input_ids": ids, "attention_mask": mask, "segments": seg, "relations": rel}.items()
    }


class HieSqlEncoder(nn.Module):
    """Pretrained encoder (``AutoModel``) + segment embeddings + relation-aware self-attention.

    Args:
        base: The pretrained encoder module (its ``config.hidden_size`` sets the width).
        config: Encoder settings (number of relation-aware layers, heads, dropout).
    """

    def __init__(self, base: Any, config: EncoderConfig) -> None:
        super().__init__()
        self.base = base
        self.config = config
        hidden = int(base.config.hidden_size)
        self.hidden_size = hidden
        self.segment = nn.Embedding(len(SEGMENTS), hidden)
        nn.init.zeros_(self.segment.weight)
        self.layers = nn.ModuleList(
            RelationAwareLayer(hidden, config.rat_heads, len(RELATIONS), config.dropout)
            for _ in range(config.rat_layers)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        segments: torch.Tensor,
        relations: torch.Tensor,
    ) -> torch.Tensor:
        """Encode a padded batch.

        Returns:
            ``(batch, len, hidden)`` contextual states.
        """
        x = self.base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        x = x + self.segment(segments)
        for layer in self.layers:
            x = layer(x, relations, attention_mask)
        return x
