"""The Dask executor without a cluster: the task graph, resources, the node lock, worker-side error flow."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("distributed")

from tsbench_core.cells import DENSE, expand  # noqa: E402
from tsbench_core.errors import UserError  # noqa: E402
from tsbench_core.executors import dask as dx  # noqa: E402
from tsbench_core.pipeline import Workspace  # noqa: E402
from tsbench_core.spec import Spec, validate_against  # noqa: E402
from tsbench_core.steps.artifacts import save_artifact  # noqa: E402


def spec_of(registry, **overrides) -> Spec:
    raw = {
        "name": "plan",
        "datasets": [{"plugin": "synthetic", "params": {"length": 200, "n_vars": 2, "periods": [12]},
                      "seq_len": 16, "label_len": 8, "pred_len": [4, 8]}],
        "models": [{"plugin": "dlinear"}, {"plugin": "transformer", "params": {"d_model": 8, "n_heads": 2}}],
        "training": {"epochs": 1, "max_train_batches": 2},
        "pruning": [{"pruner": "magnitude", "sparsities": [0.5, 0.9]}],
        "runtimes": [{"plugin": "torch-eager"}, {"plugin": "onnxruntime"}],
        "timing": {"batch_sizes": [4], "repeats": 2},
    }
    spec = Spec.model_validate(raw | overrides)
    validate_against(spec, registry, "<test>")
    return spec


def test_plan_has_one_task_per_step_and_the_real_dependencies(registry):
    cells = expand(spec_of(registry), registry)
    tasks = dx.plan_tasks(cells, "tok", registry)
    by_key = {t.key: t for t in tasks}
    kinds = [t.kind for t in tasks]
    # 2 horizons x 2 models trained once each; x 2 sparsities pruned once each; every cell measured once
    assert (kinds.count("train"), kinds.count("prune"), kinds.count("measure")) == (4, 8, len(cells))
    assert len(cells) == 4 * 3 * 2
    assert len(by_key) == len(tasks) and all(t.key.endswith("-tok") for t in tasks)
    assert kinds == sorted(kinds, key=["train", "prune", "measure"].index)  # submitted upstream first

    for task in tasks:
        assert task.resources == {dx.TIMING: 1}
        if task.kind == "train":
            assert task.depends_on is None
        elif task.kind == "prune":
            parent = by_key[task.depends_on]
            assert parent.kind == "train" and parent.item.key == task.item.train.key
        else:
            cell, parent = task.item, by_key[task.depends_on]
            if cell.prune.pruner == DENSE:
                assert parent.kind == "train" and parent.item.key == cell.prune.train.key
            else:
                assert parent.kind == "prune" and parent.item.key == cell.prune.key
    assert {t.item.key for t in tasks if t.kind == "measure"} == {c.key for c in cells}


def test_gpu_requests_follow_training_device_and_runtime(registry):
    cuda = spec_of(registry, training={"epochs": 1, "device": "cuda"}, pruning=[])
    tasks = dx.plan_tasks(expand(cuda, registry), "t", registry)
    assert all(t.resources == {dx.TIMING: 1, dx.GPU: 1} for t in tasks)
    assert all(t.resources == {dx.TIMING: 1} for t in dx.plan_tasks(expand(cuda, registry), "t", registry,
                                                                      gpu=False))

    gpu_runtime = spec_of(registry, runtimes=[{"plugin": "torch-eager"}, {"plugin": "semi-structured"},
                                              {"plugin": "torch-compile", "params": {"device": "cuda"}}],
                          pruning=[])
    for task in dx.plan_tasks(expand(gpu_runtime, registry), "t", registry):
        wants = task.kind == "measure" and task.item.runtime != "torch-eager"
        assert (dx.GPU in task.resources) == wants, (task.kind, getattr(task.item, "runtime", None))


class FakeClient:
    def __init__(self, *resources: dict) -> None:
        self.workers = {f"tcp://w{i}": {"resources": r} for i, r in enumerate(resources)}

    def scheduler_info(self, n_workers: int = -1) -> dict:
        return {"workers": self.workers}


def test_worker_checks(registry):
    executor = dx.DaskExecutor(scheduler="tcp://127.0.0.1:1")
    cpu_tasks = dx.plan_tasks(expand(spec_of(registry, pruning=[]), registry), "t", registry)
    with pytest.raises(UserError, match='--resources "TIMING=1"'):
        executor._check_workers(FakeClient({}, {"GPU": 1}), cpu_tasks)
    assert executor._check_workers(FakeClient(), cpu_tasks)  # no worker yet: tasks wait for them
    assert executor._check_workers(FakeClient({"TIMING": 1}), cpu_tasks)

    cuda = spec_of(registry, training={"epochs": 1, "device": "cuda"}, pruning=[])
    gpu_tasks = dx.plan_tasks(expand(cuda, registry), "t", registry)
    with pytest.warns(UserWarning, match="no Dask worker offers the GPU"):
        assert not executor._check_workers(FakeClient({"TIMING": 1}), gpu_tasks)
    assert executor._check_workers(FakeClient({"TIMING": 1}, {"TIMING": 1, "GPU": 1}), gpu_tasks)


def test_executor_options_are_checked(monkeypatch):
    with pytest.raises(UserError, match="exclude each other"):
        dx.DaskExecutor(scheduler="tcp://h:8786", local_workers=2)
    with pytest.raises(UserError, match="--local-workers"):
        dx.DaskExecutor(local_workers=0)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"tsbench\[dask\]"):
        dx.DaskExecutor()


def test_unreachable_scheduler_is_a_user_error(registry, tmp_path):
    cells = expand(spec_of(registry, pruning=[]), registry)
    executor = dx.DaskExecutor(scheduler="tcp://127.0.0.1:1", connect_timeout="1s")
    with pytest.raises(UserError, match="cannot reach the Dask scheduler"):
        list(executor.execute(cells, Workspace(tmp_path, registry=registry)))


def _holds(lock_dir: Path, exclusive: bool, entered: threading.Event, release: threading.Event) -> None:
    with dx.node_lock(str(lock_dir), exclusive=exclusive):
        entered.set()
        release.wait(10)


def _start(lock_dir: Path, exclusive: bool) -> tuple[threading.Event, threading.Event, threading.Thread]:
    entered, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_holds, args=(lock_dir, exclusive, entered, release), daemon=True)
    thread.start()
    return entered, release, thread


def test_node_lock_trainings_share_timings_exclude(tmp_path):
    # flock locks belong to open files, so threads that open the lock file separately contend like processes
    r1, r1_release, _ = _start(tmp_path, exclusive=False)
    assert r1.wait(5)
    r2, r2_release, _ = _start(tmp_path, exclusive=False)
    assert r2.wait(5)  # two trainings overlap

    w, w_release, _ = _start(tmp_path, exclusive=True)
    assert not w.wait(0.3)  # a timing waits for the trainings
    r3, r3_release, _ = _start(tmp_path, exclusive=False)
    assert not r3.wait(0.3)  # and a new training queues behind the waiting timing
    r1_release.set()
    r2_release.set()
    assert w.wait(5)
    assert not r3.is_set()  # no training while the timing runs
    w2, w2_release, _ = _start(tmp_path, exclusive=True)
    assert not w2.wait(0.3)  # nor another timing
    w_release.set()
    assert r3.wait(5) or w2.wait(5)
    r3_release.set()
    w2_release.set()
    assert w2.wait(5) and r3.wait(5)


def test_failures_flow_from_training_to_the_cell_row(registry, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make training fail")
    spec = spec_of(registry, training={"epochs": 1, "device": "cuda"}, runtimes=[{"plugin": "torch-eager"}])
    cell = next(c for c in expand(spec, registry) if c.prune.pruner != DENSE)
    ctx = dx.RunContext("t1", str(tmp_path), None, False)

    trained = dx.train_task(ctx, cell.prune.train)
    assert trained["key"] == cell.prune.train.key and "no CUDA device" in trained["error"]
    pruned = dx.prune_task(ctx, cell.prune, trained)
    assert pruned["key"] == cell.prune.key and pruned["error"] == trained["error"]
    row = dx.measure_task(ctx, cell, pruned)
    assert (row["cell_key"], row["status"], row["error"]) == (cell.key, "failed", trained["error"])


def test_adopt_marks_upstream_artifacts_or_reports_an_unshared_folder(registry, tmp_path):
    ctx = dx.RunContext("t2", str(tmp_path), None, True, visibility_timeout=0.0)
    ws = Workspace(tmp_path, registry=registry, rebuild=True)
    save_artifact(tmp_path, "seen", {"w": torch.zeros(1)}, {"kind": "dense"})
    dx._adopt(ws, ctx, {"key": "seen", "error": None, "host": "a"})
    assert ws.cached("seen") is not None  # made in this run although ``rebuild`` ignores older artifacts

    dx._adopt(ws, ctx, {"key": "elsewhere", "error": None, "host": "node7"})
    with pytest.raises(Exception, match="shared by all workers"):
        ws.cached("elsewhere")


def test_failed_row_names_the_cell(registry):
    cell = expand(spec_of(registry, pruning=[]), registry)[0]
    row = dx.failed_row(cell, "dask: KilledWorker: gone")
    assert (row["cell_key"], row["status"], row["host"], row["model"]) == (cell.key, "failed", None, "dlinear")
    assert row["started_at"] <= time.time()


def test_missing_scheduler_file_is_a_user_error(registry, tmp_path):
    cells = expand(spec_of(registry, pruning=[]), registry)
    executor = dx.DaskExecutor(scheduler=str(tmp_path / "scheduler.json"))
    with pytest.raises(UserError, match="no such scheduler file"):
        list(executor.execute(cells, Workspace(tmp_path, registry=registry)))


def test_worker_training_threads_come_from_the_executor_or_the_environment(monkeypatch, tmp_path):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(dx.TORCH_THREADS_ENV, "1")
        dx._worker_workspace(dx.RunContext("t3", str(tmp_path), None, False))
        assert torch.get_num_threads() == 1
        dx._worker_workspace(dx.RunContext("t3", str(tmp_path), None, False, torch_threads=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_force_rebuilds_once_and_downstream_workers_reuse_the_new_checkpoints(registry, tmp_path):
    spec = spec_of(registry, datasets=[{"plugin": "synthetic", "params": {"length": 200, "n_vars": 2,
                                                                          "periods": [12]},
                                        "seq_len": 16, "label_len": 8, "pred_len": [4]}],
                   models=[{"plugin": "dlinear"}], pruning=[{"pruner": "magnitude", "sparsities": [0.5]}],
                   runtimes=[{"plugin": "torch-eager"}], timing={"batch_sizes": [2], "warmup": 0, "repeats": 1,
                                                                 "threads": 1})
    cell = next(c for c in expand(spec, registry) if c.prune.pruner != DENSE)
    stale = save_artifact(tmp_path, cell.prune.train.key, {"w": torch.zeros(1)}, {"kind": "stale"})
    ctx = dx.RunContext("force", str(tmp_path), None, True)

    def fresh_worker() -> None:  # each step on another process: nothing memoised from the previous step
        dx._workspaces.clear()

    trained = dx.train_task(ctx, cell.prune.train)
    assert trained["error"] is None
    dense_mtime = stale.weights.stat().st_mtime_ns
    assert '"kind": "dense"' in (tmp_path / f"{cell.prune.train.key}.json").read_text()  # stale one replaced
    fresh_worker()
    pruned = dx.prune_task(ctx, cell.prune, trained)
    assert pruned["error"] is None
    fresh_worker()
    row = dx.measure_task(ctx, cell, pruned)
    assert row["status"] == "ok", row.get("error")
    assert row["achieved_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert stale.weights.stat().st_mtime_ns == dense_mtime  # pruning and measuring did not train again
