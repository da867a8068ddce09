"""Fixtures shared by the model tests: real ETTh1 windows (skipped only when the shared data is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tsbench_testing import shared_data_dir

from tsbench_core.data import Batch, Windows


def _data_dir() -> Path:
    return shared_data_dir()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster than two contending
    ones (OpenMP workers spin); restored afterwards so timing tests elsewhere see the default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def etth1_test_batch() -> Batch:
    """Eight ETTh1 test windows, 96 -> 96 with label_len 48, normalised time features (embed=timeF)."""
    folder = _data_dir()
    if not (folder / "ETT-small" / "ETTh1.csv").is_file() and not (folder / "ETTh1.csv").is_file():
        pytest.skip(f"shared data folder {folder} has no ETTh1.csv (set TSBENCH_DATA_DIR)")
    from tsbench_core.registry import load_plugins

    plugin = load_plugins().datasets["etth1"]
    splits = plugin.load(plugin.params_model(), Windows(96, 48, 96), folder)
    return next(splits.test.iter_batches(8))
