"""Host-wide locks shared by every tsbench process of a machine (``flock`` on files in one folder).

``host_lock``: a reader/writer lock. Work that loads the CPU (training, pruning) holds it shared, a timing holds
it exclusively, so no timing runs beside another run's work on this host, whichever executor or run started
it. The folder is ``$TSBENCH_LOCK_DIR``, else the temp folder. The OS drops a lock when its process dies, so
a killed run never wedges the host. Nested requests inside a held lock of the same or stronger mode are no-ops
(the Dask worker takes the exclusive lock around a whole cell, whose steps ask again).

``file_lock``: an exclusive lock on one path (one build of an artifact at a time across processes).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "tsbench-node.lock"
LOCK_DIR_ENV = "TSBENCH_LOCK_DIR"

_held = threading.local()  # .mode: "shared" | "exclusive" while this thread holds the host lock


def lock_folder(lock_dir: str | None = None) -> Path:
    return Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir())


@contextlib.contextmanager
def host_lock(lock_dir: str | None = None, *, exclusive: bool) -> Iterator[float]:
    """Hold the host lock; yields the seconds spent waiting for it. Without ``fcntl`` (Windows) a no-op.

    Writers (timings) go through a gate first and keep it until they hold the lock, so a stream of readers
    (trainings) cannot starve a waiting timing.
    """
    held = getattr(_held, "mode", None)
    if held == "exclusive" or (held == "shared" and not exclusive):
        yield 0.0
        return
    if held == "shared":
        raise RuntimeError("host_lock: an exclusive lock cannot be taken inside a shared one")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield 0.0
        return
    folder = lock_folder(lock_dir)
    gate_fd = _open_lock(folder / f"{LOCK_NAME}.gate")
    main_fd = _open_lock(folder / LOCK_NAME)
    started = time.monotonic()
    try:
        fcntl.flock(gate_fd, fcntl.LOCK_EX)
        try:
            fcntl.flock(main_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate_fd, fcntl.LOCK_UN)
        _held.mode = "exclusive" if exclusive else "shared"
        try:
            yield time.monotonic() - started
        finally:
            _held.mode = None
            fcntl.flock(main_fd, fcntl.LOCK_UN)
    finally:
        os.close(gate_fd)
        os.close(main_fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # created by another user on a shared node: flock needs no write access
        return os.open(path, os.O_RDONLY)
    with contextlib.suppress(OSError):  # let other users' processes on this host share the lock
        os.fchmod(fd, 0o666)
    return fd
