"""Test-only: a Dask worker preload that makes a worker process die while it runs a chosen tsbench task.

Used as ``distributed.worker.preload`` (a file path), configured through environment variables that the
test sets before the cluster starts (worker processes inherit them):
``TSBENCH_TEST_KILL_PREFIX`` (task keys to kill on), ``TSBENCH_TEST_KILL_MARKER`` (a file: one line per
kill) and ``TSBENCH_TEST_KILL_ALWAYS`` (``1``: every attempt dies; otherwise only the first one) and
``TSBENCH_TEST_KILL_DELAY`` (seconds into the task; 0: at once, before the task can finish).
"""

from __future__ import annotations

import os
import signal
import threading

from distributed import WorkerPlugin


class KillOnTask(WorkerPlugin):
    """SIGKILL this worker shortly after it starts a task whose key starts with ``prefix``."""

    name = "tsbench-kill-on-task"

    def __init__(self, prefix: str, marker: str, always: bool = False, delay: float = 0.3) -> None:
        self.prefix = prefix
        self.marker = marker
        self.always = always
        self.delay = delay

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self.always else os.O_EXCL)
        try:  # O_EXCL: of two workers starting such a task at once, only one dies
            fd = os.open(self.marker, flags, 0o644)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {key}\n")
        if self.delay > 0:  # die while the task runs, like a node lost mid-timing
            threading.Timer(self.delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
        else:  # die before the task can finish, whatever the machine's speed
            os.kill(os.getpid(), signal.SIGKILL)


def dask_setup(worker: object) -> None:
    prefix = os.environ.get("TSBENCH_TEST_KILL_PREFIX")
    if prefix:
        plugin = KillOnTask(prefix, os.environ["TSBENCH_TEST_KILL_MARKER"],
                            always=os.environ.get("TSBENCH_TEST_KILL_ALWAYS") == "1",
                            delay=float(os.environ.get("TSBENCH_TEST_KILL_DELAY", "0.3")))
        worker.plugins[plugin.name] = plugin  # type: ignore[attr-defined]
