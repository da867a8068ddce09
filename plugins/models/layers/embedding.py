"""Input embeddings of the long-term-forecasting Transformers (Informer, Autoformer and their successors).

A value embedding (circular 1-D convolution over time), a fixed sinusoidal position embedding, and a
calendar embedding: ``timeF`` (linear map of normalised time features) or ``fixed``/``learned``
(sums of per-field embeddings of month, day, weekday, hour and, for 15-minute data, minute).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tsbench_core.embedding_dims import TIMEF_DIMS


def sinusoid_table(length: int, d_model: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
    return table


class PositionalEmbedding(nn.Module):
    """Fixed sinusoidal positions (not learned; a buffer, so not a parameter)."""

    def __init__(self, d_model: int, max_len: int = 5000) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, d_model)[None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pe[:, : x.shape[1]]


class TokenEmbedding(nn.Module):
    """Value embedding: Conv1d over time, kernel 3, circular padding, no bias."""

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        self.token_conv = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.token_conv.weight, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.token_conv(x.transpose(1, 2)).transpose(1, 2)


class FixedEmbedding(nn.Module):
    """A frozen sinusoidal lookup table (counted as a parameter that does not train)."""

    def __init__(self, c_in: int, d_model: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(c_in, d_model)
        self.emb.weight = nn.Parameter(sinusoid_table(c_in, d_model), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).detach()


class TemporalEmbedding(nn.Module):
    """Sum of calendar-field embeddings; input columns are month, day, weekday, hour[, minute]."""

    FIELDS = (("month", 13), ("day", 32), ("weekday", 7), ("hour", 24))

    def __init__(self, d_model: int, embed_type: str = "fixed", freq: str = "h") -> None:
        super().__init__()
        table = FixedEmbedding if embed_type == "fixed" else nn.Embedding
        self.fields = nn.ModuleDict({name: table(size, d_model) for name, size in self.FIELDS})
        if freq == "t":
            self.fields["minute"] = table(4, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        out = 0
        for column, name in enumerate(self.fields):
            out = out + self.fields[name](x[:, :, column])
        return out


class TimeFeatureEmbedding(nn.Module):
    """Linear map (no bias) of normalised time features (embed="timeF")."""

    def __init__(self, d_model: int, freq: str = "h") -> None:
        super().__init__()
        self.embed = nn.Linear(TIMEF_DIMS[freq], d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


def temporal_embedding(d_model: int, embed: str, freq: str) -> nn.Module:
    return TimeFeatureEmbedding(d_model, freq) if embed == "timeF" else TemporalEmbedding(d_model, embed, freq)


class DataEmbedding(nn.Module):
    """value + position + calendar, then dropout (Informer, vanilla Transformer)."""

    def __init__(self, c_in: int, d_model: int, embed: str = "timeF", freq: str = "h", dropout: float = 0.1,
                 with_position: bool = True) -> None:
        super().__init__()
        self.value_embedding = TokenEmbedding(c_in, d_model)
        self.position_embedding = PositionalEmbedding(d_model) if with_position else None
        self.temporal_embedding = temporal_embedding(d_model, embed, freq)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        out = self.value_embedding(x)
        if self.position_embedding is not None:
            out = out + self.position_embedding(x)
        if x_mark is not None:
            out = out + self.temporal_embedding(x_mark)
        return self.dropout(out)


def data_embedding_without_position(c_in: int, d_model: int, embed: str = "timeF", freq: str = "h",
                                    dropout: float = 0.1) -> DataEmbedding:
    """value + calendar (Autoformer, FEDformer): no position embedding."""
    return DataEmbedding(c_in, d_model, embed, freq, dropout, with_position=False)
