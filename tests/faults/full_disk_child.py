"""Full-disk scenarios, run inside a private mount namespace (``unshare -rm``) so a small tmpfs can be mounted.

Usage: python full_disk_child.py WORKDIR SMALL_SPEC GROWN_SPEC; prints one JSON report on its last line.

- ``store``: the whole store (database and artifacts) on a tmpfs, filled to the last byte after a first run;
- ``artifacts``: only the artifact folder on a tmpfs, filled after a first run (the database has room).
Each: the grown spec is run on the full disk, the store compared with its state before, space freed, run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; the file is the space to free later."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):  # big blocks, then the last partial ones
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def cli(*args: str) -> dict[str, Any]:
    from tsbench_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except BaseException as exc:  # what would reach the user as a traceback
            code = f"raised {type(exc).__name__}: {exc}"
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def state(db: Path) -> dict[str, Any]:
    """The stored rows and artifacts, read independently of tsbench."""
    with sqlite3.connect(db, timeout=30) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = sorted(conn.execute("SELECT cell_key, status, finished_at, error FROM cells").fetchall())
        runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    artifacts = db.parent / "artifacts"
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in artifacts.glob("*") if p.is_file()
             and p.suffix in (".pt", ".json")}
    leftovers = [p.name for p in artifacts.rglob(".*.tmp")]
    return {"integrity": check, "rows": rows, "runs": runs, "artifacts": files, "tmp_files": leftovers}


def scenario(name: str, work: Path, small: str, grown: str) -> dict[str, Any]:
    store_dir = work / name
    if name == "store":
        mount_tmpfs(store_dir, "2m")
    else:
        mount_tmpfs(store_dir / "artifacts", "256k")
    db = store_dir / "r.db"
    first = cli("run", small, "--store", str(db), "--quiet")
    before = state(db)
    space = store_dir if name == "store" else store_dir / "artifacts"
    filler = fill(space)
    full = cli("run", grown, "--store", str(db), "--quiet")
    during = state(db)
    filler.unlink()
    resumed = cli("run", grown, "--store", str(db), "--quiet")
    return {"first": first, "before": before, "full": full, "during": during, "resumed": resumed,
            "after": state(db)}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    work, small, grown = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    report = {name: scenario(name, work, small, grown) for name in ("store", "artifacts")}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
