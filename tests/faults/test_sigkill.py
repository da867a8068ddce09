"""SIGKILL at random points of runs on one store, then resume: 0 cells lost, 0 computed twice, store intact.

The default suite kills once (a small spec); the fault figure of docs/reliability.md (``-m long``) kills 20
times. Each run is killed at a uniformly random time into its work (after its imports), so the kills land in
dense training, pruning and fine-tuning, ONNX export, timing and store writes in proportion to their time.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from fault_helpers import integrity, start_driver, stored_rows
from tsbench_testing import tiny_spec

from tsbench_core.cells import DENSE, expand
from tsbench_core.spec import load_spec


def kill_spec(full: bool) -> dict:
    """The long run's spec: two dense trainings, fine-tuning, an ONNX export per cell (24 cells); the short
    one: one training, three prunings, torch eager (4 cells)."""
    if not full:
        return tiny_spec(name="kills", sparsities=[0.3, 0.6, 0.9])
    spec = tiny_spec(name="kills", sparsities=[0.2, 0.4, 0.6, 0.8])
    spec["datasets"][0]["pred_len"] = [8, 12]
    spec["pruning"].append({"pruner": "magnitude", "sparsities": [0.5], "params": {"scope": "layer"},
                            "fine_tune": {"epochs": 1, "lr": 1e-4, "max_train_batches": 4}})
    spec["runtimes"] = [{"plugin": "torch-eager"}, {"plugin": "onnxruntime"}]
    return spec


def artifacts_verify(folder: Path) -> list[str]:
    """Artifacts whose .pt does not match the sha256 and size its sidecar records (independent of tsbench)."""
    bad = []
    for sidecar in folder.glob("*.json"):
        recorded = json.loads(sidecar.read_text()).get("weights_file")
        data = sidecar.with_suffix(".pt").read_bytes()
        if recorded != {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}:
            bad.append(sidecar.stem)
    return bad


def phase_at_kill(db: Path, pid: int, model_key: dict[str, str]) -> str:
    """What the killed run was doing, from what it left: the cell it held a lease on, and whether that cell's
    model (dense or pruned) was already stored."""
    with sqlite3.connect(db, timeout=30) as conn:
        held = conn.execute("SELECT cell_key FROM leases WHERE pid = ?", (pid,)).fetchall()
    if not held:
        return "between cells (claiming or storing a row)"
    made = (db.parent / "artifacts" / f"{model_key[held[0][0]]}.json").exists()
    return "measuring (export, gate, timing)" if made else "training, pruning or fine-tuning"


def check_stored_once(rows: list[dict], first_seen: dict[str, tuple]) -> None:
    """A stored row never changes afterwards: no cell is computed (and stored) twice."""
    for row in rows:
        mark = (row["run_id"], row["finished_at"])
        assert first_seen.setdefault(row["cell_key"], mark) == mark, f"cell {row['cell_key']} stored twice"


def kill_and_resume(tmp_path, write_spec, registry, kills: int, seed: int, full: bool, window: float = 4.0) -> dict:
    """Kill runs at uniform random times in [0, window) s into their work until ``kills`` kills landed, then
    resume; a store whose cells are all stored is replaced by a fresh one so every kill hits work."""
    spec_path = write_spec(kill_spec(full))
    cells = expand(load_spec(spec_path, registry), registry)
    keys = {c.key for c in cells}
    model_key = {c.key: c.prune.train.key if c.prune.pruner == DENSE else c.prune.key for c in cells}
    rng = random.Random(seed)
    stores: list[Path] = []
    first_seen: dict[str, dict] = {}  # store -> cell -> (run_id, finished_at) when first found stored
    phases: list[str] = []
    attempt = 0
    while len(phases) < kills:
        if not stores or len(stored_rows(stores[-1])) == len(keys):
            stores.append(tmp_path / f"store{len(stores)}" / "r.db")
        db = stores[-1]
        attempt += 1
        started = tmp_path / f"started-{attempt}"
        proc = start_driver(spec_path, db, tmp_path / "locks", started=started)
        deadline = time.monotonic() + 300
        while not started.exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, window))
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert killed or proc.returncode == 0, err[-3000:]
        assert integrity(db) == "ok" and artifacts_verify(db.parent / "artifacts") == []
        check_stored_once(stored_rows(db), first_seen.setdefault(str(db), {}))
        if killed:
            phases.append(phase_at_kill(db, proc.pid, model_key))
    for db in stores:  # resume every store
        final = start_driver(spec_path, db, tmp_path / "locks")
        _, err = final.communicate(timeout=600)
        assert final.returncode == 0, err[-3000:]
        rows = stored_rows(db)
        check_stored_once(rows, first_seen.setdefault(str(db), {}))
        assert {r["cell_key"] for r in rows} == keys and {r["status"] for r in rows} == {"ok"}  # none lost
        assert integrity(db) == "ok" and artifacts_verify(db.parent / "artifacts") == []
    return {"kills": len(phases), "phases": phases, "stores": len(stores), "cells_per_store": len(keys)}


def test_a_sigkill_at_a_random_point_then_resume_loses_and_duplicates_nothing(tmp_path, write_spec, registry):
    report = kill_and_resume(tmp_path, write_spec, registry, kills=1, seed=1, full=False, window=2.0)
    assert report["kills"] == 1


@pytest.mark.long
def test_twenty_sigkills_at_random_points_then_resume(tmp_path, write_spec, registry):
    report = kill_and_resume(tmp_path, write_spec, registry, kills=20, seed=2026, full=True)
    print("\nfault figure:", json.dumps(report))
    assert report["kills"] == 20
