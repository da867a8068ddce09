"""Helpers of the fault tests: start tsbench runs in their own processes, read the store independently."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tsbench_testing import REPO

DRIVER = Path(__file__).with_name("run_driver.py")


def driver_env(lock_dir: Path) -> dict[str, str]:
    return {**os.environ, "NM_DISABLE_ANALYTICS": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "TSBENCH_LOCK_DIR": str(lock_dir)}


def start_driver(spec: Path, db: Path, lock_dir: Path, go: Path | None = None,
                 started: Path | None = None) -> subprocess.Popen:
    """A run in its own process; it creates ``started`` (if given) when its imports are done."""
    cmd = [sys.executable, str(DRIVER), str(spec), str(db)] + ([str(go)] if go else [])
    env = driver_env(lock_dir) | ({"STARTED_FILE": str(started)} if started else {})
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_together(spec: Path, db: Path, lock_dir: Path, count: int, timeout: float = 300) -> list[dict[str, Any]]:
    """``count`` runs of ``spec`` on one store, released at the same instant; their JSON summaries."""
    go = db.parent / "go"
    db.parent.mkdir(parents=True, exist_ok=True)
    procs = [start_driver(spec, db, lock_dir, go) for _ in range(count)]
    deadline = time.monotonic() + timeout
    while len(list(db.parent.glob("go.ready.*"))) < count:
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.touch()
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


def stored_rows(db: Path) -> list[dict[str, Any]]:
    """Every row of the cells table, read with plain sqlite3 (not through tsbench's Store)."""
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM cells")]
        except sqlite3.OperationalError:  # the table is not created yet
            return []


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
