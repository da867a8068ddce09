"""Reading a forecasting CSV (a date column plus numeric columns) into a checked ``Table``.

Every problem is a ``DataError`` naming the file, the column and the first bad row (given as the 1-based line
of the file, header = line 1). Missing or infinite values are an error unless a fill policy is chosen:
``ffill`` (previous value; leading gaps take the first valid value), ``interpolate`` (linear in the row index;
edges take the nearest valid value) or ``zero``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from plugins.datasets.splits import Table
from tsbench_core.errors import DataError

FillPolicy = Literal["error", "ffill", "interpolate", "zero"]


def _line(row: int) -> int:
    return row + 2  # data row 0 is on line 2, below the header


def read_csv_table(
    path: Path,
    *,
    date_column: str = "date",
    columns: list[str] | None = None,
    fill: FillPolicy = "error",
) -> Table:
    """Read ``path``; ``columns`` selects value columns (default: every column but the date)."""
    frame = _read(path)
    if date_column not in frame.columns:
        raise DataError(
            f"{path}: date column {date_column!r} not found (columns: {', '.join(map(str, frame.columns))}); "
            "set `date_column` to the column holding the timestamps"
        )
    dates = _dates(path, frame[date_column], date_column)
    names = [str(c) for c in frame.columns if c != date_column] if columns is None else list(columns)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: column(s) {', '.join(map(repr, missing))} not found "
                        f"(columns: {', '.join(map(str, frame.columns))})")
    if not names:
        raise DataError(f"{path}: no value columns besides the date column {date_column!r}")
    values = np.empty((len(frame), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        values[:, j] = _numeric(path, frame[name], name)
    values = _fill(path, values, names, fill)
    return Table(values, tuple(names), dates, str(path))


def _read(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header line and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from None
    if len(frame) == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    return frame


def _dates(path: Path, raw: pd.Series, name: str) -> pd.DatetimeIndex:
    def first_bad(parsed: pd.Series) -> int | None:
        bad = np.flatnonzero(parsed.isna().to_numpy())
        return int(bad[0]) if len(bad) else None

    try:
        parsed = pd.to_datetime(raw, errors="coerce")
        row = first_bad(parsed)
        if row is not None and raw.notna().all():
            # the format is inferred from the first row; rows written differently get a second, per-row chance
            parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
            row = first_bad(parsed)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. mixed time zones
        raise DataError(f"{path}: column {name!r}: the timestamps cannot be read as one time axis ({exc})") from None
    if row is not None:
        raise DataError(
            f"{path}: column {name!r}, line {_line(row)}: {raw.iloc[row]!r} is not a date/time; fix or remove the row"
        )
    dates = pd.DatetimeIndex(parsed)
    steps = np.diff(dates.asi8)
    if len(steps) and (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise DataError(
            f"{path}: column {name!r}, line {_line(row)}: {raw.iloc[row]!r} does not come after the previous "
            f"row ({raw.iloc[row - 1]!r}); rows must be sorted by time without duplicate timestamps"
        )
    return dates


def _numeric(path: Path, raw: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    coerced = pd.to_numeric(raw, errors="coerce")
    text = raw.astype("string").str.strip()
    bad = np.flatnonzero((coerced.isna() & raw.notna() & (text != "")).to_numpy(dtype=bool))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: column {name!r}, line {_line(row)}: {raw.iloc[row]!r} is not a number "
            f"({len(bad)} non-numeric cell(s) in this column); fix the file, or leave the column out with `columns`"
        )
    return coerced.to_numpy(dtype=np.float64, na_value=np.nan)


def _fill(path: Path, values: np.ndarray, names: list[str], fill: str) -> np.ndarray:
    finite = np.isfinite(values)
    if finite.all():
        return values
    if fill == "error":
        j = int(np.flatnonzero(~finite.all(axis=0))[0])
        rows = np.flatnonzero(~finite[:, j])
        kind = "missing (NaN)" if np.isnan(values[rows[0], j]) else "infinite"
        raise DataError(
            f"{path}: column {names[j]!r}, line {_line(int(rows[0]))}: value is {kind} ({len(rows)} non-finite "
            "value(s) in this column); clean the file or choose a fill policy: fill='ffill', "
            "'interpolate' or 'zero'"
        )
    if fill not in ("ffill", "interpolate", "zero"):
        raise DataError(f"unknown fill policy {fill!r}; use 'error', 'ffill', 'interpolate' or 'zero'")
    empty = ~finite.any(axis=0)
    if empty.any():
        name = names[int(np.flatnonzero(empty)[0])]
        raise DataError(f"{path}: column {name!r} has no finite value at all; nothing to fill it from")
    frame = pd.DataFrame(np.where(finite, values, np.nan))
    if fill == "zero":
        frame = frame.fillna(0.0)
    elif fill == "ffill":
        frame = frame.ffill().bfill()
    else:
        frame = frame.interpolate(method="linear", limit_direction="both")
    return frame.to_numpy(dtype=np.float64)
