"""Resume of skipped and failed cells: stale skips re-examined, --retry-failed, the traceback kept in details."""

from __future__ import annotations

import pytest
from tsbench_testing import tiny_spec

from tsbench_core.protocols import Availability
from tsbench_core.store import Store


@pytest.fixture
def spec_of(write_spec, registry):
    from tsbench_core.spec import load_spec

    return lambda spec_dict: load_spec(write_spec(spec_dict), registry)


def test_a_cell_skipped_while_its_runtime_was_missing_runs_once_it_is_available(tmp_path, registry, spec_of,
                                                                                monkeypatch):
    from tsbench_core.runner import run

    eager = registry.records["runtime"]["torch-eager"].plugin
    spec = spec_of(tiny_spec(name="came-back"))
    with Store(tmp_path / "r.db") as store:
        with monkeypatch.context() as patch:
            patch.setattr(type(eager), "availability", lambda self: Availability.no("simulated: not installed"))
            assert run(spec, store, registry=registry).statuses == {"skipped": 2}
            assert run(spec, store, registry=registry).cached == 2  # still missing: nothing to re-examine
        assert run(spec, store, registry=registry).statuses == {"ok": 2}  # installed now
        assert {r["status"] for r in store.rows()} == {"ok"}


def test_a_cell_skipped_while_its_runtime_was_available_stays_skipped(tmp_path, registry, spec_of):
    from tsbench_core.runner import run

    spec_dict = tiny_spec(name="int8-on-eager")
    spec_dict["pruning"][0]["quantize"] = {"method": "static-int8"}
    spec = spec_of(spec_dict)
    with Store(tmp_path / "r.db") as store:
        first = run(spec, store, registry=registry)
        assert first.statuses["skipped"] >= 1
        assert all("cannot run an INT8 ONNX graph" in error for _, error in first.failures)
        assert run(spec, store, registry=registry).cached == first.total


def test_retry_failed_reruns_failed_cells_only_and_details_keep_the_traceback(tmp_path, registry, spec_of):
    from tsbench_core.runner import run

    spec_dict = tiny_spec(name="retry")
    spec_dict["pruning"][0]["fine_tune"] = {"epochs": 1, "lr": 1e30, "max_train_batches": 2}
    with Store(tmp_path / "r.db") as store:
        first = run(spec_of(spec_dict), store, registry=registry)
        # the pruned cell and the dense control of its fine-tuning (the same diverging lr) fail
        assert first.statuses == {"ok": 1, "failed": 2}
        failed = [r for r in store.rows() if r["status"] == "failed"]
        for row in failed:
            assert row["details"].startswith("Traceback (most recent call last)")
            assert row["error"].splitlines()[0] in row["details"]
        dense = next(r for r in store.rows() if r["status"] == "ok")

        spec_dict["pruning"][0]["sparsities"] = [0.5, 0.7]  # a new cell: not run by --retry-failed
        retried = run(spec_of(spec_dict), store, registry=registry, retry_failed=True)
        assert sorted(retried.computed) == sorted(r["cell_key"] for r in failed) and retried.failed == 2
        assert len(store.rows()) == 3
        assert store.get(dense["cell_key"])["finished_at"] == dense["finished_at"]  # ok cells untouched
        assert run(spec_of(spec_dict), store, registry=registry).computed != []  # a plain run takes the new cell
        assert len(store.rows()) == 4


def test_an_older_store_gains_the_new_columns_and_the_lease_table(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:  # the cells table as stores written before details/leases had it
        conn.execute("CREATE TABLE cells (cell_key TEXT PRIMARY KEY, spec_name TEXT, status TEXT, error TEXT)")
        conn.execute("INSERT INTO cells VALUES ('k', 'old', 'failed', 'boom')")
    with Store(db) as store:
        assert store.get("k")["error"] == "boom" and store.get("k")["details"] is None
        store.put({"cell_key": "k2", "spec_name": "old", "status": "failed", "error": "x", "details": "tb"})
        assert store.claim("k2", "me", seen=store.states(["k2"])["k2"], grace=60) == "claimed"
        assert [lease["cell_key"] for lease in store.leases()] == ["k2"]


def test_cli_retry_failed_and_results_failed_show_the_traceback(tmp_path, write_spec, capsys):
    from tsbench_core.cli import main

    spec_dict = tiny_spec(name="cli-retry")
    spec_dict["pruning"][0]["fine_tune"] = {"epochs": 1, "lr": 1e30, "max_train_batches": 2}
    path, db = write_spec(spec_dict), str(tmp_path / "r.db")
    assert main(["run", str(path), "--store", db, "--quiet"]) == 1
    capsys.readouterr()
    assert main(["results", "--store", db, "--failed"]) == 0
    shown = capsys.readouterr().out
    assert "error: training loss became" in shown and "Traceback (most recent call last)" in shown
    # the pruned cell and the dense control of its fine-tuning (the same diverging lr)
    assert "2 failed cells; rerun them with: tsbench run SPEC --retry-failed" in shown
    assert main(["run", str(path), "--store", db, "--quiet", "--retry-failed"]) == 1
    assert "3 cells — 1 cached, 2 run, 2 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:  # one or the other
        main(["run", str(path), "--store", db, "--force", "--retry-failed"])
    assert usage.value.code == 2 and "not allowed with argument --force" in capsys.readouterr().err


def test_retime_measures_stored_cells_again_on_their_checkpoints_and_trains_nothing(tmp_path, registry, spec_of,
                                                                                    monkeypatch):
    from tsbench_core import pipeline
    from tsbench_core.runner import run

    spec = spec_of(tiny_spec(name="retime"))
    with Store(tmp_path / "r.db") as store:
        first = run(spec, store, registry=registry)
        assert first.statuses == {"ok": 2}
        before = {r["cell_key"]: r for r in store.rows()}
        checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "artifacts").rglob("*.pt")}
        assert checkpoints

        def no_training(*args, **kwargs):
            raise AssertionError("retime trained a model")

        monkeypatch.setattr(pipeline, "train_model", no_training)
        again = run(spec, store, registry=registry, retime=True)
        assert again.statuses == {"ok": 2} and sorted(again.computed) == sorted(before)
        assert {p: p.stat().st_mtime_ns for p in (tmp_path / "artifacts").rglob("*.pt")} == checkpoints
        for key, row in store_rows(store).items():
            assert row["run_id"] == again.run_id != before[key]["run_id"]
            assert row["mse"] == before[key]["mse"]  # the same checkpoint, evaluated again
        forced = run(spec, store, registry=registry, force=True)  # force rebuilds: the guard above bites
        assert forced.failed == 2 and all("retime trained a model" in error for _, error in forced.failures)


def store_rows(store: Store) -> dict[str, dict]:
    return {r["cell_key"]: r for r in store.rows()}


def test_retime_and_force_are_exclusive_on_the_command_line(tmp_path, capsys, write_spec):
    from tsbench_core.cli import main

    path = write_spec(tiny_spec(name="x"))
    with pytest.raises(SystemExit) as usage:
        main(["run", str(path), "--store", str(tmp_path / "r.db"), "--force", "--retime"])
    assert usage.value.code == 2 and "not allowed with argument --force" in capsys.readouterr().err
