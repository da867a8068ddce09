"""Series decomposition into a smooth trend and a seasonal remainder (Autoformer, DLinear).

The trend is a centred moving average; the ends are padded by repeating the first and last time step, so the
output keeps the input length. Padding and averaging together are one linear map over time, so the average is
computed as a product with a constant ``[L, L]`` matrix (built once per length): the export is a single
``MatMul`` with a constant on the right (as for a Linear layer), no ``Pad(mode=edge)``, ``Expand`` or pooling.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import nn


@lru_cache(maxsize=64)
def moving_average_matrix(length: int, kernel_size: int) -> np.ndarray:
    """``A [L, L]`` with ``(A @ x)[t] = mean(x[clip(t - f, 0, L-1)], ..., x[clip(t + e, 0, L-1)])``: an average
    over a series padded by repeating its end values, ``e = (k - 1) // 2`` steps after and ``f = k - 1 - e``
    before ``t``. Centred (``f = e``) for an odd kernel; for an even one, one step more before, as the FEDformer
    authors' ``moving_avg`` pads."""
    after = (kernel_size - 1) // 2
    before = kernel_size - 1 - after
    rows = np.arange(length)[:, None]
    sources = np.clip(rows + np.arange(-before, after + 1)[None, :], 0, length - 1)  # [L, kernel]
    matrix = np.zeros((length, length), dtype=np.float64)
    np.add.at(matrix, (np.repeat(rows, kernel_size, axis=1), sources), 1.0 / kernel_size)
    return matrix.astype(np.float32)


_MATRICES_T: dict[tuple[int, int], torch.Tensor] = {}


@torch.compiler.assume_constant_result
def _average_matrix_t(length: int, kernel_size: int) -> torch.Tensor:
    # a constant for torch.compile (evaluated once while tracing, not traced into NumPy) and for ONNX export
    key = (length, kernel_size)
    if key not in _MATRICES_T:
        _MATRICES_T[key] = torch.from_numpy(moving_average_matrix(length, kernel_size).T.copy())
    return _MATRICES_T[key]


class MovingAverage(nn.Module):
    """Centred moving average over time of ``[B, L, C]`` with edge-repeat padding; ``kernel_size`` odd."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"moving-average kernel size must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.over_last_dim(x.transpose(1, 2)).transpose(1, 2)

    def over_last_dim(self, x: torch.Tensor) -> torch.Tensor:
        """The same average for series laid out time-last, ``[..., L]``."""
        if self.kernel_size == 1:
            return x
        matrix_t = _average_matrix_t(int(x.shape[-1]), self.kernel_size)
        # constant on the right, like a Linear layer: DeepSparse mis-infers the shape of const[L, L] @ x[B, L, C]
        return torch.matmul(x, matrix_t.to(x.device, x.dtype))


class SeriesDecomposition(nn.Module):
    """``x [B, L, C] -> (seasonal, trend)`` with ``trend = MovingAverage(x)`` and ``seasonal = x - trend``."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.moving_avg = MovingAverage(kernel_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trend = self.moving_avg(x)
        return x - trend, trend

    def over_last_dim(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same split for series laid out time-last, ``[..., L]``."""
        trend = self.moving_avg.over_last_dim(x)
        return x - trend, trend
