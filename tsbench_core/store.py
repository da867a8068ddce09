"""The SQLite results store: one row per cell, one row per run (with its environment).

Every write is one transaction in WAL mode, so a SIGKILL at any moment loses at most the cell in progress and
never corrupts what is stored. Rows are keyed by the cell's content hash; storing a cell again replaces it.
The ``leases`` table says which run is computing which cell (see ``claim``), so concurrent runs on one store
split the work.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

from tsbench_core.errors import StoreError

DEFAULT_STORE = Path("tsbench-results") / "results.db"

# (name, SQL type) of every column of the ``cells`` table, in display order.
CELL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cell_key", "TEXT PRIMARY KEY"),
    ("run_id", "TEXT"),
    ("spec_name", "TEXT"),
    ("spec_hash", "TEXT"),
    ("dataset", "TEXT"),
    ("seq_len", "INTEGER"),
    ("label_len", "INTEGER"),
    ("pred_len", "INTEGER"),
    ("model", "TEXT"),
    ("seed", "INTEGER"),  # NULL only in rows stored before seeds were recorded, until their spec runs again
    ("pruner", "TEXT"),
    ("target_sparsity", "REAL"),
    ("fine_tuned", "INTEGER"),
    ("fine_tune", "TEXT"),  # the fine-tuning config as JSON (epochs, lr, max_train_batches); NULL: none / older row
    ("variant", "TEXT"),  # the non-default plugin options (variants.py): two variants of a plugin never merge
    ("train_key", "TEXT"),
    ("prune_key", "TEXT"),
    ("achieved_sparsity", "REAL"),
    ("sparsity_all", "REAL"),
    ("params_total", "INTEGER"),
    ("params_nonzero", "INTEGER"),
    ("macs_dense", "INTEGER"),
    ("macs_effective", "INTEGER"),
    ("mse", "REAL"),
    ("mae", "REAL"),
    ("mse_original", "REAL"),
    ("mae_original", "REAL"),
    ("accuracy_from", "TEXT"),  # "runtime": MSE/MAE measured through this row's runtime; "torch": torch's figures
    ("runtime", "TEXT"),
    ("quantize", "TEXT"),
    ("batch_size", "INTEGER"),
    ("threads", "INTEGER"),
    ("latency_ms_median", "REAL"),
    ("latency_ms_p10", "REAL"),
    ("latency_ms_p90", "REAL"),
    ("latency_ms_iqr", "REAL"),
    ("latency_outliers", "INTEGER"),  # samples beyond the Tukey fences, counted, kept (raw samples in runtime_info)
    ("latency_unstable", "INTEGER"),  # 1 when IQR / median > timing.UNSTABLE_IQR_FRACTION
    ("prepare_s", "REAL"),  # session creation: export, compile, open
    ("throughput_samples_per_s", "REAL"),
    ("speedup_vs_dense", "REAL"),
    ("dense_cell_key", "TEXT"),
    ("dense_latency_ms_paired", "REAL"),  # the dense reference's median, timed interleaved with this cell
    ("max_abs_err_vs_torch", "REAL"),
    ("rel_err_vs_torch", "REAL"),
    ("model_bytes", "INTEGER"),
    ("model_bytes_compressed", "INTEGER"),
    ("peak_rss_mb", "REAL"),
    ("fraction_of_supported_ops", "REAL"),
    ("runtime_info", "TEXT"),
    ("prune_info", "TEXT"),
    ("train_info", "TEXT"),
    ("host", "TEXT"),
    ("status", "TEXT"),
    ("error", "TEXT"),
    ("details", "TEXT"),
    ("started_at", "REAL"),
    ("finished_at", "REAL"),
)
COLUMN_NAMES = tuple(name for name, _ in CELL_COLUMNS)
JSON_COLUMNS = ("runtime_info", "prune_info", "train_info")
STATUS_OK, STATUS_FAILED, STATUS_SKIPPED = "ok", "failed", "skipped"
DONE_STATUSES = (STATUS_OK, STATUS_SKIPPED)  # a resumed run redoes failed cells (and stale skips: runner.plan)
CLAIMED, BUSY, DONE_ELSEWHERE = "claimed", "busy", "done elsewhere"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cells ({", ".join(f"{n} {t}" for n, t in CELL_COLUMNS)});
CREATE INDEX IF NOT EXISTS cells_by_spec ON cells (spec_name);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, spec_name TEXT, spec_hash TEXT, started_at REAL, finished_at REAL,
    cells_total INTEGER, cells_cached INTEGER, cells_failed INTEGER, environment TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    cell_key TEXT PRIMARY KEY, owner TEXT NOT NULL, host TEXT, pid INTEGER, heartbeat REAL
);
"""


class StoredState(NamedTuple):
    status: str
    finished_at: float | None
    runtime_info: dict[str, Any] | None


class Store:
    """A results database at ``path`` (created with its folder on first use)."""

    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                self._conn.row_factory = sqlite3.Row
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.executescript(_SCHEMA)
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL takes an exclusive lock without waiting on SQLite's busy handler,
                # so two runs opening one new store at once can see "locked": try again until the deadline.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise self._error(exc, "open") from None
                if getattr(self, "_conn", None) is not None:
                    self._conn.close()
                time.sleep(0.05)
            except (sqlite3.Error, OSError) as exc:
                raise self._error(exc, "open") from None

    def _error(self, exc: BaseException, doing: str) -> StoreError:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return StoreError(f"{self.path}: cannot {doing} the results store ({reason}); what is stored is kept. "
                          "Free disk space or fix the file's permissions, then run again to resume")

    def _migrate(self) -> None:
        """Add columns that a newer tsbench knows and an older database lacks (never drops anything)."""
        have = {row["name"] for row in self._conn.execute("PRAGMA table_info(cells)")}
        for name, sql_type in CELL_COLUMNS:
            if name not in have:
                self._conn.execute(f"ALTER TABLE cells ADD COLUMN {name} {sql_type.replace(' PRIMARY KEY', '')}")

    @property
    def directory(self) -> Path:
        """Folder beside the database for checkpoints and exported models."""
        return self.path.parent

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a database error (full disk, read-only file) becomes a ``StoreError``."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc, "write to") from None
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException as exc:
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc, "write to") from None
            raise

    # --- runs ---

    def start_run(self, spec_name: str, spec_hash: str, environment: dict[str, Any], cells_total: int,
                  cells_cached: int) -> str:
        run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO runs (run_id, spec_name, spec_hash, started_at, cells_total, cells_cached, "
                "environment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, spec_name, spec_hash, time.time(), cells_total, cells_cached, json.dumps(environment)),
            )
        return run_id

    def finish_run(self, run_id: str, cells_failed: int) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET finished_at = ?, cells_failed = ? WHERE run_id = ?",
                         (time.time(), cells_failed, run_id))

    def runs(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM runs ORDER BY started_at").fetchall()
        return [{**dict(r), "environment": json.loads(r["environment"] or "{}")} for r in rows]

    # --- cells ---

    def put(self, row: dict[str, Any], *, lease_owner: str | None = None) -> None:
        """Insert or replace one cell row (unknown keys are an error; JSON columns are serialised); with
        ``lease_owner``, the cell's lease is released in the same transaction."""
        unknown = set(row) - set(COLUMN_NAMES)
        if unknown:
            raise KeyError(f"not columns of the cells table: {sorted(unknown)}")
        values = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
        names = list(values)
        with self._transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO cells ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [values[n] for n in names],
            )
            if lease_owner is not None:
                conn.execute("DELETE FROM leases WHERE cell_key = ? AND owner = ?", (row["cell_key"], lease_owner))

    # --- leases: which run computes which cell ---

    def claim(self, key: str, owner: str, *, seen: StoredState | None, grace: float) -> str:
        """Claim ``key`` for ``owner``: ``CLAIMED``; ``BUSY`` while another live run holds it;
        ``DONE_ELSEWHERE`` when its row is no longer the one ``seen`` when planning (another run stored it).

        A lease is taken over when its heartbeat is older than ``grace`` seconds, or at once when its process
        ran on this host and is gone."""
        now = time.time()
        with self._transaction() as conn:
            stored = conn.execute("SELECT finished_at FROM cells WHERE cell_key = ?", (key,)).fetchone()
            if stored is not None and (seen is None or stored["finished_at"] != seen.finished_at):
                return DONE_ELSEWHERE
            lease = conn.execute("SELECT * FROM leases WHERE cell_key = ?", (key,)).fetchone()
            if lease is not None and lease["owner"] != owner and not _expired(lease, now, grace):
                return BUSY
            conn.execute("INSERT OR REPLACE INTO leases (cell_key, owner, host, pid, heartbeat) VALUES (?, ?, ?, ?, ?)",
                         (key, owner, socket.gethostname(), os.getpid(), now))
        return CLAIMED

    def heartbeat(self, owner: str) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE leases SET heartbeat = ? WHERE owner = ?", (time.time(), owner))

    def release_leases(self, owner: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    def leases(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn.execute("SELECT * FROM leases ORDER BY cell_key")]

    def put_raw(self, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
        """Insert or replace rows and runs as another store holds them (JSON columns as text), in one
        transaction (``tsbench merge``)."""
        with self._transaction() as conn:
            for table, items in (("cells", rows), ("runs", runs)):
                for item in items:
                    names = list(item)
                    conn.execute(f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
                                 f"VALUES ({', '.join('?' * len(names))})", [item[n] for n in names])

    def fill_seeds(self, seeds: dict[str, int]) -> int:
        """Record the seed of stored rows that lack it (rows stored before seeds were recorded), given
        ``{cell_key: seed}`` from the expansion of their spec; returns how many rows were filled."""
        if not seeds:
            return 0
        with self._transaction() as conn:
            cursor = conn.executemany("UPDATE cells SET seed = ? WHERE cell_key = ? AND seed IS NULL",
                                      [(seed, key) for key, seed in seeds.items()])
            return cursor.rowcount

    def done_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` are stored as ok or skipped."""
        return {key for key, state in self.states(keys).items() if state.status in DONE_STATUSES}

    def states(self, keys: list[str]) -> dict[str, StoredState]:
        """What is stored of each of ``keys`` (absent keys are not in the result)."""
        found: dict[str, StoredState] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT cell_key, status, finished_at, runtime_info FROM cells WHERE cell_key IN ({marks})", chunk)
            for r in rows:
                info = json.loads(r["runtime_info"]) if r["runtime_info"] else None
                found[r["cell_key"]] = StoredState(r["status"], r["finished_at"], info)
        return found

    def fill_speedups(self) -> None:
        """Set ``speedup_vs_dense`` of every row timed as a pair with its dense reference (``dense_cell_key``,
        same process, host and threads, interleaved rounds): the paired dense median / this row's median. A
        row without a paired timing (the pair could not run) has none; rows stored before pairs were timed keep
        what they have."""
        with self._transaction() as conn:
            conn.execute(
                """UPDATE cells SET speedup_vs_dense = dense_latency_ms_paired / latency_ms_median
                   WHERE latency_ms_median > 0 AND dense_latency_ms_paired > 0 AND dense_cell_key IS NOT NULL"""
            )

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM cells WHERE cell_key = ?", (key,)).fetchone()
        return _decode(row) if row else None

    def rows(self, spec_name: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM cells"
        args: tuple[Any, ...] = ()
        if spec_name is not None:
            query += " WHERE spec_name = ?"
            args = (spec_name,)
        # cell_key last: rows that tie on the rest (fine-tuning, variant, quantize) come in one order whatever
        # order they were stored in, so a store rebuilt by `tsbench merge` lists them as the original does
        query += (" ORDER BY spec_name, dataset, pred_len, model, pruner, target_sparsity, runtime, batch_size, "
                  "seed, cell_key")
        return [_decode(r) for r in self._conn.execute(query, args)]

    def spec_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT spec_name FROM cells ORDER BY spec_name")]


def _expired(lease: sqlite3.Row, now: float, grace: float) -> bool:
    if now - (lease["heartbeat"] or 0) > grace:
        return True
    return lease["host"] == socket.gethostname() and not _alive(lease["pid"])


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for name in JSON_COLUMNS:
        if out.get(name):
            out[name] = json.loads(out[name])
    return out
