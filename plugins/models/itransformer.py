"""iTransformer (Liu et al., "iTransformer: Inverted Transformers Are Effective for Time Series Forecasting",
ICLR 2024).

The roles of time and variates are swapped: each variate's whole standardised window is one token (a linear
map ``seq_len -> d_model``); the calendar features are extra tokens of the same kind. A Transformer encoder
attends across these tokens, a linear map ``d_model -> pred_len`` turns each variate token into its forecast,
and the forecast is de-standardised. Structure as in the Time-Series-Library reference.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from plugins.models.base import ModelPluginEntry
from plugins.models.layers.attention import AttentionLayer, FullAttention
from plugins.models.layers.series_encoder import Encoder, EncoderLayer, InstanceNormalization
from tsbench_core.data import DataShape
from tsbench_core.protocols import PluginParams


class ITransformerParams(PluginParams):
    """iTransformer options; defaults are those of the ETTh1 96->96 long-term-forecasting script."""

    d_model: int = Field(128, ge=1)
    n_heads: int = Field(8, ge=1)
    e_layers: int = Field(2, ge=1)
    d_ff: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["gelu", "relu"] = "gelu"
    embed: Literal["timeF", "fixed", "learned"] = Field(
        "timeF", description="which calendar marks become tokens: normalised (timeF) or integer fields")
    use_marks: bool = Field(True, description="append the calendar features as extra tokens")

    @model_validator(mode="after")
    def _heads_divide(self) -> ITransformerParams:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        return self


class ITransformer(nn.Module):
    """``forward(x_enc, x_mark_enc, ...) -> [B, pred_len, enc_in]``; decoder inputs are unused."""

    deploy: bool = False

    def __init__(self, seq_len: int, pred_len: int, enc_in: int, d_model: int = 128, n_heads: int = 8,
                 e_layers: int = 2, d_ff: int = 128, dropout: float = 0.1, activation: str = "gelu",
                 use_marks: bool = True) -> None:
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.use_marks = use_marks
        self.instance_norm = InstanceNormalization()
        self.embedding = nn.Linear(seq_len, d_model)
        self.embedding_dropout = nn.Dropout(dropout)
        self.encoder = Encoder(
            [
                EncoderLayer(AttentionLayer(FullAttention(mask_flag=False, attention_dropout=dropout),
                                            d_model, n_heads), d_model, d_ff, dropout, activation)
                for _ in range(e_layers)
            ],
            norm=nn.LayerNorm(d_model),
        )
        self.projection = nn.Linear(d_model, pred_len)

    def set_deploy_form(self, enabled: bool) -> None:
        self.deploy = bool(enabled)

    def _variate_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The variate tokens without the mark tokens, before the (per-token) projection: same result, less work.
        The deploy form selects them with a constant 0/1 matmul (exact): DeepSparse 1.8 aborts compiling
        LayerNorm -> Slice -> MatMul at batch 1 (gemm_utils.cpp:38) and runs a Gather outside its engine."""
        if not self.deploy:
            return hidden[:, : self.enc_in, :]
        pick = torch.eye(hidden.shape[1], self.enc_in, dtype=hidden.dtype, device=hidden.device)
        return (hidden.transpose(1, 2) @ pick).transpose(1, 2)

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None,
                x_dec: torch.Tensor | None = None, x_mark_dec: torch.Tensor | None = None) -> torch.Tensor:
        x, mean, std = self.instance_norm.normalize(x_enc)
        tokens = x.transpose(1, 2)  # [B, C, seq_len]: one token per variate
        if self.use_marks and x_mark_enc is not None:
            tokens = torch.cat([tokens, x_mark_enc.transpose(1, 2)], dim=1)
        hidden = self.encoder(self.embedding_dropout(self.embedding(tokens)))
        forecast = self.projection(self._variate_tokens(hidden)).transpose(1, 2)
        return self.instance_norm.denormalize(forecast, mean, std)


def build(params: ITransformerParams, shape: DataShape) -> ITransformer:
    return ITransformer(shape.seq_len, shape.pred_len, shape.enc_in, params.d_model, params.n_heads,
                        params.e_layers, params.d_ff, params.dropout, params.activation, params.use_marks)


PLUGIN = ModelPluginEntry(
    name="itransformer",
    description="iTransformer: attention across variate tokens (Liu et al., 2024)",
    params_model=ITransformerParams,
    factory=build,
)
