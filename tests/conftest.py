"""Fixtures shared by the whole suite: a tiny spec that runs in seconds, the real-data folder, the registry."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
# the host-wide timing lock of this test session only: other sessions' runs on this machine do not hold it up
os.environ.setdefault("TSBENCH_LOCK_DIR", tempfile.mkdtemp(prefix="tsbench-test-locks-"))
# hardware rules probed by the tests (DeepSparse FFN widths) go to a fresh folder, not the user's cache
os.environ.setdefault("TSBENCH_HARDWARE_CACHE", tempfile.mkdtemp(prefix="tsbench-test-hardware-"))

from tsbench_testing import shared_data_dir


@pytest.fixture(scope="session")
def registry():
    from tsbench_core.registry import load_plugins

    return load_plugins()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests that need them skip only when the folder is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set TSBENCH_DATA_DIR)")
    return path


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(spec: dict[str, Any] | str, filename: str = "spec.json") -> Path:
        path = tmp_path / filename
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        return path

    return write
