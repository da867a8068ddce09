"""Data-pipeline speed: loading + windowing ETTh1, and one epoch of batches vs ``torch.utils.data.DataLoader``.

Run: ``.venv/bin/pytest benchmarks/bench_data.py --benchmark-group-by=group``. The batch benchmarks use a
synthetic series of ETTh1's size (no data needed) and one torch thread, as a training loop on 2 cores would.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tsbench_core.data import WindowedSplit, Windows
from tsbench_core.registry import load_plugins

WINDOWS = Windows(96, 48, 96)
BATCH = 32
DATA = Path(os.environ.get("TSBENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(scope="module")
def plugins():
    return load_plugins().datasets


@pytest.fixture(scope="module")
def train_split(plugins) -> WindowedSplit:
    plugin = plugins["synthetic"]
    return plugin.load(plugin.params_model(length=17420, n_vars=7), WINDOWS, None).train


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class WindowDataset(torch.utils.data.Dataset):
    """The usual map-style dataset: one window per ``__getitem__``, the decoder input built per batch."""

    def __init__(self, split: WindowedSplit) -> None:
        self.values, self.marks, self.w = split.series.values, split.series.marks_timef, split.windows
        self.n = len(split)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        w = self.w
        end, dec = i + w.seq_len, i + w.seq_len - w.label_len
        stop = end + w.pred_len
        return self.values[i:end], self.values[dec:stop], self.marks[i:end], self.marks[dec:stop]


def epoch_tsbench(split: WindowedSplit) -> int:
    count = 0
    for batch in split.iter_batches(BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)):
        count += len(batch.y)
    return count


def epoch_dataloader(loader: torch.utils.data.DataLoader, label_len: int) -> int:
    count = 0
    for _x_enc, seq_y, _x_mark, _y_mark in loader:
        x_dec = torch.cat([seq_y[:, :label_len], torch.zeros_like(seq_y[:, label_len:])], dim=1)
        count += len(x_dec)
    return count


@pytest.mark.benchmark(group="epoch of batches (ETTh1-sized train split, batch 32, shuffled)")
def test_epoch_tsbench_iterator(benchmark, train_split: WindowedSplit) -> None:
    assert benchmark(epoch_tsbench, train_split) == len(train_split)


@pytest.mark.benchmark(group="epoch of batches (ETTh1-sized train split, batch 32, shuffled)")
def test_epoch_torch_dataloader(benchmark, train_split: WindowedSplit) -> None:
    loader = torch.utils.data.DataLoader(WindowDataset(train_split), batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    assert benchmark(epoch_dataloader, loader, WINDOWS.label_len) == len(train_split)


@pytest.mark.benchmark(group="load + window")
def test_load_etth1(benchmark, plugins) -> None:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent (set TSBENCH_DATA_DIR)")
    plugin = plugins["etth1"]
    splits = benchmark(plugin.load, plugin.params_model(data_dir=str(DATA)), WINDOWS, None)
    assert len(splits.train) == 8449


@pytest.mark.benchmark(group="load + window")
def test_generate_synthetic_quickstart(benchmark, plugins) -> None:
    plugin = plugins["synthetic"]
    splits = benchmark(plugin.load, plugin.params_model(), WINDOWS, None)
    assert len(splits.test) > 0
