"""Fixtures of the dataset tests: the shared real data (skipped only when absent) and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from tsbench_testing import shared_data_dir


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty download cache; nothing is written to the user's home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TSBENCH_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared folder with ETTh1/ETTh2/exchange_rate/national_illness; the tests using it skip only when the
    folder does not exist."""
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent (set TSBENCH_DATA_DIR)")
    monkeypatch.setenv("TSBENCH_DATA_DIR", str(folder))
    return folder
