"""A full disk while writing an artifact or a row: a clear error, what was stored before intact, then resume."""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_helpers import driver_env
from tsbench_testing import REPO, tiny_spec

from tsbench_core.errors import CellError, StoreError
from tsbench_core.steps.artifacts import save_artifact
from tsbench_core.store import Store

CHILD = Path(__file__).with_name("full_disk_child.py")


def can_mount_tmpfs() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user+mount namespace: {probe.stderr.strip()}"


def test_a_full_disk_gives_one_clear_error_keeps_the_store_and_resumes(tmp_path, write_spec):
    reason = can_mount_tmpfs()
    if reason:
        pytest.skip(f"needs a small tmpfs (unshare -rm + mount): {reason}")
    small = write_spec(tiny_spec(name="disk", sparsities=[0.5]), "small.json")
    grown = write_spec(tiny_spec(name="disk", sparsities=[0.5, 0.6, 0.7]), "grown.json")
    proc = subprocess.run(["unshare", "-rm", sys.executable, str(CHILD), str(tmp_path / "work"), str(small),
                           str(grown)], cwd=REPO, env=driver_env(tmp_path / "locks"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    store = report["store"]  # the database itself cannot grow: the run stops with one message, exit 2
    assert store["first"]["code"] == 0
    assert store["full"]["code"] == 2, store["full"]
    message = store["full"]["stderr"].strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "cannot write to the results store" in message and "full" in message and "run again" in message
    assert store["during"] == store["before"] and store["during"]["integrity"] == "ok"
    assert store["resumed"]["code"] == 0 and len(store["after"]["rows"]) == 4
    assert {row[1] for row in store["after"]["rows"]} == {"ok"}

    artifacts = report["artifacts"]  # the database has room: the new cells fail, each with a clear error
    assert artifacts["first"]["code"] == 0
    assert artifacts["full"]["code"] == 1 and "Traceback" not in artifacts["full"]["stderr"]
    before_keys = {row[0] for row in artifacts["before"]["rows"]}
    failed = [row for row in artifacts["during"]["rows"] if row[0] not in before_keys]
    assert len(failed) == 2 and all(row[1] == "failed" for row in failed)
    assert all("cannot write artifact" in row[3] and "No space left on device" in row[3] for row in failed)
    kept = [row for row in artifacts["during"]["rows"] if row[0] in before_keys]
    assert kept == artifacts["before"]["rows"] and artifacts["during"]["integrity"] == "ok"
    assert artifacts["during"]["artifacts"] == artifacts["before"]["artifacts"]  # nothing damaged or half-written
    assert artifacts["during"]["tmp_files"] == []
    assert artifacts["resumed"]["code"] == 0 and {row[1] for row in artifacts["after"]["rows"]} == {"ok"}


def test_an_artifact_write_failing_leaves_no_partial_file_and_the_old_artifact_intact(tmp_path, monkeypatch):
    old = save_artifact(tmp_path, "k", {"w": torch.ones(4)}, {"kind": "dense"})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def no_space(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tsbench_core.steps.artifacts.atomic_write", no_space)
    with pytest.raises(CellError, match=r"cannot write artifact .*k2\.pt \(No space left on device\); free disk"):
        save_artifact(tmp_path, "k2", {"w": torch.zeros(4)}, {"kind": "dense"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and old.weights.exists()


def test_a_store_write_failing_is_one_store_error_and_the_row_stays_as_it_was(tmp_path):
    db = tmp_path / "r.db"
    with Store(db) as store:
        store.put({"cell_key": "k", "status": "ok", "error": None})
    with sqlite3.connect(db) as conn:  # a trigger standing in for the disk filling up mid-transaction
        conn.execute("CREATE TRIGGER full BEFORE UPDATE ON cells BEGIN SELECT RAISE(FAIL, 'database or disk is "
                     "full'); END")
        conn.execute("CREATE TRIGGER full_insert BEFORE INSERT ON cells BEGIN SELECT RAISE(FAIL, 'database or "
                     "disk is full'); END")
    with Store(db) as store:
        with pytest.raises(StoreError, match=r"r\.db: cannot write to the results store \(database or disk is "
                                             r"full\); what is stored is kept"):
            store.put({"cell_key": "k", "status": "failed", "error": "new"})
        assert store.get("k")["status"] == "ok"
