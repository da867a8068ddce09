"""The SQLite results store: one row per cell, one row per run (with its environment).

Every write is one transaction in WAL mode, so a SIGKILL at any moment loses at most the cell in progress and
never corrupts what is stored. Rows are keyed by the cell's content hash; storing a cell again replaces it.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    ("runtime", "TEXT"),
    ("quantize", "TEXT"),
    ("batch_size", "INTEGER"),
    ("threads", "INTEGER"),
    ("latency_ms_median", "REAL"),
    ("latency_ms_p10", "REAL"),
    ("latency_ms_p90", "REAL"),
    ("throughput_samples_per_s", "REAL"),
    ("speedup_vs_dense", "REAL"),
    ("dense_cell_key", "TEXT"),
    ("max_abs_err_vs_torch", "REAL"),
    ("rel_err_vs_torch", "REAL"),
    ("model_bytes", "INTEGER"),
    ("model_bytes_compressed", "INTEGER"),
    ("peak_rss_mb", "REAL"),
    ("runtime_info", "TEXT"),
    ("prune_info", "TEXT"),
    ("train_info", "TEXT"),
    ("host", "TEXT"),
    ("status", "TEXT"),
    ("error", "TEXT"),
    ("started_at", "REAL"),
    ("finished_at", "REAL"),
)
COLUMN_NAMES = tuple(name for name, _ in CELL_COLUMNS)
JSON_COLUMNS = ("runtime_info", "prune_info", "train_info")
STATUS_OK, STATUS_FAILED, STATUS_SKIPPED = "ok", "failed", "skipped"
DONE_STATUSES = (STATUS_OK, STATUS_SKIPPED)  # a resumed run redoes failed cells only

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cells ({", ".join(f"{n} {t}" for n, t in CELL_COLUMNS)});
CREATE INDEX IF NOT EXISTS cells_by_spec ON cells (spec_name);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, spec_name TEXT, spec_hash TEXT, started_at REAL, finished_at REAL,
    cells_total INTEGER, cells_cached INTEGER, cells_failed INTEGER, environment TEXT
);
"""


class Store:
    """A results database at ``path`` (created with its folder on first use)."""

    def __init__(self, path: str | Path = DEFAULT_STORE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._migrate()

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
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

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

    def put(self, row: dict[str, Any]) -> None:
        """Insert or replace one cell row (unknown keys are an error; JSON columns are serialised)."""
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
        done: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT cell_key FROM cells WHERE cell_key IN ({marks}) AND status IN (?, ?)",
                [*chunk, *DONE_STATUSES],
            )
            done.update(r["cell_key"] for r in rows)
        return done

    def fill_speedups(self) -> None:
        """Set ``speedup_vs_dense`` of every timed row whose dense reference (same runtime, batch size) is
        timed: dense median latency / this row's median latency."""
        with self._transaction() as conn:
            conn.execute(
                """UPDATE cells SET speedup_vs_dense = (
                       SELECT dense.latency_ms_median / cells.latency_ms_median FROM cells AS dense
                       WHERE dense.cell_key = cells.dense_cell_key AND dense.status = 'ok'
                         AND dense.latency_ms_median > 0)
                   WHERE latency_ms_median > 0 AND dense_cell_key IS NOT NULL"""
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
        query += (" ORDER BY spec_name, dataset, pred_len, model, pruner, target_sparsity, runtime, batch_size, "
                  "seed")
        return [_decode(r) for r in self._conn.execute(query, args)]

    def spec_names(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT DISTINCT spec_name FROM cells ORDER BY spec_name")]


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for name in JSON_COLUMNS:
        if out.get(name):
            out[name] = json.loads(out[name])
    return out
