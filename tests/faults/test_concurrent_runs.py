"""Concurrent runs on one store: the cells are split through leases, each computed once, timings never overlap."""

from __future__ import annotations

import json

import pytest
from fault_helpers import integrity, run_together, stored_rows
from tsbench_testing import tiny_spec

from tsbench_core.cells import expand
from tsbench_core.spec import load_spec


@pytest.mark.parametrize("runs", [2, pytest.param(3, marks=pytest.mark.long)])
def test_concurrent_runs_compute_every_cell_exactly_once(tmp_path, write_spec, registry, runs):
    sparsities = [round(0.1 * i, 1) for i in range(1, 2 * runs + 1)]  # 2 runs: 5 cells, 3 runs: 7 cells
    spec_path = write_spec(tiny_spec(name="together", sparsities=sparsities))
    keys = {c.key for c in expand(load_spec(spec_path, registry), registry)}
    db = tmp_path / "store" / "r.db"

    summaries = run_together(spec_path, db, tmp_path / "locks", runs)

    computed = [key for s in summaries for key in s["computed"]]
    assert sorted(computed) == sorted(keys)  # every cell once: none lost, none computed twice
    assert sum(1 for s in summaries if s["computed"]) >= 2  # the work was split
    for s in summaries:
        assert s["cached"] + s["elsewhere"] + len(s["computed"]) == len(keys)
    rows = stored_rows(db)
    assert integrity(db) == "ok" and len(rows) == len(keys) == len({r["cell_key"] for r in rows})
    assert {r["status"] for r in rows} == {"ok"}
    assert stored_rows_leases(db) == []  # every lease released
    # the host-wide lock: no two timings overlap, whichever process made them
    spans = sorted((info["from"], info["to"]) for info in (json.loads(r["runtime_info"])["host_lock"] for r in rows))
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def stored_rows_leases(db):
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM leases").fetchall()


def test_a_lease_is_taken_over_when_its_process_is_gone_or_its_heartbeat_too_old(tmp_path):
    import os
    import socket
    import sqlite3
    import subprocess
    import sys
    import time

    from tsbench_core.store import BUSY, CLAIMED, DONE_ELSEWHERE, Store

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that no longer runs
    db = tmp_path / "r.db"
    with Store(db) as store:
        now = time.time()
        with sqlite3.connect(db) as conn:
            conn.executemany("INSERT INTO leases VALUES (?, ?, ?, ?, ?)", [
                ("alive-here", "other", socket.gethostname(), os.getpid(), now),
                ("dead-here", "other", socket.gethostname(), gone.pid, now),
                ("fresh-remote", "other", "another-host", 1, now),
                ("stale-remote", "other", "another-host", 1, now - 121),
            ])
        claim = lambda key: store.claim(key, "me", seen=None, grace=120)  # noqa: E731
        assert [claim(k) for k in ("alive-here", "dead-here", "fresh-remote", "stale-remote")] == \
            [BUSY, CLAIMED, BUSY, CLAIMED]
        store.put({"cell_key": "stored-meanwhile", "status": "ok", "finished_at": now})
        assert claim("stored-meanwhile") == DONE_ELSEWHERE  # stored since this run planned (it saw nothing)
        assert store.claim("stored-meanwhile", "me", seen=store.states(["stored-meanwhile"])["stored-meanwhile"],
                           grace=120) == CLAIMED  # what it saw when planning: its to redo (a --force run)
