"""DLinear (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023).

The input window is split into a trend (moving average) and a seasonal remainder; each part is mapped from
``seq_len`` to ``pred_len`` steps by a linear layer over time, shared by all channels or one per channel
(``individual``), and the two forecasts are summed. Marks and the decoder input are ignored.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from plugins.models.base import ModelPluginEntry
from plugins.models.layers.decomposition import SeriesDecomposition
from tsbench_core.data import DataShape
from tsbench_core.protocols import PluginParams


class DLinearParams(PluginParams):
    """DLinear options (defaults of the ETTh1 long-term-forecasting script)."""

    moving_avg: int = Field(25, ge=1, description="moving-average window of the trend (odd)")
    individual: bool = Field(False, description="one pair of linear layers per channel, not shared")

    @field_validator("moving_avg")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"moving_avg must be odd so the centred average keeps the length, got {value}")
        return value


def _time_linear(seq_len: int, pred_len: int) -> nn.Linear:
    # starts as a plain average of the window, as in the paper's reference code
    layer = nn.Linear(seq_len, pred_len)
    nn.init.constant_(layer.weight, 1.0 / seq_len)
    return layer


class DLinear(nn.Module):
    """Decomposition + linear forecaster. ``forward(...) -> [B, pred_len, enc_in]``."""

    def __init__(self, seq_len: int, pred_len: int, enc_in: int, moving_avg: int = 25,
                 individual: bool = False) -> None:
        super().__init__()
        self.seq_len, self.pred_len, self.channels = seq_len, pred_len, enc_in
        self.individual = individual
        self.decomposition = SeriesDecomposition(moving_avg)
        if individual:
            self.linear_seasonal = nn.ModuleList(_time_linear(seq_len, pred_len) for _ in range(enc_in))
            self.linear_trend = nn.ModuleList(_time_linear(seq_len, pred_len) for _ in range(enc_in))
        else:
            self.linear_seasonal = _time_linear(seq_len, pred_len)
            self.linear_trend = _time_linear(seq_len, pred_len)

    def _project(self, layers: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # x: [B, C, seq_len] -> [B, C, pred_len]
        if not self.individual:
            return layers(x)
        # slices, not x[:, i]: an integer index exports as a Gather
        return torch.cat([layer(x[:, i : i + 1, :]) for i, layer in enumerate(layers)], dim=1)

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None = None,
                x_dec: torch.Tensor | None = None, x_mark_dec: torch.Tensor | None = None) -> torch.Tensor:
        seasonal, trend = self.decomposition.over_last_dim(x_enc.transpose(1, 2))  # [B, C, seq_len] each
        out = self._project(self.linear_seasonal, seasonal) + self._project(self.linear_trend, trend)
        return out.transpose(1, 2)


def build(params: DLinearParams, shape: DataShape) -> DLinear:
    return DLinear(shape.seq_len, shape.pred_len, shape.enc_in, params.moving_avg, params.individual)


PLUGIN = ModelPluginEntry(
    name="dlinear",
    description="DLinear: trend/seasonal decomposition with linear layers over time (Zeng et al., 2023)",
    params_model=DLinearParams,
    factory=build,
)
