"""The vanilla Transformer (Vaswani et al., 2017) as used for long-term forecasting (Zhou et al., 2021;
Time-Series-Library): full attention encoder, causal decoder over ``label_len`` known steps plus ``pred_len``
placeholders, linear output projection."""

from __future__ import annotations

import torch
from pydantic import BaseModel
from torch import nn

from plugins.models.base import EncDecParams, ModelPluginEntry, check_shape
from plugins.models.layers.attention import AttentionLayer, FullAttention
from plugins.models.layers.embedding import DataEmbedding
from plugins.models.layers.encdec import Decoder, DecoderLayer, Encoder, EncoderLayer
from tsbench_core.data import DataShape


class TransformerParams(EncDecParams):
    """Vanilla Transformer hyperparameters (ETTh1 defaults)."""


class Transformer(nn.Module):
    """Encoder-decoder Transformer; ``forward`` returns ``[B, pred_len, c_out]``."""

    def __init__(self, params: TransformerParams, shape: DataShape) -> None:
        super().__init__()
        p = params
        self.pred_len = shape.pred_len
        self.enc_embedding = DataEmbedding(shape.enc_in, p.d_model, p.embed, shape.freq, p.dropout)
        self.dec_embedding = DataEmbedding(shape.dec_in, p.d_model, p.embed, shape.freq, p.dropout)

        def attention(causal: bool) -> AttentionLayer:
            return AttentionLayer(FullAttention(causal, attention_dropout=p.dropout), p.d_model, p.n_heads)

        self.encoder = Encoder(
            [EncoderLayer(attention(False), p.d_model, p.d_ff, p.dropout, p.activation)
             for _ in range(p.e_layers)],
            norm=nn.LayerNorm(p.d_model),
        )
        self.decoder = Decoder(
            [DecoderLayer(attention(True), attention(False), p.d_model, p.d_ff, p.dropout, p.activation)
             for _ in range(p.d_layers)],
            norm=nn.LayerNorm(p.d_model),
            projection=nn.Linear(p.d_model, shape.c_out),
        )

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor, x_dec: torch.Tensor,
                x_mark_dec: torch.Tensor) -> torch.Tensor:
        enc_out = self.encoder(self.enc_embedding(x_enc, x_mark_enc))
        dec_out = self.decoder(self.dec_embedding(x_dec, x_mark_dec), enc_out)
        return dec_out[:, -self.pred_len:, :]


def build(params: BaseModel, shape: DataShape) -> nn.Module:
    assert isinstance(params, TransformerParams)
    check_shape("transformer", shape, params)
    return Transformer(params, shape)


PLUGIN = ModelPluginEntry(
    name="transformer",
    description="Vanilla encoder-decoder Transformer (Vaswani et al., 2017) for long-term forecasting",
    params_model=TransformerParams,
    factory=build,
)
