"""The runner only sequences: expand the spec, ask the store what is done, execute the rest, store each row."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tsbench_core.cells import Cell, expand, select, spec_hash
from tsbench_core.environment import environment
from tsbench_core.executors.local import LocalExecutor
from tsbench_core.pipeline import Workspace
from tsbench_core.preflight import preflight
from tsbench_core.progress import NullProgress, Progress
from tsbench_core.registry import Registry, load_plugins
from tsbench_core.spec import Spec
from tsbench_core.store import DEFAULT_STORE, STATUS_FAILED, STATUS_SKIPPED, Store


class Executor(Protocol):
    name: str

    def execute(self, cells: list[Cell], ws: Workspace) -> Any: ...


@dataclass
class RunSummary:
    spec_name: str
    run_id: str | None
    total: int
    cached: int
    statuses: Counter = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (cell label, error)

    @property
    def failed(self) -> int:
        return self.statuses.get(STATUS_FAILED, 0)


def plan(spec: Spec, store: Store, registry: Registry, *, force: bool = False,
         only: dict[str, set[str]] | None = None) -> tuple[list[Cell], list[Cell]]:
    """All (selected) cells of a spec, and those still to run."""
    cells = expand(spec, registry)
    if only:
        cells = select(cells, only)
    done = set() if force else store.done_keys([c.key for c in cells])
    return cells, [c for c in cells if c.key not in done]


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
) -> RunSummary:
    """Run every cell of ``spec`` not already stored (all of them with ``force``) and store the rows;
    ``only`` restricts the run to cells whose attributes take the given values (see ``cells.select``)."""
    registry = registry or load_plugins()
    owned = not isinstance(store, Store)
    db = Store(store or DEFAULT_STORE) if owned else store
    progress = progress or NullProgress()
    try:
        cells, todo = plan(spec, db, registry, force=force, only=only)
        db.fill_seeds({c.key: c.prune.train.seed for c in cells})
        summary = RunSummary(spec.name, None, len(cells), len(cells) - len(todo))
        if not todo:
            return summary
        ws = Workspace(db.directory / "artifacts", data_dir, registry, progress, rebuild=force)
        preflight(spec, todo, ws)  # a data problem stops here: no run row, no cell row
        summary.run_id = db.start_run(spec.name, spec_hash(spec), environment(registry), len(cells), summary.cached)
        labels = {c.key: c.label() for c in todo}
        overall = progress.task(f"{spec.name}: cells", total=len(todo))
        for row in (executor or LocalExecutor()).execute(todo, ws):
            row["run_id"] = summary.run_id
            db.put(row)
            summary.statuses[row["status"]] += 1
            if row["status"] in (STATUS_FAILED, STATUS_SKIPPED):
                summary.failures.append((labels.get(row["cell_key"], row["cell_key"]), row.get("error") or ""))
            overall.advance()
        db.fill_speedups()
        db.finish_run(summary.run_id, summary.failed)
        return summary
    finally:
        if owned:
            db.close()
