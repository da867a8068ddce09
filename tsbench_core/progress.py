"""Progress reporting that steps can use without knowing about the terminal (rich) or a cluster."""

from __future__ import annotations

from typing import Protocol

from rich.markup import escape  # descriptions are rendered as markup: cell labels must not be read as tags


class Task(Protocol):
    def advance(self, amount: int = 1) -> None: ...

    def describe(self, description: str) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> Task: ...


class _NullTask:
    def advance(self, amount: int = 1) -> None:
        pass

    def describe(self, description: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Reports nothing (tests, workers, ``--quiet``)."""

    def __enter__(self) -> NullProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def task(self, description: str, total: int | None = None) -> Task:
        return _NullTask()


class _RichTask:
    def __init__(self, progress: object, task_id: int) -> None:
        self._progress = progress
        self._id = task_id

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._id, amount)

    def describe(self, description: str) -> None:
        self._progress.update(self._id, description=escape(description))

    def close(self) -> None:
        self._progress.remove_task(self._id)


class RichProgress:
    """Bars on the terminal: one for cells overall, transient ones for epochs and batches."""

    def __init__(self, console: object | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def task(self, description: str, total: int | None = None) -> Task:
        return _RichTask(self._progress, self._progress.add_task(escape(description), total=total))
