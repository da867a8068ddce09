"""Calendar marks of a series, in the two encodings the long-term-forecasting models use.

``timeF`` (``embed="timeF"``): per frequency code, a fixed list of calendar fields each mapped linearly to
[-0.5, 0.5] — the encodings of Informer/Autoformer/Time-Series-Library. ``calendar`` (``embed="fixed"`` or
``"learned"``): the integer fields month, day, weekday, hour and, for minute data (``t``), minute // 15.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import AfterValidator

from tsbench_core.errors import DataError

Encoder = Callable[[pd.DatetimeIndex], np.ndarray]

# each field: (raw value, divisor); the feature is raw / divisor - 0.5
_FIELDS: dict[str, Callable[[pd.DatetimeIndex], tuple[np.ndarray, float]]] = {
    "second": lambda d: (d.second.to_numpy(), 59.0),
    "minute": lambda d: (d.minute.to_numpy(), 59.0),
    "hour": lambda d: (d.hour.to_numpy(), 23.0),
    "weekday": lambda d: (d.dayofweek.to_numpy(), 6.0),
    "monthday": lambda d: (d.day.to_numpy() - 1, 30.0),
    "yearday": lambda d: (d.dayofyear.to_numpy() - 1, 365.0),
    "month": lambda d: (d.month.to_numpy() - 1, 11.0),
    "week": lambda d: (d.isocalendar().week.to_numpy().astype(np.int64) - 1, 52.0),
}

# frequency code -> timeF fields, in the literature's column order
TIMEF_FIELDS: dict[str, tuple[str, ...]] = {
    "s": ("second", "minute", "hour", "weekday", "monthday", "yearday"),
    "t": ("minute", "hour", "weekday", "monthday", "yearday"),
    "h": ("hour", "weekday", "monthday", "yearday"),
    "d": ("weekday", "monthday", "yearday"),
    "b": ("weekday", "monthday", "yearday"),
    "w": ("monthday", "week"),
    "m": ("month",),
}
FREQ_CODES = tuple(TIMEF_FIELDS)

# pandas offset aliases (and the literature's codes) -> frequency code
_ALIASES = {
    "s": "s", "S": "s", "sec": "s",
    "t": "t", "T": "t", "min": "t",
    "h": "h", "H": "h",
    "d": "d", "D": "d",
    "b": "b", "B": "b",
    "w": "w", "W": "w",
    "m": "m", "M": "m", "MS": "m", "ME": "m",
}
# frequency code -> the pandas offset used when a series is generated at that code
PANDAS_FREQ = {"s": "s", "t": "15min", "h": "h", "d": "D", "b": "B", "w": "W", "m": "MS"}


def freq_code(freq: str) -> str:
    """Map ``"h"``, ``"15min"``, ``"T"``, ``"D"``, ``"W-SUN"``... to one of ``FREQ_CODES``."""
    match = re.fullmatch(r"\s*\d*\s*([A-Za-z]+)(?:-[A-Za-z]+)?\s*", freq)
    code = _ALIASES.get(match.group(1)) if match else None
    if code is None:
        raise DataError(
            f"unknown time-feature frequency {freq!r}: use one of {', '.join(FREQ_CODES)} "
            "(seconds, minutes, hours, days, business days, weeks, months) or a pandas alias like '15min'"
        )
    return code


def _valid_freq(value: str) -> str:
    try:
        freq_code(value)
    except DataError as exc:
        raise ValueError(str(exc)) from None
    return value


# A params field holding a frequency code or pandas alias, rejected at validation time when unknown.
Freq = Annotated[str, AfterValidator(_valid_freq)]


def n_timef(freq: str) -> int:
    return len(TIMEF_FIELDS[freq_code(freq)])


def n_calendar(freq: str) -> int:
    return 5 if freq_code(freq) == "t" else 4


def timef_marks(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """``[rows, n_timef(freq)]`` float32 features in [-0.5, 0.5]."""
    columns = []
    for name in TIMEF_FIELDS[freq_code(freq)]:
        raw, divisor = _FIELDS[name](dates)
        columns.append(raw.astype(np.float64) / divisor - 0.5)
    return np.stack(columns, axis=1).astype(np.float32)


def calendar_marks(dates: pd.DatetimeIndex, freq: str) -> np.ndarray:
    """``[rows, n_calendar(freq)]`` float32 integer fields: month, day, weekday, hour[, minute // 15]."""
    columns = [dates.month, dates.day, dates.dayofweek, dates.hour]
    if freq_code(freq) == "t":
        columns.append(dates.minute // 15)
    return np.stack([np.asarray(c) for c in columns], axis=1).astype(np.float32)
