"""The built-in synthetic dataset and the windowed-split mechanics it shares with the file datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from plugins.datasets.synthetic import SyntheticParams, generate, pandas_freq
from tsbench_core.data import Windows
from tsbench_core.registry import load_plugins

W = Windows(48, 24, 24)


def load(**params):
    plugin = load_plugins().datasets["synthetic"]
    return plugin.load(plugin.params_model(**params), W, None)


def test_all_datasets_are_registered() -> None:
    names = set(load_plugins().datasets)
    assert {"synthetic", "csv", "etth1", "etth2", "ettm1", "ettm2", "weather", "electricity", "traffic",
            "exchange", "ili"} <= names


def test_needs_no_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("TSBENCH_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    splits = load(length=600)
    n_train, n_test = int(600 * 0.7), int(600 * 0.2)
    assert len(splits.train) == n_train - 72 + 1
    assert len(splits.val) == (600 - n_test - n_train + 48) - 72 + 1
    assert len(splits.test) == (n_test + 48) - 72 + 1
    assert not any(tmp_path.iterdir())


def test_seeded() -> None:
    a, b = generate(SyntheticParams(seed=3)), generate(SyntheticParams(seed=3))
    assert np.array_equal(a.values, b.values)
    assert not np.allclose(a.values, generate(SyntheticParams(seed=4)).values)


def test_has_the_requested_seasonality() -> None:
    table = generate(SyntheticParams(length=4000, n_vars=3, periods=[24.0], noise=0.05, trend=0.0))
    x = table.values[:, 0] - table.values[:, 0].mean()

    def autocorr(lag: int) -> float:
        return float(np.corrcoef(x[:-lag], x[lag:])[0, 1])

    assert autocorr(24) > 0.9 and autocorr(12) < -0.9


def test_trend_and_noise_params_act() -> None:
    flat = generate(SyntheticParams(length=1000, n_vars=2, periods=[], noise=0.0, trend=0.0)).values
    assert np.allclose(flat, flat[0])  # no components: a constant level
    noisy = generate(SyntheticParams(length=1000, n_vars=2, periods=[], noise=1.0, trend=0.0)).values
    assert 0.8 < noisy[:, 0].std() < 1.2
    drift = generate(SyntheticParams(length=1000, n_vars=2, periods=[], noise=0.0, trend=5.0)).values
    assert not np.allclose(drift[0], drift[-1])


@pytest.mark.parametrize("features,enc_in,c_out", [("M", 5, 5), ("S", 1, 1), ("MS", 5, 1)])
def test_feature_modes(features: str, enc_in: int, c_out: int) -> None:
    splits = load(length=500, n_vars=5, features=features)
    assert (splits.shape.enc_in, splits.shape.dec_in, splits.shape.c_out) == (enc_in, enc_in, c_out)
    batch = splits.train.batch(torch.arange(2))
    assert batch.x_enc.shape == (2, 48, enc_in) and batch.y.shape == (2, 24, c_out)
    assert batch.x_dec.shape == (2, 48, enc_in) and batch.x_mark_dec.shape == (2, 48, 4)
    if features == "MS":  # the forecast is the target, the last input channel
        assert torch.equal(batch.y[0, :, 0], splits.train.series.values[48:72, 4])


def test_scaled_on_train_rows() -> None:
    splits = load(length=800)
    train = splits.train.series.values
    assert torch.allclose(train.mean(0), torch.zeros(7), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(7), atol=1e-4)


def test_params_are_validated() -> None:
    with pytest.raises(ValidationError, match="period"):
        SyntheticParams(periods=[24.0, 1.0])
    with pytest.raises(ValidationError, match="unknown time-feature frequency"):
        SyntheticParams(freq="fortnight")
    with pytest.raises(ValidationError, match="extra"):
        SyntheticParams(lenght=10)
    assert pandas_freq("t") == "15min" and pandas_freq("10min") == "10min" and pandas_freq("h") == "h"


def test_calendar_encoding_and_minute_data() -> None:
    splits = load(length=500, freq="15min").with_time_encoding("calendar")
    assert splits.shape.n_marks_timef == 5 and splits.shape.n_marks_calendar == 5
    marks = splits.train.batch(torch.tensor([0])).x_mark_enc[0]
    # 2016-07-01 00:00, 00:15, 00:30, 00:45, 01:00: month 7, day 1, Friday, hour, quarter of the hour
    assert marks[:5].tolist() == [[7, 1, 4, 0, 0], [7, 1, 4, 0, 1], [7, 1, 4, 0, 2], [7, 1, 4, 0, 3], [7, 1, 4, 1, 0]]


def test_iteration_covers_every_window_once() -> None:
    split = load(length=300).train
    n = len(split)
    assert split.num_batches(32) == -(-n // 32)
    seen = torch.cat([b.x_enc[:, 0, 0] for b in split.iter_batches(32)])
    assert len(seen) == n  # the last partial batch is kept
    assert torch.equal(seen, split.series.values[:n, 0])
    g = torch.Generator().manual_seed(0)
    shuffled = torch.cat([b.x_enc[:, 0, 0] for b in split.iter_batches(32, shuffle=True, generator=g)])
    assert not torch.equal(shuffled, seen)
    assert torch.equal(shuffled.sort().values, seen.sort().values)
    assert sum(len(b.y) for b in split.iter_batches(32, drop_last=True)) == n - n % 32
