"""PatchTST (Nie et al., "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers",
ICLR 2023).

Channel independence: every channel is standardised over its own window, cut into overlapping patches
(``patch_len`` steps every ``stride``, the end padded by ``stride`` repeats of the last value), embedded and
passed through a Transformer encoder shared by all channels; a flatten-linear head maps the patch tokens of a
channel to its ``pred_len`` forecast, which is de-standardised. The layer structure follows the
Time-Series-Library reference (post-norm encoder layers, a final BatchNorm over ``d_model``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from plugins.models.base import ModelPluginEntry
from plugins.models.layers.attention import AttentionLayer, FullAttention
from plugins.models.layers.patching import PatchEmbedding
from plugins.models.layers.series_encoder import Encoder, EncoderLayer, InstanceNormalization
from tsbench_core.data import DataShape
from tsbench_core.errors import UserError
from tsbench_core.protocols import PluginParams


class PatchTSTParams(PluginParams):
    """PatchTST options; defaults are those of the ETTh1 96->96 long-term-forecasting script."""

    d_model: int = Field(512, ge=1)
    n_heads: int = Field(2, ge=1)
    e_layers: int = Field(1, ge=1)
    d_ff: int = Field(2048, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["gelu", "relu"] = "gelu"
    patch_len: int = Field(16, ge=1)
    stride: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> PatchTSTParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        return self


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over the feature axis of ``[N, tokens, d_model]``."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class FlattenHead(nn.Module):
    """``[B, C, d_model, patch_num] -> [B, C, pred_len]``: flatten the tokens, one linear map, dropout."""

    def __init__(self, in_features: int, pred_len: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, pred_len)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear(x.reshape(x.shape[0], x.shape[1], -1)))


class PatchTST(nn.Module):
    """``forward(x_enc, ...) -> [B, pred_len, enc_in]``; marks and decoder inputs are unused."""

    def __init__(self, seq_len: int, pred_len: int, enc_in: int, d_model: int = 512, n_heads: int = 2,
                 e_layers: int = 1, d_ff: int = 2048, dropout: float = 0.1, activation: str = "gelu",
                 patch_len: int = 16, stride: int = 8) -> None:
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.instance_norm = InstanceNormalization()
        self.patch_embedding = PatchEmbedding(seq_len, d_model, patch_len, stride, stride, dropout)
        self.patch_num = self.patch_embedding.patch_num
        self.encoder = Encoder(
            [
                EncoderLayer(AttentionLayer(FullAttention(mask_flag=False, attention_dropout=dropout),
                                            d_model, n_heads), d_model, d_ff, dropout, activation)
                for _ in range(e_layers)
            ],
            norm=TokenBatchNorm(d_model),
        )
        self.head = FlattenHead(d_model * self.patch_num, pred_len, dropout)

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None,
                x_dec: torch.Tensor | None = None, x_mark_dec: torch.Tensor | None = None) -> torch.Tensor:
        # time-last layout throughout: [B, C, seq_len], then one row per channel
        x, mean, std = self.instance_norm.normalize(x_enc.transpose(1, 2), dim=-1)  # [B, C, seq_len]
        tokens = self.encoder(self.patch_embedding(x.reshape(-1, self.seq_len)))  # [B*C, patch_num, d_model]
        tokens = tokens.reshape(-1, self.enc_in, self.patch_num, tokens.shape[-1]).transpose(2, 3)
        forecast = self.instance_norm.denormalize(self.head(tokens), mean, std)  # [B, C, pred_len]
        return forecast.transpose(1, 2)


def build(params: PatchTSTParams, shape: DataShape) -> PatchTST:
    if shape.seq_len + params.stride < params.patch_len:
        raise UserError(f"patchtst: patch_len={params.patch_len} is longer than seq_len+stride="
                        f"{shape.seq_len + params.stride}; use a shorter patch_len")
    return PatchTST(shape.seq_len, shape.pred_len, shape.enc_in, params.d_model, params.n_heads,
                    params.e_layers, params.d_ff, params.dropout, params.activation, params.patch_len,
                    params.stride)


PLUGIN = ModelPluginEntry(
    name="patchtst",
    description="PatchTST: channel-independent patch Transformer, instance-normalised (Nie et al., 2023)",
    params_model=PatchTSTParams,
    factory=build,
)
