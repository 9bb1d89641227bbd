"""Relation-aware self-attention (RAT-SQL style) in torch.

Each head scores token ``i`` against token ``j`` with the key shifted by a learned embedding of
their relation ``r_ij``, and mixes values shifted the same way (Shaw et al., 2018; Wang et al.,
RAT-SQL, 2020)::

    e_ij = q_i · (k_j + a^K_{r_ij}) / sqrt(d)        z_i = Σ_j softmax_j(e_ij) (v_j + a^V_{r_ij})
"""

from __future__ import annotations

import math

from zjulab.hiesql._torch import nn, torch  # first: a typed error without the [torch] extra

# isort: split

from zjulab.hiesql.errors import HieSqlConfigError

__all__ = ["RelationAwareAttention", "RelationAwareLayer"]


class RelationAwareAttention(nn.Module):
    """Multi-head self-attention with relation embeddings on keys and values.

    Args:
        hidden_size: Model width.
        num_heads: Attention heads (must divide ``hidden_size``).
        num_relations: Size of the relation vocabulary.
        dropout: Attention dropout.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_relations: int, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise HieSqlConfigError(f"rat_heads={num_heads} does not divide hidden size {hidden_size}")
        self.h = num_heads
        self.d = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.rel_k = nn.Embedding(num_relations, self.d)
        self.rel_v = nn.Embedding(num_relations, self.d)
        nn.init.zeros_(self.rel_k.weight)
        nn.init.zeros_(self.rel_v.weight)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, relations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            x: ``(batch, len, hidden)``.
            relations: ``(batch, len, len)`` relation ids.
            mask: ``(batch, len)`` 1 for real tokens.

        Returns:
            ``(batch, len, hidden)``.
        """
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, self.d).permute(2, 0, 3, 1, 4)  # (b, h, n, d) each
        rk = self.rel_k(relations)  # (b, n, n, d)
        rv = self.rel_v(relations)
        scores = torch.matmul(q, k.transpose(-1, -2)) + torch.einsum("bhid,bijd->bhij", q, rk)
        scores = scores / math.sqrt(self.d)
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = self.drop(torch.softmax(scores, dim=-1))
        z = torch.matmul(attn, v) + torch.einsum("bhij,bijd->bhid", attn, rv)
        return self.out(z.transpose(1, 2).reshape(b, n, self.h * self.d))


class RelationAwareLayer(nn.Module):
    """A transformer layer (post-norm) whose self-attention is relation-aware.

    Args:
        hidden_size: Model width.
        num_heads: Attention heads.
        num_relations: Size of the relation vocabulary.
        dropout: Dropout rate.
    """

    def __init__(self, hidden_size: int, num_heads: int, num_relations: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attn = RelationAwareAttention(hidden_size, num_heads, num_relations, dropout)
        self.norm1 = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, 4 * hidden_size), nn.GELU(), nn.Linear(4 * hidden_size, hidden_size)
        )
        self.norm2 = nn.LayerNorm(hidden_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, relations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Apply attention and the feed-forward block, each with a residual connection."""
        x = self.norm1(x + self.drop(self.attn(x, relations, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))
