"""Autoformer (Wu et al., 2021): decomposition architecture with Auto-Correlation.

The decoder starts from the input's decomposition: the seasonal part of the last ``label_len`` steps followed
by zeros, and the trend part followed by the input mean; the forecast is the projected seasonal output plus
the accumulated trend. Layer structure as Time-Series-Library's Autoformer.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field, field_validator
from torch import nn

from plugins.models.base import EncDecParams, ModelPluginEntry, check_shape
from plugins.models.layers.attention import AttentionLayer
from plugins.models.layers.autocorrelation import AutoCorrelation
from plugins.models.layers.decomp_encdec import (
    DecompDecoder,
    DecompDecoderLayer,
    DecompEncoderLayer,
    FixedLengthDecomposition,
    SeasonalLayerNorm,
)
from plugins.models.layers.embedding import DataEmbedding
from plugins.models.layers.series_encoder import Encoder
from tsbench_core.data import DataShape


class DecompParams(EncDecParams):
    """Hyperparameters of the decomposition models (Autoformer, FEDformer)."""

    moving_avg: int = Field(25, ge=1, description="moving-average window of the series decomposition")


class AutoformerParams(DecompParams):
    """Autoformer hyperparameters (ETTh1 defaults)."""

    @field_validator("moving_avg")
    @classmethod
    def _odd(cls, value: int) -> int:
        # the reference pads (k - 1) // 2 steps at each end: an even window would shorten the series
        if value % 2 == 0:
            raise ValueError(f"moving_avg={value} must be odd (a centred window)")
        return value


def decoder_init_matrices(shape: DataShape) -> tuple[torch.Tensor, torch.Tensor]:
    """``[label_len + pred_len, seq_len]`` matrices: ``take_label @ x`` is the last ``label_len`` steps of
    ``x`` followed by zeros; ``mean_future @ x`` is zeros followed by ``pred_len`` copies of the mean."""
    dec_len, start = shape.label_len + shape.pred_len, shape.seq_len - shape.label_len
    take_label = torch.zeros(dec_len, shape.seq_len)
    take_label[torch.arange(shape.label_len), start + torch.arange(shape.label_len)] = 1.0
    mean_future = torch.zeros(dec_len, shape.seq_len)
    mean_future[shape.label_len:] = 1.0 / shape.seq_len
    return take_label, mean_future


class DecompositionForecaster(nn.Module):
    """The decomposition encoder-decoder shared by Autoformer and FEDformer; subclasses supply attentions.

    The decoder's seasonal and trend inits are built from ``x_enc`` (``x_dec`` is not used), so the decoder
    embedding takes ``enc_in`` channels. Autoformer embeds without sinusoidal positions; Time-Series-Library's
    FEDformer adds them (``with_position``; no parameters either way).
    """

    def __init__(self, p: DecompParams, shape: DataShape, encoder_attentions: list[nn.Module],
                 decoder_attentions: list[tuple[nn.Module, nn.Module]], with_position: bool = False) -> None:
        super().__init__()
        self.label_len = shape.label_len
        self.pred_len = shape.pred_len
        self.c_out = shape.c_out
        take_label, mean_future = decoder_init_matrices(shape)
        self.register_buffer("take_label_t", take_label.t().contiguous(), persistent=False)
        self.register_buffer("mean_future_t", mean_future.t().contiguous(), persistent=False)
        self.decomp = FixedLengthDecomposition(p.moving_avg, shape.seq_len)
        self.enc_embedding = DataEmbedding(shape.enc_in, p.d_model, p.embed, shape.freq, p.dropout, with_position)
        self.dec_embedding = DataEmbedding(shape.enc_in, p.d_model, p.embed, shape.freq, p.dropout, with_position)
        self.encoder = Encoder(
            [DecompEncoderLayer(AttentionLayer(inner, p.d_model, p.n_heads), p.d_model, p.d_ff, shape.seq_len,
                                p.moving_avg, p.dropout, p.activation)
             for inner in encoder_attentions],
            norm=SeasonalLayerNorm(p.d_model),
        )
        self.decoder = DecompDecoder(
            [DecompDecoderLayer(AttentionLayer(self_inner, p.d_model, p.n_heads),
                                AttentionLayer(cross_inner, p.d_model, p.n_heads),
                                p.d_model, shape.c_out, p.d_ff, shape.label_len + shape.pred_len, p.moving_avg,
                                p.dropout, p.activation)
             for self_inner, cross_inner in decoder_attentions],
            norm=SeasonalLayerNorm(p.d_model),
            projection=nn.Linear(p.d_model, shape.c_out),
        )

    @staticmethod
    def _over_time(matrix_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``matrix @ x`` over time, written with the constant on the right (DeepSparse computes a constant
        left operand of a batched MatMul wrongly)."""
        return torch.matmul(x.transpose(1, 2), matrix_t).transpose(1, 2)

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor, x_dec: torch.Tensor,
                x_mark_dec: torch.Tensor) -> torch.Tensor:
        # decoder inits as products with constant matrices: exports with static shapes, no Pad/Tile
        seasonal, trend = self.decomp(x_enc)
        trend_init = self._over_time(self.take_label_t, trend) + self._over_time(self.mean_future_t, x_enc)
        trend_init = trend_init[..., -self.c_out:]
        seasonal_init = self._over_time(self.take_label_t, seasonal)
        enc_out = self.encoder(self.enc_embedding(x_enc, x_mark_enc))
        seasonal_part, trend_part = self.decoder(self.dec_embedding(seasonal_init, x_mark_dec), enc_out,
                                                 trend_init)
        return (trend_part + seasonal_part)[:, -self.pred_len:, :]


def build(params: BaseModel, shape: DataShape) -> nn.Module:
    assert isinstance(params, AutoformerParams)
    check_shape("autoformer", shape, params)
    p = params
    return DecompositionForecaster(
        p, shape,
        [AutoCorrelation(p.factor) for _ in range(p.e_layers)],
        [(AutoCorrelation(p.factor), AutoCorrelation(p.factor)) for _ in range(p.d_layers)],
    )


PLUGIN = ModelPluginEntry(
    name="autoformer",
    description="Autoformer: series decomposition and Auto-Correlation (Wu et al., 2021)",
    params_model=AutoformerParams,
    factory=build,
)
