"""``tsbench dump``: a store as lossless, deterministic text, and that text read back (``tsbench merge`` takes
dumps as sources beside stores, so a store can be rebuilt from dumps committed to git).

One JSON object per line (ASCII)::

    {"table": "header", "format": "tsbench-dump", "version": 1}   # + "store_schema_version" if the store has one
    {"table": "run", "run_id": …, …}           # every runs column; runs sorted by run_id
    {"table": "row", "cell_key": …, …}         # every cells column; rows sorted by spec_name, cell_key

Every column is written, NULL as ``null``, numbers as SQLite returns them (floats by ``repr``: they read back
exactly, ``1.0`` stays a float). A JSON column (``runtime_info``, ``prune_info``, ``train_info``, a run's
``environment``) is written as its JSON value; a stored text that would not serialise back to the same bytes
(not written by tsbench) is written as the text and its column named in the line's ``"verbatim"`` list. Dumping
an unchanged store gives the same bytes. An ``--out`` ending in ``.gz`` is gzip-compressed (with mtime 0, so
still deterministic): the raw timing samples of fast models make a dump large (DLinear's 174 study rows: 31 MB
of text, 8.5 MB gzipped). Reading tells the two apart by their first bytes.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from tsbench_core.errors import UserError
from tsbench_core.files import write_atomic, write_text_atomic
from tsbench_core.store import COLUMN_NAMES, JSON_COLUMNS
from tsbench_core.stored_tables import (
    RUN_COLUMNS,
    RUN_JSON_COLUMNS,
    Raw,
    raw_rows,
    raw_runs,
    schema_version,
    unknown_columns,
)

FORMAT = "tsbench-dump"
GZIP_MAGIC = b"\x1f\x8b"
VERSION = 1
HEADER_KEYS = ("table", "format", "version", "store_schema_version")
VERBATIM = "verbatim"
REDUMP = "write it again with `tsbench dump --store STORE --out FILE`, or restore it from git"


@dataclass(frozen=True)
class Table:
    """How one store table appears in a dump: its line tag, columns, JSON columns and key column."""

    tag: str
    columns: tuple[str, ...]
    json_columns: tuple[str, ...]
    key: str


RUNS = Table("run", RUN_COLUMNS, RUN_JSON_COLUMNS, "run_id")
ROWS = Table("row", COLUMN_NAMES, JSON_COLUMNS, "cell_key")
TABLES = {t.tag: t for t in (RUNS, ROWS)}


# --- writing ---

def dump_text(store: Path, spec_names: Collection[str] | None = None) -> str:
    """The dump of the store at ``store`` (only the rows and runs of ``spec_names``, when given)."""
    store = Path(store)
    if not store.is_file():
        raise UserError(f"dump: no results store at {store}; pass --store PATH")
    try:
        extra = unknown_columns(store)
        rows, runs, version = raw_rows(store), raw_runs(store), schema_version(store)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"dump: {store}: not a tsbench results store ({exc})") from None
    if extra:
        listed = "; ".join(f"{table}: {', '.join(names)}" for table, names in extra.items())
        raise UserError(f"dump: {store} has columns this tsbench does not know ({listed}); it was written by a "
                        "newer tsbench: dump it with that version")
    if spec_names:
        stored = {r["spec_name"] for r in rows}
        missing = sorted(set(spec_names) - stored)
        if missing:
            known = ", ".join(sorted(str(s) for s in stored)) or "none"
            raise UserError(f"dump: --spec {', '.join(missing)}: no rows for that spec in {store} (stored specs: "
                            f"{known})")
        rows = [r for r in rows if r["spec_name"] in spec_names]
        runs = [r for r in runs if r["spec_name"] in spec_names]
    header: dict[str, Any] = {"table": "header", "format": FORMAT, "version": VERSION}
    if version:
        header["store_schema_version"] = version
    lines = [json.dumps(header)]
    lines += [_encode(store, RUNS, run) for run in runs]
    lines += [_encode(store, ROWS, row) for row in rows]
    return "".join(line + "\n" for line in lines)


def write_dump(store: Path, out: Path, spec_names: Collection[str] | None = None) -> Path:
    """Write the dump of ``store`` to ``out`` atomically (its folder created); returns ``out``."""
    out = Path(out)
    if out.resolve() == Path(store).resolve():
        raise UserError(f"dump: --out {out} is the store itself; write the dump to another file")
    text = dump_text(store, spec_names)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".gz":  # timing samples make dumps large; mtime 0 keeps the bytes deterministic
        data = gzip.compress(text.encode("utf-8"), mtime=0)
        return write_atomic(out, lambda handle: handle.write(data))
    return write_text_atomic(out, text)


def _encode(store: Path, table: Table, raw: Raw) -> str:
    line: dict[str, Any] = {"table": table.tag}
    verbatim = []
    for column in table.columns:
        value = raw[column]
        if isinstance(value, bytes):
            raise UserError(f"dump: {store}: {table.tag} {raw[table.key]}: column {column} holds binary data, which "
                            "tsbench never writes; remove that row or clear the value")
        if column in table.json_columns and value is not None:
            parsed = _canonical_json(value)
            if parsed is None:
                verbatim.append(column)
            else:
                value = parsed
        line[column] = value
    if verbatim:
        line[VERBATIM] = verbatim
    return json.dumps(line)


def _canonical_json(value: Any) -> Any:
    """The JSON value of a stored JSON text when serialising it gives back the same text, else ``None``."""
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if parsed is not None and json.dumps(parsed) == value else None


# --- reading ---

def read_dump(path: Path) -> tuple[list[Raw], list[Raw]]:
    """The rows and runs of a dump as a store holds them (JSON columns as text); a malformed line is a
    ``UserError`` naming the file, the line and what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if data[:2] == GZIP_MAGIC else data).decode("utf-8")
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a tsbench dump (a damaged gzip file: {exc}); {REDUMP}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a tsbench dump (not UTF-8 text: {exc.reason} at byte {exc.start}); "
                        f"{REDUMP}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the dump ({exc.strerror or exc})") from None
    found: dict[str, tuple[list[Raw], dict[str, int]]] = {tag: ([], {}) for tag in TABLES}
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = _parse_line(path, number, line)
        tag = item.get("table")
        if not header_seen:
            _check_header(path, number, item)
            header_seen = True
            continue
        if tag == "header":
            _fail(path, number, "a second header line (two dumps joined into one file?)",
                  "keep one dump per file")
        table = TABLES.get(tag) if isinstance(tag, str) else None
        if table is None:
            _fail(path, number, f"unknown table {tag!r} (a dump has one header, then run and row lines)", REDUMP)
        items, lines_of = found[table.tag]
        raw = _decode(path, number, table, item)
        first = lines_of.setdefault(raw[table.key], number)
        if first != number:
            _fail(path, number, f"{table.key} {raw[table.key]} appears again (first on line {first})",
                  "keep one of the two lines (a dump never repeats a key)")
        items.append(raw)
    if not header_seen:
        _fail(path, 1, "empty file, not a tsbench dump", REDUMP)
    return found[ROWS.tag][0], found[RUNS.tag][0]


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        item = json.loads(line)
    except ValueError as exc:
        where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        hint = " (a git conflict marker?)" if line.startswith(("<<<<<<<", "=======", ">>>>>>>")) else ""
        _fail(path, number, f"not a JSON line{hint}: {getattr(exc, 'msg', exc)}{where}", REDUMP)
    if not isinstance(item, dict):
        _fail(path, number, f"a JSON {type(item).__name__}, not an object", REDUMP)
    return item


def _check_header(path: Path, number: int, item: dict[str, Any]) -> None:
    if item.get("table") != "header" or item.get("format") != FORMAT:
        looks = (" (this looks like `tsbench results --format jsonl` output, which has no runs and no header)"
                 if "table" not in item and ROWS.key in item else "")
        _fail(path, number, f"not a tsbench dump: the first line must be its header {{\"table\": \"header\", "
                            f"\"format\": \"{FORMAT}\", …}}{looks}",
              "write the dump with `tsbench dump --store STORE --out FILE`")
    version = item.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(path, number, f"header: version {version!r} is not a dump format version", REDUMP)
    if version > VERSION:
        _fail(path, number, f"dump format version {version}; this tsbench reads up to {VERSION}",
              "merge it with a newer tsbench")
    unknown = sorted(set(item) - set(HEADER_KEYS))
    if unknown:
        _fail(path, number, f"header: unknown fields {', '.join(unknown)}", REDUMP)


def _decode(path: Path, number: int, table: Table, item: dict[str, Any]) -> Raw:
    unknown = [k for k in item if k not in table.columns and k not in ("table", VERBATIM)]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        _fail(path, number, f"unknown column {names} of the {table.tag} table (a dump from a newer tsbench, or "
                            "edited by hand)", "merge it with the tsbench that wrote it, or remove the column")
    key = item.get(table.key)
    if not isinstance(key, str) or not key:
        _fail(path, number, f"{table.tag} line without its {table.key}", REDUMP)
    verbatim = item.get(VERBATIM, [])
    if not isinstance(verbatim, list) or any(c not in table.json_columns for c in verbatim):
        _fail(path, number, f"{VERBATIM!r} must list JSON columns of the {table.tag} table "
                            f"({', '.join(table.json_columns)}), not {verbatim!r}", REDUMP)
    raw: Raw = {}
    for column in table.columns:
        value = item.get(column)
        if column in table.json_columns and column not in verbatim:
            raw[column] = None if value is None else json.dumps(value)
        elif value is None or (isinstance(value, str | int | float) and not isinstance(value, bool)):
            raw[column] = value
        else:
            _fail(path, number, f"column {column!r} holds a JSON {type(value).__name__}; the {table.tag} table "
                                "holds text, numbers or null there", REDUMP)
    return raw


def _fail(path: Path, number: int, what: str, todo: str) -> NoReturn:
    raise UserError(f"{path}:{number}: {what}; {todo}")
