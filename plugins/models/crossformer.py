"""Crossformer (Zhang & Yan, "Crossformer: Transformer Utilizing Cross-Dimension Dependency for Multivariate
Time Series Forecasting", ICLR 2023).

Dimension-segment-wise embedding: every channel's window is cut into segments of ``seg_len`` steps, each
embedded on its own (plus a learned position per channel and segment). A hierarchical encoder of two-stage
attention layers merges ``win_size`` adjacent segments at every scale after the first; the decoder has one
layer per encoder output (the embedding and every scale), each predicting ``seg_len`` steps per output
segment, and the forecast is the sum of the layers' predictions. Structure as in the Time-Series-Library
reference (which also adds fixed sinusoidal positions to the segment embedding).
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import nn

from plugins.models.base import ModelPluginEntry
from plugins.models.layers.crossformer_blocks import DecoderLayer, ScaleBlock
from plugins.models.layers.patching import PatchEmbedding, repeat_by_concat
from tsbench_core.data import DataShape
from tsbench_core.protocols import PluginParams


class CrossformerParams(PluginParams):
    """Crossformer options; defaults are those of the ETTh1 96->96 long-term-forecasting script."""

    d_model: int = Field(512, ge=1)
    n_heads: int = Field(8, ge=1)
    e_layers: int = Field(2, ge=1, description="encoder scales; the decoder has e_layers + 1 layers")
    d_ff: int = Field(2048, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    factor: int = Field(3, ge=1, description="router vectors per segment in the cross-dimension stage")
    seg_len: int = Field(12, ge=1, description="time steps per segment")
    win_size: int = Field(2, ge=2, description="segments merged into one between encoder scales")

    @model_validator(mode="after")
    def _heads_divide(self) -> CrossformerParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        return self


class Crossformer(nn.Module):
    """``forward(x_enc, ...) -> [B, pred_len, enc_in]``; marks and decoder inputs are unused."""

    def __init__(self, seq_len: int, pred_len: int, enc_in: int, d_model: int = 512, n_heads: int = 8,
                 e_layers: int = 2, d_ff: int = 2048, dropout: float = 0.1, factor: int = 3,
                 seg_len: int = 12, win_size: int = 2) -> None:
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.in_seg_num = math.ceil(seq_len / seg_len)
        self.out_seg_num = math.ceil(pred_len / seg_len)
        pad_in = self.in_seg_num * seg_len - seq_len
        self.segment_embedding = PatchEmbedding(seq_len, d_model, seg_len, seg_len, pad_in, dropout=0.0)
        self.enc_pos_embedding = nn.Parameter(torch.randn(1, enc_in, self.in_seg_num, d_model))
        self.pre_norm = nn.LayerNorm(d_model)
        blocks, segs = [], self.in_seg_num
        for scale in range(e_layers):
            blocks.append(ScaleBlock(1 if scale == 0 else win_size, d_model, n_heads, d_ff, 1, dropout, segs,
                                     factor))
            segs = blocks[-1].layers[0].seg_num
        self.encoder = nn.ModuleList(blocks)
        self.dec_pos_embedding = nn.Parameter(torch.randn(1, enc_in, self.out_seg_num, d_model))
        self.decoder = nn.ModuleList(
            DecoderLayer(self.out_seg_num, factor, d_model, n_heads, d_ff, dropout, seg_len)
            for _ in range(e_layers + 1)
        )

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None,
                x_dec: torch.Tensor | None = None, x_mark_dec: torch.Tensor | None = None) -> torch.Tensor:
        batch = x_enc.shape[0]
        series = x_enc.transpose(1, 2).reshape(batch * self.enc_in, self.seq_len)
        x = self.segment_embedding(series).reshape(batch, self.enc_in, self.in_seg_num, -1)
        x = self.pre_norm(x + self.enc_pos_embedding)
        scales = [x]
        for block in self.encoder:
            x = block(x)
            scales.append(x)
        y = repeat_by_concat(self.dec_pos_embedding, batch)
        forecast = None
        for layer, memory in zip(self.decoder, scales, strict=True):
            y, prediction = layer(y, memory)
            forecast = prediction if forecast is None else forecast + prediction
        forecast = forecast.reshape(batch, self.enc_in, -1).transpose(1, 2)  # [B, out_segs*seg_len, D]
        return forecast[:, -self.pred_len:, :]


def build(params: CrossformerParams, shape: DataShape) -> Crossformer:
    return Crossformer(shape.seq_len, shape.pred_len, shape.enc_in, params.d_model, params.n_heads,
                       params.e_layers, params.d_ff, params.dropout, params.factor, params.seg_len,
                       params.win_size)


PLUGIN = ModelPluginEntry(
    name="crossformer",
    description="Crossformer: segment embedding, two-stage attention, hierarchical enc-dec (Zhang+Yan 2023)",
    params_model=CrossformerParams,
    factory=build,
)
