"""Multi-head attention written as plain matmuls with additive constant masks.

Inner attentions take ``queries [B, L, H, E], keys [B, S, H, E], values [B, S, H, D]`` and return
``(out [B, L, H, D], weights or None)``; ``AttentionLayer`` owns the projections. Masks are finite additive
constants built outside the autograd graph, so an export sees a constant, never a ``Trilu`` or ``Where`` op
(DeepSparse gives wrong results for ``masked_fill`` and does not support ``Trilu``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

MASK_VALUE = -1e9


@lru_cache(maxsize=32)
def _causal_mask_array(length: int) -> np.ndarray:
    return np.triu(np.full((length, length), MASK_VALUE, dtype=np.float32), k=1)


def causal_additive_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """``[L, L]`` mask: 0 on and below the diagonal, ``MASK_VALUE`` above (a constant under tracing)."""
    return torch.from_numpy(_causal_mask_array(length)).to(device)


class FullAttention(nn.Module):
    """Scaled dot-product attention (Vaswani et al., 2017), optionally causal."""

    def __init__(self, mask_flag: bool = True, scale: float | None = None, attention_dropout: float = 0.1,
                 output_attention: bool = False) -> None:
        super().__init__()
        self.mask_flag = mask_flag
        self.scale = scale
        self.output_attention = output_attention
        self.dropout = nn.Dropout(attention_dropout)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        length, head_dim = queries.shape[1], queries.shape[3]
        scale = self.scale or 1.0 / math.sqrt(head_dim)
        q = queries.permute(0, 2, 1, 3)  # B H L E
        k = keys.permute(0, 2, 1, 3).transpose(2, 3)  # B H E S (this spelling compiles with inductor)
        v = values.permute(0, 2, 1, 3)  # B H S D
        scores = torch.matmul(q, k) * scale
        if attn_mask is not None:
            scores = scores + attn_mask
        elif self.mask_flag:
            scores = scores + causal_additive_mask(length, scores.device)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).permute(0, 2, 1, 3)  # B L H D
        return out, (weights if self.output_attention else None)


class AttentionLayer(nn.Module):
    """Query/key/value/output projections around an inner attention; ``n_heads`` heads of equal width."""

    def __init__(self, attention: nn.Module, d_model: int, n_heads: int, d_keys: int | None = None,
                 d_values: int | None = None) -> None:
        super().__init__()
        d_keys = d_keys or d_model // n_heads
        d_values = d_values or d_model // n_heads
        self.inner_attention = attention
        self.query_projection = nn.Linear(d_model, d_keys * n_heads)
        self.key_projection = nn.Linear(d_model, d_keys * n_heads)
        self.value_projection = nn.Linear(d_model, d_values * n_heads)
        self.out_projection = nn.Linear(d_values * n_heads, d_model)
        self.n_heads = n_heads

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = queries.shape
        source = keys.shape[1]
        heads = self.n_heads
        q = self.query_projection(queries).view(batch, length, heads, -1)
        k = self.key_projection(keys).view(batch, source, heads, -1)
        v = self.value_projection(values).view(batch, source, heads, -1)
        out, weights = self.inner_attention(q, k, v, attn_mask)
        return self.out_projection(out.reshape(batch, length, -1)), weights
