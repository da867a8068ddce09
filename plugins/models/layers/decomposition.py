"""Series decomposition into a smooth trend and a seasonal remainder (Autoformer, DLinear).

The trend is a centred moving average; the ends are padded by repeating the first and last time step, so the
output keeps the input length. The pad is a concatenation of expanded edge slices and the average an
``AvgPool1d``, both plain ONNX ops (no ``Pad(mode=edge)``), so the block exports as it trains.
"""

from __future__ import annotations

import torch
from torch import nn


class MovingAverage(nn.Module):
    """Centred moving average over time of ``[B, L, C]`` with edge-repeat padding; ``kernel_size`` odd."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"moving-average kernel size must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size
        self.pad = (kernel_size - 1) // 2
        self.pool = nn.AvgPool1d(kernel_size=kernel_size, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        batch, _, channels = x.shape
        front = x[:, :1, :].expand(batch, self.pad, channels)
        back = x[:, -1:, :].expand(batch, self.pad, channels)
        padded = torch.cat([front, x, back], dim=1)
        return self.pool(padded.transpose(1, 2)).transpose(1, 2)


class SeriesDecomposition(nn.Module):
    """``x -> (seasonal, trend)`` with ``trend = MovingAverage(x)`` and ``seasonal = x - trend``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_avg = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_avg(x)
        return x - trend, trend
