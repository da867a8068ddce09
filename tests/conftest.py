"""Fixtures shared by the whole suite: a tiny spec that runs in seconds, the real-data folder, the registry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def registry():
    from tsbench_core.registry import load_plugins

    return load_plugins()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests that need them skip only when the folder is absent."""
    path = Path(os.environ.get("TSBENCH_DATA_DIR", SHARED_DATA))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path} (set TSBENCH_DATA_DIR)")
    return path


def tiny_spec(name: str = "tiny", sparsities: list[float] | None = None, **overrides: Any) -> dict[str, Any]:
    """A spec that trains and times in a few seconds: synthetic data, a small DLinear, torch eager."""
    spec: dict[str, Any] = {
        "name": name,
        "datasets": [{"plugin": "synthetic", "params": {"length": 400, "n_vars": 2, "periods": [12]},
                      "seq_len": 16, "label_len": 8, "pred_len": [8]}],
        "models": [{"plugin": "dlinear"}],
        "training": {"epochs": 1, "batch_size": 16, "lr": 0.001, "max_train_batches": 4},
        "pruning": [{"pruner": "magnitude", "sparsities": sparsities or [0.5]}],
        "runtimes": [{"plugin": "torch-eager"}],
        "timing": {"batch_sizes": [4], "warmup": 1, "repeats": 2, "threads": 1},
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(spec: dict[str, Any] | str, filename: str = "spec.json") -> Path:
        path = tmp_path / filename
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
        return path

    return write
