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
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -1e9


@lru_cache(maxsize=32)
def _causal_mask_array(length: int) -> np.ndarray:
    return np.triu(np.full((length, length), MASK_VALUE, dtype=np.float32), k=1)


def causal_additive_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """``[L, L]`` mask: 0 on and below the diagonal, ``MASK_VALUE`` above (a constant under tracing)."""
    return torch.from_numpy(_causal_mask_array(length)).to(device)


class FullAttention(nn.Module):
    """Scaled dot-product attention (Vaswani et al., 2017), optionally causal.

    Deploy form: the heads are folded into the batch, so the two attention products are 3-D batched
    matmuls ``[B*H, L, E] x [B*H, E, S]``; the same arithmetic, which DeepSparse runs faster than the 4-D
    ``[B, H, L, E]`` form (measured with the fused projections of ``AttentionLayer``'s deploy form).
    """

    deploy: bool = False

    def __init__(self, mask_flag: bool = True, scale: float | None = None, attention_dropout: float = 0.1,
                 output_attention: bool = False) -> None:
        super().__init__()
        self.mask_flag = mask_flag
        self.scale = scale
        self.output_attention = output_attention
        self.dropout = nn.Dropout(attention_dropout)

    def set_deploy_form(self, enabled: bool) -> None:
        self.deploy = bool(enabled)

    def _scores_mask(self, scores: torch.Tensor, length: int, attn_mask: torch.Tensor | None) -> torch.Tensor:
        if attn_mask is not None:
            return scores + attn_mask
        if self.mask_flag:
            return scores + causal_additive_mask(length, scores.device)
        return scores

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.deploy and not self.output_attention:
            return self._forward_folded(queries, keys, values, attn_mask), None
        length, head_dim = queries.shape[1], queries.shape[3]
        scale = self.scale or 1.0 / math.sqrt(head_dim)
        q = queries.permute(0, 2, 1, 3)  # B H L E
        k = keys.permute(0, 2, 1, 3).transpose(2, 3)  # B H E S (this spelling compiles with inductor)
        v = values.permute(0, 2, 1, 3)  # B H S D
        scores = self._scores_mask(torch.matmul(q, k) * scale, length, attn_mask)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).permute(0, 2, 1, 3)  # B L H D
        return out, (weights if self.output_attention else None)

    def _forward_folded(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                        attn_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, heads, head_dim = queries.shape
        source, value_dim = keys.shape[1], values.shape[3]
        scale = self.scale or 1.0 / math.sqrt(head_dim)
        q = queries.permute(0, 2, 1, 3).reshape(batch * heads, length, head_dim)
        k = keys.permute(0, 2, 3, 1).reshape(batch * heads, head_dim, source)
        v = values.permute(0, 2, 1, 3).reshape(batch * heads, source, value_dim)
        scores = torch.matmul(q, k) * scale
        if attn_mask is not None and attn_mask.dim() > 2:  # broadcast against [B, H, L, S] as in training
            scores = (scores.view(batch, heads, length, source) + attn_mask).reshape(batch * heads, length, source)
        else:
            scores = self._scores_mask(scores, length, attn_mask)
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v)  # B*H L D
        return out.view(batch, heads, length, value_dim).permute(0, 2, 1, 3)


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

    def _project(self, queries: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v projections. When the inner ``FullAttention`` is in deploy form: one MatMul for q, k and v of
        a self-attention (k and v of a cross-attention), weights concatenated on the fly (a constant in an
        export, no new parameter). Each output is the same dot product; DeepSparse runs it faster."""
        qp, kp, vp = self.query_projection, self.key_projection, self.value_projection
        inner = self.inner_attention
        fusable = (isinstance(inner, FullAttention) and inner.deploy
                   and all(m.bias is not None for m in (qp, kp, vp)))
        if fusable and queries is keys and keys is values:
            fused = F.linear(queries, torch.cat([qp.weight, kp.weight, vp.weight]),
                             torch.cat([qp.bias, kp.bias, vp.bias]))
            q, k, v = fused.split([qp.out_features, kp.out_features, vp.out_features], dim=-1)
            return q, k, v
        if fusable and keys is values:
            fused = F.linear(keys, torch.cat([kp.weight, vp.weight]), torch.cat([kp.bias, vp.bias]))
            k, v = fused.split([kp.out_features, vp.out_features], dim=-1)
            return qp(queries), k, v
        return qp(queries), kp(keys), vp(values)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = queries.shape
        source = keys.shape[1]
        heads = self.n_heads
        q, k, v = self._project(queries, keys, values)
        q = q.reshape(batch, length, heads, -1)
        k = k.reshape(batch, source, heads, -1)
        v = v.reshape(batch, source, heads, -1)
        out, weights = self.inner_attention(q, k, v, attn_mask)
        return self.out_projection(out.reshape(batch, length, -1)), weights
