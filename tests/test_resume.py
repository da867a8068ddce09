"""Resumability: a run killed with SIGKILL loses at most the cell in progress; the next run completes it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

from tsbench_testing import REPO, tiny_spec

from tsbench_core.store import Store


def stored_count(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_sigkill_mid_run_then_resume_completes_without_duplicates(write_spec, tmp_path):
    spec = write_spec(tiny_spec(name="killed", sparsities=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]))
    db = tmp_path / "store" / "r.db"
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
    cmd = [sys.executable, "-m", "tsbench_core.cli", "run", str(spec), "--store", str(db), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while stored_count(db) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = stored_count(db)
    assert 3 <= before < 9

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"9 cells — {before} cached, {9 - before} run, {9 - before} ok" in done.stdout
    with Store(db) as store:
        rows = store.rows("killed")
    assert len(rows) == 9 and len({r["cell_key"] for r in rows}) == 9
    assert {r["status"] for r in rows} == {"ok"}
    # speedups are filled for every pruned row, whichever run timed it
    assert all(r["speedup_vs_dense"] and r["speedup_vs_dense"] > 0 for r in rows if r["pruner"] != "dense")


def test_failed_cells_are_stored_and_retried_while_ok_cells_are_kept(write_spec, tmp_path, registry):
    from tsbench_core.runner import run
    from tsbench_core.spec import load_spec

    spec_dict = tiny_spec(name="partly-failing")
    spec_dict["runtimes"] = [{"plugin": "torch-eager"}, {"plugin": "semi-structured"}]
    spec = load_spec(write_spec(spec_dict), registry)
    with Store(tmp_path / "r.db") as store:
        summary = run(spec, store, registry=registry)
        assert summary.statuses == {"ok": 2, "skipped": 2}
        skipped = [r for r in store.rows() if r["status"] == "skipped"]
        assert all("CUDA" in r["error"] for r in skipped)
        again = run(spec, store, registry=registry)
        assert again.cached == 4  # skipped (unavailable) cells count as done; failed ones would be retried
        failing = spec.model_copy(update={"training": spec.training.model_copy(update={"lr": 1e30})})
        failed = run(failing, store, registry=registry)
        assert failed.failed >= 1
        assert any("loss became" in error for _, error in failed.failures)
        assert len(store.rows("partly-failing")) == 8


def test_public_run_uses_the_default_store_and_resumes(tmp_path, monkeypatch, registry):
    from tsbench_core import run
    from tsbench_core.spec import parse_spec

    monkeypatch.chdir(tmp_path)
    spec = parse_spec(json.dumps(tiny_spec(name="default-store")), "spec.json")
    assert run(spec, registry=registry).statuses == {"ok": 2}
    assert (tmp_path / "tsbench-results" / "results.db").is_file()
    assert run(spec, registry=registry).cached == 2
