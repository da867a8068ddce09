"""Every kind of bad input gives a DataError naming the file, the column and the first bad line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from plugins.datasets.csv_dataset import CsvDataset, CsvParams
from plugins.datasets.reader import read_csv_table
from plugins.datasets.splits import Borders, Table, build_splits
from tsbench_core.data import Windows
from tsbench_core.errors import DataError

SMALL = Windows(8, 4, 4)


def write(tmp_path: Path, rows: int = 60, name: str = "data.csv", **edits) -> Path:
    """A clean hourly file with columns a, b, OT; ``edits`` maps (column) -> {row: raw text}."""
    dates = pd.date_range("2021-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S")
    frame = pd.DataFrame({"date": dates, "a": np.arange(rows) * 1.0, "b": np.sin(np.arange(rows)),
                          "OT": np.cos(np.arange(rows))}).astype(object)
    for column, cells in edits.items():
        for row, text in cells.items():
            frame.loc[row, column] = text
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def load_csv(path: Path, windows: Windows = SMALL, **params):
    return CsvDataset().load(CsvParams(path=str(path), **params), windows, None)


def test_clean_file_loads(tmp_path: Path) -> None:
    splits = load_csv(write(tmp_path))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (42 - 11, 6 + 8 - 11, 12 + 8 - 11)


def test_missing_date_column(tmp_path: Path) -> None:
    path = write(tmp_path)
    with pytest.raises(DataError, match=r"data.csv: date column 'time' not found \(columns: date, a, b, OT\)"):
        load_csv(path, date_column="time")


def test_missing_target_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.csv: target column 'load' not found"):
        load_csv(write(tmp_path), target="load")


def test_missing_selected_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.csv: column\(s\) 'c' not found"):
        load_csv(write(tmp_path), columns=["a", "c"])


def test_non_numeric_cell(tmp_path: Path) -> None:
    path = write(tmp_path, b={7: "n/a?", 20: "x"})
    # data row 7 is on line 9 (header on line 1)
    with pytest.raises(DataError, match=r"data.csv: column 'b', line 9: 'n/a\?' is not a number \(2 non-numeric"):
        load_csv(path)


def test_nan_is_an_error_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, OT={12: ""})
    with pytest.raises(DataError, match=r"data.csv: column 'OT', line 14: value is missing \(NaN\).*fill="):
        load_csv(path)


def test_infinite_value(tmp_path: Path) -> None:
    path = write(tmp_path, a={3: "inf"})
    with pytest.raises(DataError, match=r"column 'a', line 5: value is infinite"):
        load_csv(path)


def test_fill_policies(tmp_path: Path) -> None:
    path = write(tmp_path, a={0: "", 5: "", 6: "inf"})  # a = row index elsewhere
    expected = {
        "ffill": [1.0, 4.0, 4.0],  # leading gap takes the first valid value
        "interpolate": [1.0, 5.0, 6.0],  # linear in the row index, as the original column
        "zero": [0.0, 0.0, 0.0],
    }
    for policy, (row0, row5, row6) in expected.items():
        table = read_csv_table(path, fill=policy)
        a = table.values[:, 0]
        assert (a[0], a[5], a[6]) == (row0, row5, row6), policy
        assert np.isfinite(table.values).all()


def test_bad_and_unsorted_dates(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"column 'date', line 6: 'yesterday' is not a date"):
        load_csv(write(tmp_path, date={4: "yesterday"}))
    unsorted = r"column 'date', line 5: '2021-01-01 03:00:00' does not come after the previous row"
    with pytest.raises(DataError, match=unsorted):
        load_csv(write(tmp_path, date={2: "2021-01-01 05:00:00"}))  # row 3 (line 5) is 03:00


def test_series_too_short(tmp_path: Path) -> None:
    path = write(tmp_path, rows=30)
    with pytest.raises(DataError, match=r"series too short for seq_len=24 \+ pred_len=12: the train split"):
        load_csv(path, windows=Windows(24, 12, 12))
    with pytest.raises(DataError, match=r"must increase strictly and end within the 30 rows"):
        load_csv(path, borders=(20, 25, 40))


def test_checksum_mismatch_of_a_user_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.csv: checksum mismatch: sha256 [0-9a-f]{64}, expected 00ff"):
        load_csv(write(tmp_path), sha256="00ff")


def test_unknown_feature_mode(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="features"):
        CsvParams(path="x.csv", features="MM")  # rejected when the spec is validated
    table = Table(np.zeros((40, 2)), ("a", "OT"), pd.date_range("2021", periods=40, freq="h"), "mem.csv")
    with pytest.raises(DataError, match=r"mem.csv: unknown feature mode 'SM'; use one of M, S, MS"):
        build_splits(table, windows=SMALL, borders=Borders.ratios(40), features="SM", target="OT", freq="h")


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        load_csv(empty)
    header = tmp_path / "header.csv"
    header.write_text("date,a,OT\n")
    with pytest.raises(DataError, match="header.csv: the file has a header but no data rows"):
        load_csv(header)


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file .*nowhere.csv not found; looked in .*--data-dir"):
        load_csv(tmp_path / "nowhere.csv")


def test_mixed_time_zones(tmp_path: Path) -> None:
    path = tmp_path / "tz.csv"
    path.write_text("date,a,OT\n2020-01-01T00:00:00+01:00,1,1\n2020-01-01T01:00:00+02:00,2,2\n")
    with pytest.raises(DataError, match=r"tz.csv: column 'date': the timestamps cannot be read as one time axis"):
        read_csv_table(path)
