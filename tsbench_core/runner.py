"""The runner only sequences: expand the spec, ask the store what is done, execute the rest, store each row.

Concurrent runs on one store split the work through leases (``store.claim``): a cell is handed to the
executor only once this run holds its lease, a heartbeat thread keeps the run's leases fresh, and a cell
another live run holds is left for later and then either found stored (counted in ``elsewhere``) or taken over
when its lease expires (its process died).
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tsbench_core.cells import Cell, expand, select, spec_hash
from tsbench_core.environment import environment
from tsbench_core.errors import StoreError
from tsbench_core.executors.local import LocalExecutor
from tsbench_core.pipeline import SKIP_FACTS, Workspace
from tsbench_core.preflight import preflight
from tsbench_core.progress import NullProgress, Progress
from tsbench_core.registry import Registry, load_plugins
from tsbench_core.spec import Spec
from tsbench_core.store import (
    BUSY,
    CLAIMED,
    DEFAULT_STORE,
    DONE_ELSEWHERE,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_SKIPPED,
    Store,
    StoredState,
)


class Executor(Protocol):
    name: str

    def execute(self, cells: Iterable[Cell], ws: Workspace) -> Any: ...


@dataclass(frozen=True)
class LeasePolicy:
    """How often a run renews its leases, and after how long without renewal a lease counts as abandoned
    (a lease of a process gone from this host is taken over at once)."""

    heartbeat_s: float = 10.0
    grace_s: float = 120.0
    poll_s: float = 1.0  # how often a run waiting for cells held by another run looks again


@dataclass
class RunSummary:
    spec_name: str
    run_id: str | None
    total: int
    cached: int
    statuses: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (cell label, error)
    elsewhere: int = 0  # cells another run on the same store computed while this one ran
    computed: list[str] = field(default_factory=list)  # keys of the cells this run stored

    @property
    def failed(self) -> int:
        return self.statuses.get(STATUS_FAILED, 0)


def plan(spec: Spec, store: Store, registry: Registry, *, force: bool = False,
         only: dict[str, set[str]] | None = None, retry_failed: bool = False,
         retime: bool = False) -> tuple[list[Cell], list[Cell]]:
    """All (selected) cells of a spec, and those still to run: not stored, failed, or skipped while their
    runtime was unavailable and now available. ``retry_failed``: the failed ones only; ``force`` or ``retime``:
    all of them."""
    cells, todo, _ = _plan(spec, store, registry, force=force or retime, only=only, retry_failed=retry_failed)
    return cells, todo


def _plan(spec: Spec, store: Store, registry: Registry, *, force: bool, only: dict[str, set[str]] | None,
          retry_failed: bool) -> tuple[list[Cell], list[Cell], dict[str, StoredState]]:
    cells = expand(spec, registry)
    if only:
        cells = select(cells, only)
    states = store.states([c.key for c in cells])
    if force:
        return cells, list(cells), states
    if retry_failed:
        return cells, [c for c in cells if c.key in states and states[c.key].status == STATUS_FAILED], states
    available: dict[str, bool] = {}

    def stale_skip(cell: Cell, info: dict[str, Any] | None) -> bool:
        if cell.runtime not in available:
            record = registry.records["runtime"].get(cell.runtime)
            available[cell.runtime] = bool(record and record.availability().available)
        # rows from before this record are re-examined once; a skip while the runtime was available stays
        was_available = ((info or {}).get(SKIP_FACTS) or {}).get("runtime_available", False)
        return available[cell.runtime] and not was_available

    todo = []
    for cell in cells:
        state = states.get(cell.key)
        if state is not None and (state.status == STATUS_OK or (
                state.status == STATUS_SKIPPED and not stale_skip(cell, state.runtime_info))):
            continue
        todo.append(cell)
    return cells, todo, states


def run(
    spec: Spec,
    store: Store | str | Path | None = None,
    *,
    registry: Registry | None = None,
    force: bool = False,
    data_dir: str | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
    only: dict[str, set[str]] | None = None,
    retry_failed: bool = False,
    leases: LeasePolicy | None = None,
    retime: bool = False,
) -> RunSummary:
    """Run every cell of ``spec`` not already stored (all of them with ``force``, the failed ones with
    ``retry_failed``) and store the rows; ``only`` restricts the run to cells whose attributes take the given
    values (see ``cells.select``). ``retime`` redoes every selected cell like ``force`` but reuses the stored
    checkpoints: the export, output check, timing and runtime accuracy are measured again, nothing is trained."""
    if force and retime:
        raise ValueError("run: force rebuilds the checkpoints that retime reuses; choose one")
    registry = registry or load_plugins()
    owned = not isinstance(store, Store)
    db = Store(store or DEFAULT_STORE) if owned else store
    progress = progress or NullProgress()
    policy = leases or LeasePolicy()
    try:
        cells, todo, seen = _plan(spec, db, registry, force=force or retime, only=only,
                                  retry_failed=retry_failed)
        db.fill_seeds({c.key: c.prune.train.seed for c in cells})
        summary = RunSummary(spec.name, None, len(cells), len(cells) - len(todo))
        if not todo:
            return summary
        ws = Workspace(db.directory / "artifacts", data_dir, registry, progress, rebuild=force)
        preflight(spec, todo, ws)  # a data problem stops here: no run row, no cell row
        summary.run_id = db.start_run(spec.name, spec_hash(spec), environment(registry), len(cells), summary.cached)
        owner = f"{socket.gethostname()}:{summary.run_id}:{uuid.uuid4().hex[:6]}"
        labels = {c.key: c.label() for c in todo}
        overall = progress.task(f"{spec.name}: cells", total=len(todo))
        with _Heartbeat(db.path, owner, policy.heartbeat_s):
            try:
                claimed = _claimed(db, todo, owner, seen, policy, summary, overall)
                for row in (executor or LocalExecutor()).execute(claimed, ws):
                    row["run_id"] = summary.run_id
                    db.put(row, lease_owner=owner)
                    summary.computed.append(row["cell_key"])
                    summary.statuses[row["status"]] += 1
                    if row["status"] in (STATUS_FAILED, STATUS_SKIPPED):
                        summary.failures.append((labels.get(row["cell_key"], row["cell_key"]),
                                                 row.get("error") or ""))
                    overall.advance()
            finally:
                with suppress(StoreError):  # a full disk: the leases expire with this process anyway
                    db.release_leases(owner)
        db.fill_speedups()
        db.finish_run(summary.run_id, summary.failed)
        return summary
    finally:
        if owned:
            db.close()


def _claimed(db: Store, todo: list[Cell], owner: str, seen: dict[str, StoredState], policy: LeasePolicy,
             summary: RunSummary, overall: Any) -> Iterator[Cell]:
    """The cells of ``todo`` this run holds the lease of, claimed one at a time as the executor asks; cells
    held by another live run are tried again after the others, until stored by it or abandoned."""
    pending = todo
    while pending:
        waiting = []
        for cell in pending:
            state = db.claim(cell.key, owner, seen=seen.get(cell.key), grace=policy.grace_s)
            if state == CLAIMED:
                yield cell
            elif state == BUSY:
                waiting.append(cell)
            else:
                assert state == DONE_ELSEWHERE
                summary.elsewhere += 1
                overall.advance()
        if waiting and len(waiting) == len(pending):
            overall.describe(f"{summary.spec_name}: waiting for {len(waiting)} cells another run is computing")
            time.sleep(policy.poll_s)
        pending = waiting


class _Heartbeat:
    """A thread renewing ``owner``'s leases every ``interval`` seconds, on its own connection."""

    def __init__(self, path: Path, owner: str, interval: float) -> None:
        self._path, self._owner, self._interval = path, owner, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="tsbench-lease-heartbeat", daemon=True)

    def _beat(self) -> None:
        try:
            store = Store(self._path)
        except StoreError:  # the main connection reports the problem; leases then expire after their grace
            return
        with store:
            while not self._stop.wait(self._interval):
                with suppress(StoreError):  # a locked or full database: the next beat tries again
                    store.heartbeat(self._owner)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


__all__ = ["STATUS_OK", "LeasePolicy", "RunSummary", "plan", "run"]
