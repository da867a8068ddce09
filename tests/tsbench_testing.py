"""Helpers shared by the top-level tests (a uniquely named module: several conftest.py files exist)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data_dir() -> Path:
    """The real datasets: ``TSBENCH_DATA_DIR`` if set, else ``shared/data`` next to the repository."""
    env = os.environ.get("TSBENCH_DATA_DIR", "").strip()
    return Path(env) if env else SHARED_DATA


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
