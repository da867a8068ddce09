"""``tsbench merge A.db B.db … --into ALL.db``: rows and runs of other stores joined into one store.

A source is a store (SQLite) or a ``tsbench dump`` file (``dump.py``, told apart by their first bytes); both read
as the same rows and runs, so everything below holds for either.

Idempotent: a row already there with the same content is left alone, so merging a store twice adds nothing. The
same cell key with different content is a conflict: the merge then writes nothing and reports every conflict
(two stores that timed the same cell separately conflict, since their latencies differ). An ok row replaces a
failed or skipped row of the same cell (a run would retry that cell anyway), and a failed or skipped row never
replaces anything. Sources are opened read-only; merged rows need no artifacts (reports read rows only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsbench_core.dump import GZIP_MAGIC, read_dump
from tsbench_core.errors import UserError
from tsbench_core.store import COLUMN_NAMES, STATUS_OK, Store
from tsbench_core.stored_tables import raw_rows, raw_runs

# filled in by the store from other rows, so not part of a row's content
DERIVED_COLUMNS = ("speedup_vs_dense",)
# identity metadata a newer tsbench records and rows stored before the column existed lack (the cell key already
# fixes it): NULL on one side matches any value on the other
LATE_COLUMNS = ("seed", "fine_tune", "variant", "train_key", "prune_key")
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Conflict:
    """One cell stored with different content in ``source`` and in the merged store (or an earlier source)."""

    source: Path
    cell_key: str
    label: str
    differences: list[tuple[str, Any, Any]]  # (column, value already merged, value in source)

    def describe(self, limit: int = 4) -> str:
        shown = ", ".join(f"{c}: {_short(a)} vs {_short(b)}" for c, a, b in self.differences[:limit])
        more = f" and {len(self.differences) - limit} more columns" if len(self.differences) > limit else ""
        return f"{self.source}: cell {self.cell_key} ({self.label}) differs — {shown}{more}"


@dataclass
class MergeResult:
    into: Path
    added: int = 0
    identical: int = 0
    replaced_failed: int = 0  # an ok row replaced a failed or skipped one
    not_taken: int = 0  # a failed or skipped source row where the merged store already has the cell
    runs_added: int = 0
    conflicts: list[Conflict] = field(default_factory=list)

    def summary(self) -> str:
        if self.conflicts:
            return (f"{len(self.conflicts)} conflicting cells; nothing was merged into {self.into} "
                    "(remove or rerun the differing cells in one of the stores, then merge again)")
        return (f"{self.into}: {self.added} rows added, {self.replaced_failed} failed/skipped rows replaced by ok "
                f"ones, {self.identical} already there, {self.not_taken} failed/skipped rows not taken; "
                f"{self.runs_added} runs added")


def merge_stores(sources: Sequence[str | Path], into: str | Path) -> MergeResult:
    """Merge the rows and runs of ``sources`` into the store at ``into`` (created when missing); with conflicts
    nothing is written and they are listed in the result."""
    into = Path(into)
    if not sources:
        raise UserError("merge: name at least one store to merge")
    for source in sources:
        if Path(source).resolve() == into.resolve():
            raise UserError(f"merge: {source} is the target store itself; --into must be another file")
    loaded = [(Path(s), *_read_source(Path(s))) for s in sources]
    result = MergeResult(into)
    with Store(into) as target:
        merged: dict[str, dict[str, Any]] = {r["cell_key"]: r for r in raw_rows(target.path)}
        runs: dict[str, dict[str, Any]] = {r["run_id"]: r for r in raw_runs(target.path)}
        to_write: dict[str, dict[str, Any]] = {}
        runs_to_write: dict[str, dict[str, Any]] = {}
        for source, rows, source_runs in loaded:
            for row in rows:
                _merge_row(source, row, merged, to_write, result)
            for run in source_runs:
                known = runs.get(run["run_id"])
                if known is None or (known.get("finished_at") is None and run.get("finished_at") is not None):
                    result.runs_added += known is None
                    runs[run["run_id"]] = runs_to_write[run["run_id"]] = run
        if result.conflicts:
            return result
        target.put_raw(list(to_write.values()), list(runs_to_write.values()))
        target.fill_speedups()
    return result


def _merge_row(source: Path, row: dict[str, Any], merged: dict[str, dict[str, Any]],
               to_write: dict[str, dict[str, Any]], result: MergeResult) -> None:
    key = row["cell_key"]
    known = merged.get(key)
    if known is None:
        merged[key] = to_write[key] = row
        result.added += 1
        return
    differences = _differences(known, row)
    if not differences:
        result.identical += 1
        return
    ok, known_ok = row.get("status") == STATUS_OK, known.get("status") == STATUS_OK
    if ok and not known_ok:
        merged[key] = to_write[key] = row
        result.replaced_failed += 1
    elif not ok:
        result.not_taken += 1
    else:
        result.conflicts.append(Conflict(source, key, _label(row), differences))


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    out = []
    for column in COLUMN_NAMES:
        if column in DERIVED_COLUMNS:
            continue
        left, right = a.get(column), b.get(column)
        if column in LATE_COLUMNS and (left is None or right is None):
            continue
        if left != right:
            out.append((column, left, right))
    return out


def _label(row: dict[str, Any]) -> str:
    target = "" if row.get("pruner") == "dense" else f"@{row.get('target_sparsity'):g}"
    return (f"{row.get('spec_name')}: {row.get('dataset')}/{row.get('pred_len')} {row.get('model')} "
            f"seed {row.get('seed')} {row.get('pruner')}{target} {row.get('runtime')} bs{row.get('batch_size')}")


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_source(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows and runs of a store (an SQLite file) or of a ``tsbench dump`` file (JSON lines), as stored."""
    if not path.is_file():
        raise UserError(f"merge: {path}: no such store or dump file")
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head.lstrip().startswith(b"{") or head.startswith(GZIP_MAGIC):
        return read_dump(path)
    if head != SQLITE_MAGIC:
        raise UserError(f"merge: {path}: not a tsbench results store (an SQLite file) nor a `tsbench dump` file "
                        "(JSON lines, or their .gz)")
    try:
        return raw_rows(path), raw_runs(path)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"merge: {path}: not a tsbench results store ({exc})") from None
