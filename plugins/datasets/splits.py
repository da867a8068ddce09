"""From one table of values to ``DatasetSplits``, with the literature's protocol.

Borders split the rows by time into train ``[0, train_end)``, val ``[train_end - seq_len, val_end)`` and test
``[val_end - seq_len, test_end)`` (val/test windows start ``seq_len`` rows before their border, so their first
forecast is the first row after the border). Standard scaling is fitted on the training rows only and applied
to every split. Feature modes: ``M`` (all variables in, all out), ``S`` (target only), ``MS`` (all in, target
out); the target is moved to the last column, so in ``MS`` the forecast is the last channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from plugins.datasets import timefeatures as tf
from tsbench_core.data import DatasetSplits, DataShape, Scaler, SeriesSplit, WindowedSplit, Windows
from tsbench_core.errors import DataError
from tsbench_core.protocols import PluginParams

FeatureMode = Literal["M", "S", "MS"]
FEATURE_MODES = ("M", "S", "MS")


class DatasetParams(PluginParams):
    """Options every dataset plugin shares."""

    features: FeatureMode = Field("M", description="M: all->all, S: target->target, MS: all->target")
    target: str = Field("OT", description="Name of the target column (forecast in S/MS modes)")
    original_scale_metrics: bool = Field(
        False, description="Also report MSE/MAE on the original (unscaled) values of the target columns"
    )


@dataclass(frozen=True)
class Borders:
    """End rows (exclusive) of train, val and test."""

    train_end: int
    val_end: int
    test_end: int

    @classmethod
    def ratios(cls, rows: int, train: float = 0.7, test: float = 0.2) -> Borders:
        """The 70/10/20 protocol: ``int(0.7 n)`` train rows, ``int(0.2 n)`` test rows, val in between."""
        num_train, num_test = int(rows * train), int(rows * test)
        return cls(num_train, rows - num_test, rows)

    def ranges(self, seq_len: int) -> dict[str, tuple[int, int]]:
        return {
            "train": (0, self.train_end),
            "val": (self.train_end - seq_len, self.val_end),
            "test": (self.val_end - seq_len, self.test_end),
        }


@dataclass(frozen=True)
class Table:
    """A loaded series: ``values[rows, columns]`` (finite float64), rows at strictly increasing ``dates``."""

    values: np.ndarray
    columns: tuple[str, ...]
    dates: pd.DatetimeIndex
    source: str  # file path or a description, for error messages


def select_features(
    table: Table, features: str, target: str
) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """Columns for the feature mode (target last) and the indices of the forecast columns."""
    if features not in FEATURE_MODES:
        modes = ", ".join(FEATURE_MODES)
        raise DataError(f"{table.source}: unknown feature mode {features!r}; use one of {modes}")
    if target not in table.columns:
        raise DataError(
            f"{table.source}: target column {target!r} not found (columns: {', '.join(table.columns)}); "
            "set `target` to one of them"
        )
    t = table.columns.index(target)
    if features == "S":
        return table.values[:, [t]], (target,), (0,)
    order = [i for i in range(len(table.columns)) if i != t] + [t]
    columns = tuple(table.columns[i] for i in order)
    n = len(order)
    targets = tuple(range(n)) if features == "M" else (n - 1,)
    return table.values[:, order], columns, targets


def check_borders(borders: Borders, rows: int, windows: Windows, source: str) -> None:
    """Every split must exist inside the table and hold at least one window."""
    if not 0 <= windows.label_len <= windows.seq_len:
        raise DataError(f"label_len ({windows.label_len}) must be between 0 and seq_len ({windows.seq_len})")
    if min(windows.seq_len, windows.pred_len) < 1:
        raise DataError(f"seq_len and pred_len must be positive (got {windows.seq_len}, {windows.pred_len})")
    if not 0 < borders.train_end < borders.val_end < borders.test_end <= rows:
        raise DataError(
            f"{source}: borders train_end={borders.train_end}, val_end={borders.val_end}, "
            f"test_end={borders.test_end} must increase strictly and end within the {rows} rows of the file"
        )
    for name, (begin, end) in borders.ranges(windows.seq_len).items():
        if begin < 0 or end - begin < windows.total:
            raise DataError(
                f"{source}: series too short for seq_len={windows.seq_len} + pred_len={windows.pred_len}: "
                f"the {name} split has rows [{begin}, {end}) of {rows}, which holds no full window; use "
                "shorter windows or a longer series"
            )


def fit_scaler(train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (as sklearn's StandardScaler) of the train rows; constant columns get std 1."""
    mean = train_rows.mean(axis=0)
    std = train_rows.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return mean, std


def build_splits(
    table: Table,
    *,
    windows: Windows,
    borders: Borders,
    features: str,
    target: str,
    freq: str,
    info: dict[str, Any] | None = None,
) -> DatasetSplits:
    """Split, scale on train rows, encode time, and window the table."""
    code = tf.freq_code(freq)
    values, columns, targets = select_features(table, features, target)
    check_borders(borders, len(values), windows, table.source)
    mean, std = fit_scaler(values[: borders.train_end])
    scaled = torch.from_numpy(((values - mean) / std).astype(np.float32))
    timef = torch.from_numpy(tf.timef_marks(table.dates, code))
    calendar = torch.from_numpy(tf.calendar_marks(table.dates, code))

    splits = {}
    for name, (begin, end) in borders.ranges(windows.seq_len).items():
        # contiguous copies, so a split does not keep the whole table alive and gathers stay cache-friendly
        rows = slice(begin, end)
        series = SeriesSplit(
            scaled[rows].contiguous(), targets, timef[rows].contiguous(), calendar[rows].contiguous()
        )
        splits[name] = WindowedSplit(series, windows)

    n = len(columns)
    shape = DataShape(
        enc_in=n, dec_in=n, c_out=len(targets), seq_len=windows.seq_len, label_len=windows.label_len,
        pred_len=windows.pred_len, freq=code, n_marks_timef=tf.n_timef(code),
        n_marks_calendar=tf.n_calendar(code),
    )
    scaler = Scaler(torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(std.astype(np.float32)))
    facts = {
        "source": table.source,
        "rows": len(values),
        "columns": list(columns),
        "target": target,
        "features": features,
        "freq": code,
        "borders": {k: list(v) for k, v in borders.ranges(windows.seq_len).items()},
        "windows": {k: len(s) for k, s in splits.items()},
        **(info or {}),
    }
    return DatasetSplits(splits["train"], splits["val"], splits["test"], shape, scaler, facts)
