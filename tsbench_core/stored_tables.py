"""The ``cells`` and ``runs`` tables of a store file exactly as stored (JSON columns as text), read-only.

``tsbench merge`` reads its sources and its target this way and ``tsbench dump`` writes what it reads, so both
see the same values: every column this tsbench knows, ``None`` for one an older store lacks; rows sorted by
(spec_name, cell_key), runs by run_id, so that a store reads the same whatever order its rows were written in.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tsbench_core.store import COLUMN_NAMES

RUN_COLUMNS = ("run_id", "spec_name", "spec_hash", "started_at", "finished_at", "cells_total", "cells_cached",
               "cells_failed", "environment")
RUN_JSON_COLUMNS = ("environment",)

Raw = dict[str, Any]


def connect_read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    conn.row_factory = sqlite3.Row
    return conn


def raw_rows(path: Path) -> list[Raw]:
    """Every cells row as stored; ``sqlite3.DatabaseError`` when the file is no database or has no cells table."""
    conn = connect_read_only(path)
    try:
        if "cells" not in _tables(conn):
            raise sqlite3.DatabaseError("it has no cells table")
        return [{name: dict(r).get(name) for name in COLUMN_NAMES}
                for r in conn.execute("SELECT * FROM cells ORDER BY spec_name, cell_key")]
    finally:
        conn.close()


def raw_runs(path: Path) -> list[Raw]:
    """Every runs row as stored; none for a store without a runs table."""
    conn = connect_read_only(path)
    try:
        if "runs" not in _tables(conn):
            return []
        return [{name: dict(r).get(name) for name in RUN_COLUMNS}
                for r in conn.execute("SELECT * FROM runs ORDER BY run_id")]
    finally:
        conn.close()


def unknown_columns(path: Path) -> dict[str, list[str]]:
    """Columns of the store's cells and runs tables that this tsbench does not know (a newer tsbench's store)."""
    known = {"cells": COLUMN_NAMES, "runs": RUN_COLUMNS}
    conn = connect_read_only(path)
    try:
        present = _tables(conn)
        out = {}
        for table, names in known.items():
            if table in present:
                extra = [r["name"] for r in conn.execute(f"PRAGMA table_info({table})") if r["name"] not in names]
                if extra:
                    out[table] = extra
        return out
    finally:
        conn.close()


def schema_version(path: Path) -> int:
    """The store's ``PRAGMA user_version`` (0: the store records none)."""
    conn = connect_read_only(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
