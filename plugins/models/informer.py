"""Informer (Zhou et al., 2021): ProbSparse self-attention, self-attention distilling between encoder
layers, and a generative-style decoder that forecasts all ``pred_len`` steps in one forward pass.

Layer structure as Time-Series-Library's Informer: ProbSparse attention for the encoder, the decoder's
masked self-attention and its cross-attention; ``e_layers - 1`` distilling convolutions when ``distil``.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, Field
from torch import nn

from plugins.models.base import EncDecParams, ModelPluginEntry, check_shape
from plugins.models.layers.attention import AttentionLayer
from plugins.models.layers.embedding import DataEmbedding
from plugins.models.layers.encdec import Decoder, DecoderLayer, DistilConv, Encoder, EncoderLayer
from plugins.models.layers.prob_attention import ProbAttention
from tsbench_core.data import DataShape


class InformerParams(EncDecParams):
    """Informer hyperparameters (ETTh1 defaults)."""

    distil: bool = Field(True, description="halve the sequence between encoder layers (distilling conv)")
    sample_seed: int = Field(0, description="seed of the keys sampled by ProbSparse attention at evaluation")


def encoder_lengths(seq_len: int, e_layers: int, distil: bool) -> list[int]:
    """Input length of each encoder layer (distilling shortens it between layers)."""
    lengths = [seq_len]
    for _ in range(e_layers - 1):
        lengths.append(DistilConv.out_length(lengths[-1]) if distil else lengths[-1])
    return lengths


class Informer(nn.Module):
    """Informer; ``forward`` returns ``[B, pred_len, c_out]``."""

    def __init__(self, params: InformerParams, shape: DataShape) -> None:
        super().__init__()
        p = params
        self.pred_len = shape.pred_len
        dec_len = shape.label_len + shape.pred_len
        generator = torch.Generator().manual_seed(p.sample_seed)

        def prob_layer(mask: bool, query_len: int, key_len: int) -> AttentionLayer:
            inner = ProbAttention(mask, p.factor, query_len, key_len, generator=generator)
            return AttentionLayer(inner, p.d_model, p.n_heads)

        lengths = encoder_lengths(shape.seq_len, p.e_layers, p.distil)
        enc_out_len = lengths[-1]  # no distilling after the last layer
        self.enc_embedding = DataEmbedding(shape.enc_in, p.d_model, p.embed, shape.freq, p.dropout)
        self.dec_embedding = DataEmbedding(shape.dec_in, p.d_model, p.embed, shape.freq, p.dropout)
        self.encoder = Encoder(
            [EncoderLayer(prob_layer(False, n, n), p.d_model, p.d_ff, p.dropout, p.activation) for n in lengths],
            [DistilConv(p.d_model) for _ in lengths[1:]] if p.distil else None,
            norm=nn.LayerNorm(p.d_model),
        )
        self.decoder = Decoder(
            [DecoderLayer(prob_layer(True, dec_len, dec_len), prob_layer(False, dec_len, enc_out_len),
                          p.d_model, p.d_ff, p.dropout, p.activation)
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
    assert isinstance(params, InformerParams)
    check_shape("informer", shape, params)
    return Informer(params, shape)


PLUGIN = ModelPluginEntry(
    name="informer",
    description="Informer: ProbSparse self-attention, distilling, generative decoder (Zhou et al., 2021)",
    params_model=InformerParams,
    factory=build,
)
