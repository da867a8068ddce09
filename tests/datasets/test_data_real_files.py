"""The literature protocol on the shared real files, checked against pandas computations made here."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tsbench_core.data import Windows
from tsbench_core.errors import DataError
from tsbench_core.registry import load_plugins

W96 = Windows(96, 48, 96)


@pytest.fixture(scope="module")
def datasets():
    return load_plugins().datasets


def load(datasets, name: str, windows: Windows = W96, **params):
    plugin = datasets[name]
    return plugin.load(plugin.params_model(**params), windows, None)


def scaled_frame(path: Path, train_rows: int, columns: list[str] | None = None):
    """Values scaled with mean/population-std of the first ``train_rows`` rows, and the dates, via pandas."""
    df = pd.read_csv(path)
    values = df.drop(columns="date") if columns is None else df[columns]
    train = values.iloc[:train_rows]
    scaled = ((values - train.mean()) / train.std(ddof=0)).to_numpy()
    return scaled, pd.to_datetime(df["date"]), train


def expect_window(split, index: int, scaled: np.ndarray, begin: int, windows: Windows, targets) -> None:
    """Window ``index`` of ``split`` equals the rows of ``scaled`` starting at absolute row ``begin + index``."""
    b = split.batch(torch.tensor([index]))
    s = begin + index
    seq, lab, pred = windows.seq_len, windows.label_len, windows.pred_len
    np.testing.assert_allclose(b.x_enc[0].numpy(), scaled[s : s + seq], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.x_dec[0, :lab].numpy(), scaled[s + seq - lab : s + seq], rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(b.x_dec[0, lab:]) == 0
    np.testing.assert_allclose(b.y[0].numpy(), scaled[s + seq : s + seq + pred][:, targets], rtol=1e-5, atol=1e-5)


def test_etth1_windows_and_scaler_match_pandas(datasets, data_dir: Path) -> None:
    splits = load(datasets, "etth1")
    # the numbers for 96/48/96
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8449, 2785, 2785)
    path = data_dir / "ETT-small" / "ETTh1.csv"
    scaled, dates, train = scaled_frame(path, 8640)
    np.testing.assert_allclose(splits.scaler.mean.numpy(), train.mean().to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(splits.scaler.std.numpy(), train.std(ddof=0).to_numpy(), rtol=1e-6)
    # fitted on train rows only: the statistics of the whole file are different
    full = pd.read_csv(path).drop(columns="date")
    assert not np.allclose(splits.scaler.mean.numpy(), full.mean().to_numpy(), rtol=1e-3)

    all_columns = list(range(7))
    for split, begin in ((splits.train, 0), (splits.val, 8640 - 96), (splits.test, 11520 - 96)):
        expect_window(split, 0, scaled, begin, W96, all_columns)
        expect_window(split, len(split) - 1, scaled, begin, W96, all_columns)
    # the last test window ends exactly at row 14400 (the 20-month border)
    last = splits.test.batch(torch.tensor([len(splits.test) - 1]))
    assert 11520 - 96 + len(splits.test) - 1 + 192 == 14400
    # its time marks are those of the dates it covers
    hours = dates.iloc[14400 - 96 - 96 : 14400 - 96].dt.hour.to_numpy()
    np.testing.assert_allclose(last.x_mark_enc[0, :, 0].numpy(), hours / 23 - 0.5, atol=1e-6)
    assert splits.info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_etth2_single_variable_and_original_scale(datasets, data_dir: Path) -> None:
    splits = load(datasets, "etth2", features="S", original_scale_metrics=True)
    assert splits.shape.enc_in == splits.shape.c_out == 1
    assert splits.info["original_scale_metrics"] is True
    raw = pd.read_csv(data_dir / "ETT-small" / "ETTh2.csv")["OT"].to_numpy()
    y = splits.test.batch(torch.tensor([0])).y
    restored = splits.scaler.inverse(y, splits.test.series.target_columns)[0, :, 0].numpy()
    np.testing.assert_allclose(restored, raw[11520 : 11520 + 96], rtol=1e-4)


@pytest.mark.parametrize("name,filename,windows", [
    ("exchange", "exchange_rate/exchange_rate.csv", W96),
    ("ili", "illness/national_illness.csv", Windows(36, 18, 24)),
])
def test_ratio_protocol_matches_pandas(datasets, data_dir: Path, name: str, filename: str, windows: Windows) -> None:
    splits = load(datasets, name, windows, features="MS")
    df = pd.read_csv(data_dir / filename)
    n = len(df)
    num_train, num_test = int(n * 0.7), int(n * 0.2)
    val_end = n - num_test
    begins = {"train": 0, "val": num_train - windows.seq_len, "test": val_end - windows.seq_len}
    ends = {"train": num_train, "val": val_end, "test": n}
    # MS: every variable in, the target moved last and forecast alone
    columns = [c for c in df.columns if c not in ("date", "OT")] + ["OT"]
    scaled, _, _ = scaled_frame(data_dir / filename, num_train, columns)
    assert splits.shape.enc_in == len(columns) and splits.shape.c_out == 1
    for key in ("train", "val", "test"):
        split = getattr(splits, key)
        assert len(split) == ends[key] - begins[key] - windows.seq_len - windows.pred_len + 1
        expect_window(split, 0, scaled, begins[key], windows, [len(columns) - 1])
        expect_window(split, len(split) - 1, scaled, begins[key], windows, [len(columns) - 1])


def test_literature_window_counts(datasets, data_dir: Path) -> None:
    # published Time-Series-Library logs: exchange 96/48/96 -> 5120/665/1422; ILI 36/18/24 -> 617/74/170
    ex = load(datasets, "exchange")
    assert (len(ex.train), len(ex.val), len(ex.test)) == (5120, 665, 1422)
    ili = load(datasets, "ili", Windows(36, 18, 24))
    assert (len(ili.train), len(ili.val), len(ili.test)) == (617, 74, 170)


def test_file_found_through_argument_and_param(datasets, data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("TSBENCH_DATA_DIR")
    plugin = datasets["etth1"]
    splits = plugin.load(plugin.params_model(), W96, data_dir)  # sub-folder ETT-small/ found
    assert splits.info["file"] == str(data_dir / "ETT-small" / "ETTh1.csv")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "ETTh1.csv").write_bytes((data_dir / "ETT-small" / "ETTh1.csv").read_bytes())
    splits = plugin.load(plugin.params_model(data_dir=str(other)), W96, data_dir)  # the param wins
    assert splits.info["file"] == str(other / "ETTh1.csv")


def test_changed_known_file_is_refused_unless_verify_off(datasets, data_dir: Path, tmp_path: Path) -> None:
    text = (data_dir / "ETT-small" / "ETTh1.csv").read_text()
    (tmp_path / "ETTh1.csv").write_text(text.replace("30.5310001373291", "30.5"))
    plugin = datasets["etth1"]
    with pytest.raises(DataError, match=r"ETTh1.csv: checksum mismatch.*verify=false"):
        plugin.load(plugin.params_model(data_dir=str(tmp_path)), W96, None)
    splits = plugin.load(plugin.params_model(data_dir=str(tmp_path), verify=False), W96, None)
    assert len(splits.train) == 8449


def test_csv_plugin_reads_a_shared_file_like_the_named_one(datasets, data_dir: Path) -> None:
    named = load(datasets, "exchange")
    generic = load(datasets, "csv", path=str(data_dir / "exchange_rate" / "exchange_rate.csv"))
    assert torch.equal(named.test.series.values, generic.test.series.values)
    assert torch.equal(named.train.series.marks_timef, generic.train.series.marks_timef)
    explicit = load(datasets, "csv", path="ETT-small/ETTh1.csv", borders=(8640, 11520, 14400))
    assert (len(explicit.train), len(explicit.val), len(explicit.test)) == (8449, 2785, 2785)
