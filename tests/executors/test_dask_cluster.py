"""The Dask executor on a real LocalCluster (2 worker processes, 1 thread each), as ``--local-workers 2``
starts it: same non-timing results as the local executor although a worker dies mid-run, every cell stored
exactly once, resume, and bounded retries of a task whose worker keeps dying."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402

from tsbench_core.cells import expand  # noqa: E402
from tsbench_core.executors.dask import DaskExecutor  # noqa: E402
from tsbench_core.runner import run  # noqa: E402
from tsbench_core.spec import Spec, validate_against  # noqa: E402
from tsbench_core.store import Store  # noqa: E402

HOOKS = str(Path(__file__).with_name("worker_hooks.py"))
NON_TIMING = ("mse", "mae", "mse_original", "mae_original", "params_total", "params_nonzero",
              "achieved_sparsity", "sparsity_all", "macs_dense", "macs_effective")


def small_spec(registry, name: str = "dask-quick", **overrides) -> Spec:
    """The quickstart's shape at test size: dlinear + a tiny transformer, dense and magnitude 50 %."""
    raw = {
        "name": name,
        "seed": 0,
        "datasets": [{"plugin": "synthetic", "params": {"length": 400, "n_vars": 2, "periods": [12], "seed": 0},
                      "seq_len": 24, "label_len": 12, "pred_len": [8]}],
        "models": [{"plugin": "dlinear"},
                   {"plugin": "transformer",
                    "params": {"d_model": 16, "n_heads": 2, "e_layers": 1, "d_layers": 1, "d_ff": 32}}],
        "training": {"epochs": 1, "batch_size": 16, "lr": 0.001, "max_train_batches": 4, "max_eval_batches": 4},
        "pruning": [{"pruner": "magnitude", "sparsities": [0.5], "params": {"scope": "global"},
                     "fine_tune": {"epochs": 1, "lr": 0.0005, "max_train_batches": 2}}],
        "runtimes": [{"plugin": "torch-eager"}],
        "timing": {"batch_sizes": [4], "warmup": 1, "repeats": 3, "threads": 1},
    }
    spec = Spec.model_validate(raw | overrides)
    validate_against(spec, registry, "<test>")
    return spec


class CountingProgress:
    """Counts each progress bar's advances by description."""

    def __init__(self) -> None:
        self.advanced: dict[str, int] = {}
        self.totals: dict[str, int | None] = {}

    def task(self, description: str, total: int | None = None) -> CountingProgress._Task:
        self.totals[description] = total
        self.advanced[description] = 0
        return CountingProgress._Task(self, description)

    class _Task:
        def __init__(self, owner: CountingProgress, description: str) -> None:
            self.owner, self.description = owner, description

        def advance(self, amount: int = 1) -> None:
            self.owner.advanced[self.description] += amount

        def describe(self, description: str) -> None:
            pass

        def close(self) -> None:
            pass


def stored(path: Path) -> dict[str, dict]:
    with Store(path) as store:
        return {row["cell_key"]: row for row in store.rows()}


def counts(path: Path) -> tuple[int, int]:
    """(rows, distinct cell keys) in the store."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM cells").fetchone()


@pytest.fixture
def kill_worker(monkeypatch, tmp_path):
    """Make workers of clusters started in the test die on chosen tasks; returns the kill log's path."""
    marker = tmp_path / "kills.log"

    def arm(prefix: str, always: bool = False) -> Path:
        monkeypatch.setenv("TSBENCH_TEST_KILL_PREFIX", prefix)
        monkeypatch.setenv("TSBENCH_TEST_KILL_MARKER", str(marker))
        monkeypatch.setenv("TSBENCH_TEST_KILL_ALWAYS", "1" if always else "0")
        # a worker that must die on every attempt dies at once, so a fast machine cannot finish the task first
        monkeypatch.setenv("TSBENCH_TEST_KILL_DELAY", "0" if always else "0.3")
        return marker

    with dask.config.set({"distributed.worker.preload": [HOOKS]}):
        yield arm


def test_dask_equals_local_and_survives_a_killed_worker(registry, tmp_path, kill_worker):
    spec = small_spec(registry)
    keys = {c.key for c in expand(spec, registry)}
    local_db, dask_db = tmp_path / "local" / "results.db", tmp_path / "dask" / "results.db"
    local = run(spec, local_db, registry=registry)
    assert local.statuses == {"ok": 6}  # 2 models x (dense, its fine-tuning control, magnitude 50 %)
    local_rows = stored(local_db)

    # resume: one cell is already stored, the dask run does the other five
    done = next(r for r in local_rows.values() if r["pruner"] == "dense" and r["model"] == "dlinear"
                and not r["fine_tuned"])
    with Store(dask_db) as store:
        store.put(done)
    marker = kill_worker("tsbench-measure-")
    progress = CountingProgress()
    summary = run(spec, dask_db, registry=registry, executor=DaskExecutor(local_workers=2), progress=progress)

    killed = marker.read_text().splitlines()
    assert len(killed) == 1  # one worker died, inside a measure
    with pytest.raises(ProcessLookupError):
        os.kill(int(killed[0].split()[0]), 0)
    assert (summary.cached, summary.statuses) == (1, {"ok": 5})  # the runner saw each cell once
    assert counts(dask_db) == (6, 6)
    # both models are trained (the stored dense dlinear cell's pruned sibling needs its checkpoint), both pruned
    # and both dense controls fine-tuned (a pruning task each)
    bars = {"dask-quick: cells": 5, "dask: dense trainings": 2, "dask: prunings": 4}
    assert {d: progress.advanced[d] for d in bars} == bars == {d: progress.totals[d] for d in bars}
    dask_rows = stored(dask_db)
    assert set(dask_rows) == set(local_rows) == keys
    for key, row in dask_rows.items():
        for column in NON_TIMING:
            assert row[column] == local_rows[key][column], (row["model"], row["pruner"], column)
        assert row["status"] == "ok"
        assert row["host"] == socket.gethostname()
        assert row["latency_ms_median"] > 0
    assert sorted(r["achieved_sparsity"] for r in dask_rows.values() if r["pruner"] == "magnitude") == [
        pytest.approx(0.5, abs=0.01)] * 2
    # both workers live on this node: the node lock kept the five measures from overlapping
    spans = sorted((r["started_at"], r["finished_at"]) for k, r in dask_rows.items() if k != done["cell_key"])
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end
    # a finished spec runs nothing: no cluster is even contacted
    again = run(spec, dask_db, registry=registry, executor=DaskExecutor(scheduler="tcp://127.0.0.1:1"))
    assert (again.cached, again.statuses) == (6, {})


def test_a_task_whose_worker_always_dies_fails_after_bounded_retries(registry, tmp_path, kill_worker):
    spec = small_spec(registry, name="dask-doomed", models=[{"plugin": "dlinear"}], pruning=[])
    (cell,) = expand(spec, registry)
    marker = kill_worker(f"tsbench-measure-{cell.key}", always=True)
    db = tmp_path / "results.db"

    summary = run(spec, db, registry=registry, executor=DaskExecutor(local_workers=2, retries=1))

    assert len(marker.read_text().splitlines()) == 2  # the first attempt and one retry, then given up
    assert summary.statuses == {"failed": 1}
    assert counts(db) == (1, 1)
    row = stored(db)[cell.key]
    assert row["status"] == "failed" and row["host"] is None
    assert "KilledWorker" in row["error"]
