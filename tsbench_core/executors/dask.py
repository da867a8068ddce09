"""Run cells on a Dask cluster: dense training → pruning / fine-tuning → measure, as dependent futures.

The driver (this process) turns the cells into three kinds of tasks, one per content key: one training per
``TrainJob.key``, one pruning per ``PruneJob.key`` (dense cells need none) and one measure per cell. Futures
carry only keys and short status dicts; checkpoints move through the artifact folder next to the results
store, so on a real cluster that folder must be on a filesystem every worker sees (NFS, Lustre, GPFS...).
Workers rebuild the plugin registry themselves (the same entry points must be installed there).

Exclusive timing, two levels:

- every task asks for the worker resource ``TIMING=1`` (each worker advertises ``TIMING=1``), so a worker runs
  one step at a time, whatever its thread count;
- the host-wide reader/writer file lock of ``tsbench_core/hostlock.py`` (every tsbench process takes it):
  training and pruning hold it shared, a measure holds it exclusively. Several workers on one node (a
  ``LocalCluster``, dask-jobqueue with ``processes > 1``) still train in parallel, but a timing never overlaps
  another timing or a training there.
  The OS drops the lock when a worker dies, so a killed worker never wedges its node.

Rows come back as futures complete; a task lost with its worker is retried by the scheduler (bounded by
``retries``); a cell whose task still fails is yielded once as a failed row, which a later run redoes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsbench_core.cells import Cell, PruneJob, TrainJob
from tsbench_core.errors import TsbenchError, UserError
from tsbench_core.hostlock import host_lock as node_lock
from tsbench_core.pipeline import Workspace, base_row, dense_artifact, measure_cell, pruned_artifact
from tsbench_core.progress import NullProgress
from tsbench_core.protocols import device_of
from tsbench_core.registry import Registry, load_plugins
from tsbench_core.steps.artifacts import find_artifact
from tsbench_core.store import STATUS_FAILED

TIMING = "TIMING"
GPU = "GPU"
# Dask's nanny starts workers with OMP_NUM_THREADS=1; this variable (set where the worker starts) or the
# executor's ``torch_threads`` gives training its intra-op threads back.
TORCH_THREADS_ENV = "TSBENCH_TORCH_THREADS"
# Higher runs first among ready tasks: finish what a training unlocked before starting the next training,
# so rows reach the store early and a resumed run loses little.
PRIORITY = {"train": 0, "prune": 1, "measure": 2}


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"--executor dask needs Dask's distributed scheduler, which is not installed here ({exc}); "
            "install the extra: pip install 'tsbench[dask]'"
        ) from None


# --- the task graph (pure, no dask) ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What a worker needs to rebuild the driver's workspace: plain paths and flags, no registry."""

    token: str
    artifacts: str
    data_dir: str | None
    rebuild: bool
    lock_dir: str | None = None
    torch_threads: int | None = None
    visibility_timeout: float = 10.0


@dataclass(frozen=True)
class TaskPlan:
    """One task: its dask key, kind, the job or cell it runs, the key of the task it waits for, resources."""

    key: str
    kind: str  # train | prune | measure
    item: Any  # TrainJob | PruneJob | Cell
    depends_on: str | None
    resources: dict[str, float] = field(default_factory=dict)


def needs_gpu(cell: Cell, registry: Registry | None) -> bool:
    """A cell needs a GPU if its training asks for cuda or its runtime runs on cuda with the cell's params
    (``protocols.device_of``)."""
    if cell.prune.train.training.device == "cuda":
        return True
    record = registry.records["runtime"].get(cell.runtime) if registry is not None else None
    return record is not None and device_of(record.plugin, cell.runtime_params) == "cuda"


def plan_tasks(
    cells: list[Cell], token: str, registry: Registry | None = None, *, gpu: bool = True
) -> list[TaskPlan]:
    """The tasks of ``cells`` in dependency order: each training and pruning once, one measure per cell.

    A training or pruning asks for a GPU when any cell that depends on it trains on cuda; a measure when
    its cell needs one (``gpu=False`` drops every GPU request).
    """
    trains: dict[str, TaskPlan] = {}
    prunes: dict[str, TaskPlan] = {}
    measures: list[TaskPlan] = []

    def resources(cuda: bool) -> dict[str, float]:
        return {TIMING: 1, GPU: 1} if cuda and gpu else {TIMING: 1}

    for cell in cells:
        train = cell.prune.train
        train_cuda = train.training.device == "cuda"
        train_key = f"tsbench-train-{train.key}-{token}"
        trains.setdefault(train.key, TaskPlan(train_key, "train", train, None, resources(train_cuda)))
        upstream = train_key
        if not cell.prune.is_identity:
            prune_key = f"tsbench-prune-{cell.prune.key}-{token}"
            prunes.setdefault(cell.prune.key,
                              TaskPlan(prune_key, "prune", cell.prune, train_key, resources(train_cuda)))
            upstream = prune_key
        cuda = needs_gpu(cell, registry)
        measures.append(TaskPlan(f"tsbench-measure-{cell.key}-{token}", "measure", cell, upstream,
                                 resources(cuda)))
    return [*trains.values(), *prunes.values(), *measures]


# --- worker side -----------------------------------------------------------------------------------------

_state_lock = threading.Lock()
_workspaces: dict[str, Workspace] = {}
_registry: list[Registry] = []


def _worker_workspace(ctx: RunContext) -> Workspace:
    """This process's workspace for one run (datasets memoised), with a registry loaded once per process."""
    with _state_lock:
        ws = _workspaces.get(ctx.token)
        if ws is None:
            if not _registry:
                _registry.append(load_plugins())
            _workspaces.clear()  # a new run: drop the memoised datasets of the previous one
            ws = Workspace(Path(ctx.artifacts), ctx.data_dir, _registry[0], NullProgress(),
                           rebuild=ctx.rebuild)
            _workspaces[ctx.token] = ws
    threads = ctx.torch_threads or int(os.environ.get(TORCH_THREADS_ENV) or 0)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return ws


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, TsbenchError) else f"{type(exc).__name__}: {exc}"


def _adopt(ws: Workspace, ctx: RunContext, upstream: dict[str, Any]) -> None:
    """Take over what the upstream task left: its failure, or its artifact as made in this run.

    An artifact that the upstream worker wrote but this worker cannot see means the folder is not shared:
    that becomes the cell's error instead of a silent retraining here.
    """
    key = upstream["key"]
    if upstream.get("error"):
        ws._failed[key] = upstream["error"]
        return
    deadline = time.monotonic() + ctx.visibility_timeout
    while find_artifact(ws.artifacts, key) is None:
        if time.monotonic() > deadline:
            ws._failed[key] = (
                f"artifact {key} written by {upstream.get('host')} is not visible at {ws.artifacts} on "
                f"{socket.gethostname()}: the results store folder must be on a filesystem shared by all "
                "workers"
            )
            return
        time.sleep(0.25)
    ws._made.add(key)


def _step(ctx: RunContext, key: str, run: Any) -> dict[str, Any]:
    started = time.time()
    error = None
    try:
        with node_lock(ctx.lock_dir, exclusive=False):
            run()
    except Exception as exc:  # the failure travels as data; dependent cells turn it into failed rows
        error = _error_text(exc)
    return {"key": key, "error": error, "host": socket.gethostname(), "started_at": started,
            "finished_at": time.time()}


def train_task(ctx: RunContext, job: TrainJob) -> dict[str, Any]:
    """Dense training of one job (or its cached checkpoint); returns ``{key, error, host, ...}``."""
    ws = _worker_workspace(ctx)
    return _step(ctx, job.key, lambda: dense_artifact(ws, job))


def prune_task(ctx: RunContext, job: PruneJob, dense: dict[str, Any]) -> dict[str, Any]:
    """Pruning and fine-tuning of one job, after its dense training ``dense`` (the train task's result)."""
    ws = _worker_workspace(ctx)
    _adopt(ws, ctx, dense)
    return _step(ctx, job.key, lambda: pruned_artifact(ws, job))


def measure_task(ctx: RunContext, cell: Cell, upstream: dict[str, Any]) -> dict[str, Any]:
    """The cell's row, measured while holding this node's timing lock exclusively."""
    ws = _worker_workspace(ctx)
    _adopt(ws, ctx, upstream)
    if not upstream.get("error"):
        # the dense model timed beside the cell was trained upstream in this run (every pruning depends on its
        # training task): a --force run must not train it again here
        ws._made.add(cell.prune.train.key)
    with node_lock(ctx.lock_dir, exclusive=True):
        return measure_cell(ws, cell)


_TASKS = {"train": train_task, "prune": prune_task, "measure": measure_task}


# --- driver side -----------------------------------------------------------------------------------------


def failed_row(cell: Cell, error: str) -> dict[str, Any]:
    """The row of a cell whose task could not finish on the cluster (it was never timed: no host)."""
    now = time.time()
    return {**base_row(cell), "host": None, "status": STATUS_FAILED, "error": error, "started_at": now,
            "finished_at": now}


class DaskExecutor:
    """Run cells as dependent Dask futures on a scheduler at ``scheduler``, or on a fresh ``LocalCluster``.

    ``local_workers``: size of the local cluster (default: one worker per core), one thread per worker.
    ``retries``: how often a task is re-run after it raised or its worker died (the latter is the scheduler's
    ``allowed-failures``: set here for a local cluster, in the scheduler's config for a remote one).
    ``torch_threads``: intra-op threads for training on workers (default: ``$TSBENCH_TORCH_THREADS`` on the
    worker, else torch's default there, which is 1 under dask's nanny). Timing threads come from the spec's
    ``timing.threads``.
    ``lock_dir``: node-local folder for the node lock (default: the worker's temp folder).
    ``visibility_timeout``: seconds a worker waits for an upstream checkpoint to appear in the shared folder.
    """

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        local_workers: int | None = None,
        *,
        retries: int = 2,
        torch_threads: int | None = None,
        lock_dir: str | None = None,
        visibility_timeout: float = 10.0,
        connect_timeout: str = "30s",
    ) -> None:
        _require_distributed()
        if scheduler and local_workers is not None:
            raise UserError("--scheduler and --local-workers exclude each other: use an existing scheduler, "
                            "or let tsbench start a local cluster of N workers")
        if local_workers is not None and local_workers < 1:
            raise UserError(f"--local-workers: expected a number of workers >= 1, got {local_workers}")
        if retries < 0:
            raise UserError(f"retries: expected >= 0, got {retries}")
        self.scheduler = scheduler
        self.local_workers = local_workers
        self.retries = retries
        self.torch_threads = torch_threads
        self.lock_dir = lock_dir
        self.visibility_timeout = visibility_timeout
        self.connect_timeout = connect_timeout

    # -- connection --

    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        from distributed import Client, LocalCluster

        if self.scheduler:
            # a scheduler file (``dask scheduler --scheduler-file``) is the usual hand-over in batch jobs
            by_file = self.scheduler.endswith(".json")
            if by_file and not Path(self.scheduler).is_file():
                raise UserError(f"--scheduler {self.scheduler}: no such scheduler file; give tcp://HOST:PORT "
                                "or the file written by `dask scheduler --scheduler-file`")
            target = {"scheduler_file": self.scheduler} if by_file else {"address": self.scheduler}
            try:
                client = Client(**target, timeout=self.connect_timeout)
            except (OSError, TimeoutError) as exc:
                raise UserError(f"--scheduler {self.scheduler}: cannot reach the Dask scheduler ({exc}); "
                                "is it running, and is the address tcp://HOST:PORT?") from None
            with client:
                yield client
            return
        n_workers = self.local_workers or os.cpu_count() or 1
        dashboard = _has_bokeh()
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, resources={TIMING: 1},
            dashboard_address=":0" if dashboard else None,
            scheduler_kwargs={"allowed_failures": self.retries},
            silence_logs=logging.ERROR,  # worker restarts and slow shutdowns are noise on the terminal
        )
        try:
            if dashboard:
                print(f"dask dashboard: {cluster.dashboard_link}", file=sys.stderr)
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()

    def _check_workers(self, client: Any, tasks: list[TaskPlan]) -> bool:
        """Whether GPU requests can be honoured; a clear error when no worker offers the TIMING resource."""
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        if not workers:
            return True  # workers still starting (e.g. queued batch jobs): the tasks wait for them
        offered = [w.get("resources") or {} for w in workers.values()]
        if not any(r.get(TIMING, 0) >= 1 for r in offered):
            raise UserError(
                f"none of the {len(workers)} Dask workers offers the {TIMING} resource; start every worker "
                f"with --resources \"{TIMING}=1\" (one per node for honest timings; see docs/cluster.md)"
            )
        wants_gpu = any(GPU in t.resources for t in tasks)
        if wants_gpu and not any(r.get(GPU, 0) >= 1 for r in offered):
            warnings.warn(
                f"cells ask for a GPU but no Dask worker offers the {GPU} resource; running them without the "
                f"request (they fail or are skipped where torch sees no CUDA device). Start GPU workers with "
                f"--resources \"{TIMING}=1,{GPU}=1\".",
                stacklevel=3,
            )
            return False
        return True

    # -- execution --

    def execute(self, cells: Iterable[Cell], ws: Workspace) -> Iterator[dict[str, Any]]:
        """Submit every task, then yield each cell's row once, as its measure completes (the runner's cells are
        claimed as they are read: all of them before the first submission)."""
        cells = list(cells)
        if not cells:
            return
        from distributed import as_completed

        # absolute paths: workers do not share the driver's working directory
        data_dir = str(Path(ws.data_dir).resolve()) if ws.data_dir else None
        ctx = RunContext(uuid.uuid4().hex[:12], str(Path(ws.artifacts).resolve()), data_dir, ws.rebuild,
                         self.lock_dir, self.torch_threads, self.visibility_timeout)
        with self._client() as client:
            tasks = plan_tasks(cells, ctx.token, ws.plugins())
            if not self._check_workers(client, tasks):
                tasks = plan_tasks(cells, ctx.token, ws.plugins(), gpu=False)
            futures: dict[str, Any] = {}
            meta: dict[str, TaskPlan] = {}
            for task in tasks:
                args: list[Any] = [ctx, task.item]
                if task.depends_on is not None:
                    args.append(futures[task.depends_on])
                futures[task.key] = client.submit(
                    _TASKS[task.kind], *args, key=task.key, resources=task.resources, retries=self.retries,
                    priority=PRIORITY[task.kind],
                )
                meta[task.key] = task
            counts = {kind: sum(t.kind == kind for t in tasks) for kind in ("train", "prune")}
            bars = {kind: ws.progress.task(f"dask: {label}", total=counts[kind])
                    for kind, label in (("train", "dense trainings"), ("prune", "prunings")) if counts[kind]}
            yielded: set[str] = set()
            try:
                for future in as_completed(list(futures.values())):
                    task = meta[future.key]
                    if task.kind != "measure":
                        bars[task.kind].advance()
                        continue
                    cell: Cell = task.item
                    if cell.key in yielded:
                        continue
                    try:
                        row = future.result()
                    except BaseException as exc:  # KilledWorker, a cancelled future, a worker-side bug
                        if isinstance(exc, KeyboardInterrupt | GeneratorExit):
                            raise
                        row = failed_row(cell, f"dask: {_error_text(exc)}")
                    yielded.add(cell.key)
                    yield row
            finally:
                client.cancel([f for f in futures.values() if not f.done()])
                for bar in bars.values():
                    bar.close()


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None
