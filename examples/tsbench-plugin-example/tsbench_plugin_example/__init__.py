"""An example tsbench plugin package: a model and a dataset, registered through the ``tsbench`` hooks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from tsbench_core import hookimpl
from tsbench_core.data import DatasetSplits, DataShape, Scaler, SeriesSplit, WindowedSplit, Windows
from tsbench_core.errors import DataError
from tsbench_core.protocols import DataLayout, PluginParams


class SeasonalLinearParams(PluginParams):
    individual: bool = Field(False, description="one linear map per channel instead of a shared one")


class SeasonalLinear(nn.Module):
    """Forecast = linear map of the history (per channel), relative to the last observed value."""

    def __init__(self, seq_len: int, pred_len: int, channels: int, individual: bool) -> None:
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(seq_len, pred_len) for _ in range(channels if individual else 1))

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):  # noqa: ANN001 - the tsbench model signature
        last = x_enc[:, -1:, :]
        history = (x_enc - last).transpose(1, 2)  # B C L
        if len(self.maps) == 1:
            out = self.maps[0](history)
        else:
            out = torch.stack([m(history[:, i]) for i, m in enumerate(self.maps)], dim=1)
        return out.transpose(1, 2) + last


class SeasonalLinearPlugin:
    name = "seasonal-linear"
    description = "Example: a linear map from history to horizon relative to the last value"
    params_model = SeasonalLinearParams

    def build(self, params: SeasonalLinearParams, shape: DataShape) -> nn.Module:
        return SeasonalLinear(shape.seq_len, shape.pred_len, shape.enc_in, params.individual)


class RandomWalkParams(PluginParams):
    length: int = Field(1000, ge=10)
    n_vars: int = Field(3, ge=1)
    seed: int = 0


class RandomWalkDataset:
    name = "random-walk"
    description = "Example: seeded Gaussian random walks, 70/10/20 split, no time features"
    params_model = RandomWalkParams

    def layout(self, params: RandomWalkParams) -> DataLayout:
        """Optional (``DeclaresLayout``): the channels, so spec checks build models at this width."""
        return DataLayout(n_vars=params.n_vars)

    def load(self, params: RandomWalkParams, windows: Windows, data_dir: Path | None) -> DatasetSplits:
        g = torch.Generator().manual_seed(params.seed)
        values = torch.cumsum(torch.randn(params.length, params.n_vars, generator=g), dim=0)
        n_train, n_test = int(params.length * 0.7), int(params.length * 0.2)
        n_val = params.length - n_train - n_test
        if n_test + windows.seq_len < windows.total:
            raise DataError(f"random-walk: length {params.length} is too short for {windows}")
        mean, std = values[:n_train].mean(0), values[:n_train].std(0)
        scaled = (values - mean) / std
        borders = [(0, n_train), (n_train - windows.seq_len, n_train + n_val),
                   (params.length - n_test - windows.seq_len, params.length)]
        columns = tuple(range(params.n_vars))

        def split(begin: int, end: int) -> WindowedSplit:
            rows = end - begin
            series = SeriesSplit(scaled[begin:end].contiguous(), columns, torch.zeros(rows, 4), torch.zeros(rows, 4))
            return WindowedSplit(series, windows)

        train, val, test = (split(b, e) for b, e in borders)
        shape = DataShape(params.n_vars, params.n_vars, params.n_vars, windows.seq_len, windows.label_len,
                          windows.pred_len)
        return DatasetSplits(train, val, test, shape, Scaler(mean, std), info={"dataset": self.name})


@hookimpl
def tsbench_register_models(register: Callable[[Any], None]) -> None:
    register(SeasonalLinearPlugin())


@hookimpl
def tsbench_register_datasets(register: Callable[[Any], None]) -> None:
    register(RandomWalkDataset())
