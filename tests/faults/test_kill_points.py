"""SIGKILL at the exact points random kills rarely hit: inside a row's transaction, half-way through writing a
checkpoint, between a checkpoint and its sidecar. What was stored before is intact; what was being written
is absent (never half there), and the next run rebuilds it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest
import torch
from fault_helpers import driver_env, integrity

from tsbench_core.steps.artifacts import find_artifact, save_artifact, usable_artifact
from tsbench_core.store import Store

KILL_IN_TRANSACTION = """
import os, signal, sys
from tsbench_core.store import Store
store = Store(sys.argv[1])
store._conn.execute("BEGIN IMMEDIATE")
store._conn.execute("INSERT OR REPLACE INTO cells (cell_key, status, error) VALUES ('k1', 'failed', 'half')")
store._conn.execute("INSERT INTO cells (cell_key, status) VALUES ('k2', 'ok')")
os.kill(os.getpid(), signal.SIGKILL)  # before COMMIT
"""

KILL_IN_ARTIFACT = """
import os, signal, sys
from pathlib import Path
import torch
import tsbench_core.steps.artifacts as artifacts
where = sys.argv[2]
real = artifacts.atomic_write

def dying(path, data):
    if where == "mid-weights" and path.suffix == ".pt":  # the temporary file half written, then killed
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "before-sidecar" and path.suffix == ".json":
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)

artifacts.atomic_write = dying
artifacts.save_artifact(Path(sys.argv[1]), "k", {"w": torch.zeros(64, 64)}, {"kind": "dense"})
"""


def run_child(script: str, *args: str, tmp_path) -> int:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=driver_env(tmp_path / "l"),
                          capture_output=True, text=True, timeout=120)
    return done.returncode


def test_a_sigkill_inside_a_row_transaction_loses_that_write_only(tmp_path):
    db = tmp_path / "r.db"
    with Store(db) as store:
        store.put({"cell_key": "k1", "status": "ok", "error": None, "mse": 0.5})
    assert run_child(KILL_IN_TRANSACTION, str(db), tmp_path=tmp_path) == -9
    assert integrity(db) == "ok"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT cell_key, status, mse FROM cells").fetchall() == [("k1", "ok", 0.5)]
    with Store(db) as store:  # and the store takes writes again
        store.put({"cell_key": "k2", "status": "ok"})
        assert {r["cell_key"] for r in store.rows()} == {"k1", "k2"}


@pytest.mark.parametrize("where", ["mid-weights", "before-sidecar"])
def test_a_sigkill_while_writing_a_checkpoint_leaves_no_usable_half(tmp_path, where):
    old = save_artifact(tmp_path, "old", {"w": torch.ones(8)}, {"kind": "dense"})
    assert run_child(KILL_IN_ARTIFACT, str(tmp_path), where, tmp_path=tmp_path) == -9
    assert find_artifact(tmp_path, "k") is None  # no sidecar, no artifact: its step runs again
    if where == "mid-weights":
        assert not (tmp_path / "k.pt").exists()  # only a hidden temporary file, never the .pt itself
    assert usable_artifact(tmp_path, "old") is not None and old.weights.read_bytes() == \
        (tmp_path / "old.pt").read_bytes()
    remade = save_artifact(tmp_path, "k", {"w": torch.zeros(64, 64)}, {"kind": "dense"})
    assert usable_artifact(tmp_path, "k") == remade
