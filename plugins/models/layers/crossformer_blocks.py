"""Blocks of Crossformer (Zhang & Yan, "Crossformer: Transformer Utilizing Cross-Dimension Dependency for
Multivariate Time Series Forecasting", ICLR 2023).

Tensors are ``[B, D, S, d_model]``: batch, data dimensions (channels), segments, features. Every reshuffle is
a ``reshape``/``transpose`` of static sizes and every attention a plain matmul attention, so the blocks export
as they train.
"""

from __future__ import annotations

import torch
from torch import nn

from plugins.models.layers.attention import AttentionLayer, FullAttention
from plugins.models.layers.patching import repeat_by_concat


def _attention(d_model: int, n_heads: int, dropout: float) -> AttentionLayer:
    return AttentionLayer(FullAttention(mask_flag=False, attention_dropout=dropout), d_model, n_heads)


def _mlp(d_in: int, d_hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_in))


class TwoStageAttention(nn.Module):
    """Cross-time attention within each dimension, then cross-dimension attention through ``factor`` learned
    router vectors per segment (the routers gather from all dimensions, then every dimension reads back
    from the routers), each stage followed by an MLP; residuals and LayerNorm after every sub-layer."""

    def __init__(self, seg_num: int, factor: int, d_model: int, n_heads: int, d_ff: int | None = None,
                 dropout: float = 0.1) -> None:
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.seg_num, self.factor = seg_num, factor
        self.time_attention = _attention(d_model, n_heads, dropout)
        self.dim_sender = _attention(d_model, n_heads, dropout)
        self.dim_receiver = _attention(d_model, n_heads, dropout)
        self.router = nn.Parameter(torch.randn(seg_num, factor, d_model))
        self.dropout = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)
        self.mlp1 = _mlp(d_model, d_ff)
        self.mlp2 = _mlp(d_model, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, dims, segs, d_model = x.shape
        # cross-time stage: each (sample, dimension) is a sequence of segments
        time_in = x.reshape(batch * dims, segs, d_model)
        attended, _ = self.time_attention(time_in, time_in, time_in, None)
        hidden = self.norm1(time_in + self.dropout(attended))
        hidden = self.norm2(hidden + self.dropout(self.mlp1(hidden)))
        # cross-dimension stage: each (sample, segment) is a set of dimensions
        dim_in = hidden.reshape(batch, dims, segs, d_model).transpose(1, 2)
        dim_in = dim_in.reshape(batch * segs, dims, d_model)
        routers = repeat_by_concat(self.router, batch)  # [B*S, factor, d_model], sample-major like dim_in
        buffer, _ = self.dim_sender(routers, dim_in, dim_in, None)
        received, _ = self.dim_receiver(dim_in, buffer, buffer, None)
        hidden = self.norm3(dim_in + self.dropout(received))
        hidden = self.norm4(hidden + self.dropout(self.mlp2(hidden)))
        return hidden.reshape(batch, segs, dims, d_model).transpose(1, 2)


class SegmentMerging(nn.Module):
    """Merge every ``win_size`` adjacent segments into one: concatenate their features, LayerNorm, then a
    linear map back to ``d_model``. An incomplete last window is completed by repeating the last segments.
    ``in_segs`` (the number of input segments) is fixed at construction so the padding is static."""

    def __init__(self, d_model: int, win_size: int, in_segs: int) -> None:
        super().__init__()
        self.win_size = win_size
        self.in_segs = in_segs
        self.missing = (-in_segs) % win_size
        self.out_segs = (in_segs + self.missing) // win_size
        self.norm = nn.LayerNorm(win_size * d_model)
        self.linear = nn.Linear(win_size * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims, d_model = x.shape[1], x.shape[3]
        if self.missing:
            x = torch.cat([x, x[:, :, self.in_segs - self.missing:, :]], dim=2)
        # consecutive segments side by side: [.., j, i*d_model + k] = x[.., j*win + i, k]
        merged = x.reshape(-1, dims, self.out_segs, self.win_size * d_model)
        return self.linear(self.norm(merged))


class ScaleBlock(nn.Module):
    """One encoder scale: optional segment merging of ``in_segs`` segments, then ``depth`` two-stage attention
    layers (with one set of routers per remaining segment)."""

    def __init__(self, win_size: int, d_model: int, n_heads: int, d_ff: int, depth: int, dropout: float,
                 in_segs: int, factor: int) -> None:
        super().__init__()
        self.merge = SegmentMerging(d_model, win_size, in_segs) if win_size > 1 else None
        seg_num = self.merge.out_segs if self.merge is not None else in_segs
        self.layers = nn.ModuleList(
            TwoStageAttention(seg_num, factor, d_model, n_heads, d_ff, dropout) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merge is not None:
            x = self.merge(x)
        for layer in self.layers:
            x = layer(x)
        return x


class DecoderLayer(nn.Module):
    """Two-stage self-attention over the output segments, cross-attention to one encoder scale, an MLP,
    and a linear map of every segment token to ``seg_len`` forecast values."""

    def __init__(self, out_seg_num: int, factor: int, d_model: int, n_heads: int, d_ff: int, dropout: float,
                 seg_len: int) -> None:
        super().__init__()
        self.self_attention = TwoStageAttention(out_seg_num, factor, d_model, n_heads, d_ff, dropout)
        self.cross_attention = _attention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.mlp = _mlp(d_model, d_model)
        self.linear_pred = nn.Linear(d_model, seg_len)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.self_attention(x)
        batch, dims, segs, d_model = x.shape
        queries = x.reshape(batch * dims, segs, d_model)
        memory = cross.reshape(batch * dims, cross.shape[2], d_model)
        attended, _ = self.cross_attention(queries, memory, memory, None)
        hidden = self.norm1(queries + self.dropout(attended))
        hidden = self.norm2(hidden + self.mlp(hidden)).reshape(batch, dims, segs, d_model)
        return hidden, self.linear_pred(hidden)  # prediction: [B, D, segs, seg_len]
