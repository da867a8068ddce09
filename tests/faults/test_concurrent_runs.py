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
    spec_path = write_spec(tiny_spec(name="together", sparsities=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
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
