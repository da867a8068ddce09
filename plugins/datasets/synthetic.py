"""``synthetic``: a seeded multivariate series (trend + seasonalities + noise) that needs no data files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from plugins.datasets import timefeatures as tf
from plugins.datasets.splits import Borders, DatasetParams, Table, build_splits
from tsbench_core.data import DatasetSplits, Windows
from tsbench_core.protocols import DataLayout

_UNIT = {"s": "s", "t": "min", "h": "h", "d": "D", "b": "B", "w": "W", "m": "MS"}


def pandas_freq(freq: str) -> str:
    """The pandas offset for a frequency code or alias: ``"h"`` -> ``"h"``, ``"t"`` -> ``"15min"``,
    ``"10min"`` -> ``"10min"``."""
    code = tf.freq_code(freq)
    digits = re.match(r"\s*(\d*)", freq).group(1)
    return f"{digits}{_UNIT[code]}" if digits else tf.PANDAS_FREQ[code]


class SyntheticParams(DatasetParams):
    length: int = Field(2000, ge=16, description="Number of time steps")
    n_vars: int = Field(7, ge=1, description="Number of variables; the last one is the target 'OT'")
    periods: list[float] = Field([24.0, 168.0], description="Seasonal periods, in steps")
    noise: float = Field(0.1, ge=0, description="Standard deviation of the Gaussian noise")
    trend: float = Field(1.0, ge=0, description="Typical size of each variable's drift over the series")
    seed: int = Field(0, description="Seed of the generator: the same params give the same series")
    freq: tf.Freq = Field("h", description="Sampling frequency: h, t (15 min), d... or a pandas alias ('10min')")
    start: str = Field("2016-07-01", description="Timestamp of the first step")

    @field_validator("periods")
    @classmethod
    def _periods(cls, value: list[float]) -> list[float]:
        if any(p <= 1 for p in value):
            raise ValueError("every period must be greater than 1 step")
        return value


    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        try:
            pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a timestamp: {value!r} ({exc})") from None
        return value


def column_names(n_vars: int) -> tuple[str, ...]:
    return (*(f"v{i}" for i in range(n_vars - 1)), "OT")


def generate(params: SyntheticParams) -> Table:
    """The series of ``params``: per variable a level, a linear drift, a sine per period with its own
    amplitude and phase, and white noise; the target also follows the mean of the other variables."""
    rng = np.random.default_rng(params.seed)
    n, v = params.length, params.n_vars
    t = np.arange(n, dtype=np.float64)[:, None]
    level = rng.normal(0.0, 1.0, size=v)
    slope = rng.uniform(-1.0, 1.0, size=v) * params.trend / n
    values = level + slope * t
    for k, period in enumerate(params.periods):
        amplitude = rng.uniform(0.5, 1.5, size=v) / (k + 1)
        phase = rng.uniform(0.0, 2 * np.pi, size=v)
        values = values + amplitude * np.sin(2 * np.pi * t / period + phase)
    values = values + rng.normal(0.0, params.noise, size=(n, v)) if params.noise > 0 else values
    if v > 1:
        values[:, -1] += 0.5 * values[:, :-1].mean(axis=1)
    dates = pd.date_range(pd.Timestamp(params.start), periods=n, freq=pandas_freq(params.freq))
    return Table(values, column_names(v), dates, f"synthetic(seed={params.seed})")


class SyntheticDataset:
    name = "synthetic"
    description = "Seeded multivariate series (trend + seasonalities + noise); no download, 70/10/20 split"
    params_model = SyntheticParams

    def layout(self, params: BaseModel) -> DataLayout:
        p = params if isinstance(params, SyntheticParams) else SyntheticParams.model_validate(params)
        return DataLayout(p.n_vars, p.features, tf.freq_code(p.freq))

    def load(self, params: BaseModel, windows: Windows, data_dir: Path | None = None) -> DatasetSplits:
        p = params if isinstance(params, SyntheticParams) else SyntheticParams.model_validate(params)
        table = generate(p)
        return build_splits(
            table,
            windows=windows,
            borders=Borders.ratios(len(table.values)),
            features=p.features,
            target=p.target,
            freq=p.freq,
            info={"dataset": self.name, "original_scale_metrics": p.original_scale_metrics},
        )


PLUGINS = (SyntheticDataset(),)
