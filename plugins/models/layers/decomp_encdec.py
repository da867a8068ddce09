"""Encoder/decoder with progressive series decomposition (Autoformer, FEDformer).

Each sub-layer's output is split into a seasonal part (kept) and a trend part (dropped in the encoder,
accumulated and projected in the decoder). Inner attentions follow ``layers.attention``'s interface.
"""

from __future__ import annotations

import torch
from torch import nn

from plugins.models.layers.decomposition import moving_average_matrix
from plugins.models.layers.encdec import FeedForward


class FixedLengthDecomposition(nn.Module):
    """Series decomposition (moving average with edge-repeat padding, centred for an odd kernel; an even one
    as ``moving_average_matrix`` says) of ``[B, length, C]`` series.

    For odd kernels the same function as ``layers.decomposition.SeriesDecomposition``, for a length known when
    the model is built: the averaging matrix is a (non-persistent) buffer, so every instance owns its constant — what
    ``torch.compile`` needs in models with many decompositions — and the export is a ``MatMul`` with a constant
    right operand.
    """

    def __init__(self, kernel_size: int, length: int) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"moving-average kernel size must be positive, got {kernel_size}")
        matrix = torch.from_numpy(moving_average_matrix(length, kernel_size).T.copy())
        self.register_buffer("average_t", matrix, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = torch.matmul(x.transpose(1, 2), self.average_t).transpose(1, 2)
        return x - trend, trend


class SeasonalLayerNorm(nn.Module):
    """LayerNorm over channels, then the mean over time removed (the seasonal part has no level)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.layernorm(x)
        return x_hat - x_hat.mean(dim=1, keepdim=True)


class DecompEncoderLayer(nn.Module):
    """Attention and a bias-free feed-forward network, each followed by a series decomposition."""

    def __init__(self, attention: nn.Module, d_model: int, d_ff: int, length: int, moving_avg: int = 25,
                 dropout: float = 0.1, activation: str = "gelu") -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation, bias=False)
        self.decomp1 = FixedLengthDecomposition(moving_avg, length)
        self.decomp2 = FixedLengthDecomposition(moving_avg, length)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.decomp1(x + self.dropout(self.attention(x, x, x, None)[0]))
        x, _ = self.decomp2(x + self.feed_forward(x))
        return x


class DecompDecoderLayer(nn.Module):
    """Self-attention, cross-attention and feed-forward, each followed by a decomposition; the three trend
    parts are summed and projected to ``c_out`` channels by a circular kernel-3 convolution."""

    def __init__(self, self_attention: nn.Module, cross_attention: nn.Module, d_model: int, c_out: int,
                 d_ff: int, length: int, moving_avg: int = 25, dropout: float = 0.1,
                 activation: str = "gelu") -> None:
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation, bias=False)
        self.decomp1 = FixedLengthDecomposition(moving_avg, length)
        self.decomp2 = FixedLengthDecomposition(moving_avg, length)
        self.decomp3 = FixedLengthDecomposition(moving_avg, length)
        self.dropout = nn.Dropout(dropout)
        self.trend_projection = nn.Conv1d(d_model, c_out, kernel_size=3, padding=1, padding_mode="circular",
                                          bias=False)

    def forward(self, x: torch.Tensor, cross: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, trend1 = self.decomp1(x + self.dropout(self.self_attention(x, x, x, None)[0]))
        x, trend2 = self.decomp2(x + self.dropout(self.cross_attention(x, cross, cross, None)[0]))
        x, trend3 = self.decomp3(x + self.feed_forward(x))
        trend = self.trend_projection((trend1 + trend2 + trend3).transpose(1, 2)).transpose(1, 2)
        return x, trend


class DecompDecoder(nn.Module):
    """Decoder layers accumulating the trend; the seasonal part is normalised and projected."""

    def __init__(self, layers: list[nn.Module], norm: nn.Module | None = None,
                 projection: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.projection = projection

    def forward(self, x: torch.Tensor, cross: torch.Tensor, trend: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x, residual_trend = layer(x, cross)
            trend = trend + residual_trend
        if self.norm is not None:
            x = self.norm(x)
        if self.projection is not None:
            x = self.projection(x)
        return x, trend
