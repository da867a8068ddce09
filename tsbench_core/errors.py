"""Exceptions with a user-facing message. The CLI turns ``UserError`` into exit code 2 without a traceback."""

from __future__ import annotations

from typing import Any


class TsbenchError(Exception):
    """Base class of every tsbench error."""


class UserError(TsbenchError):
    """A mistake in the user's input (spec, data file, option): reported as one clear message, exit code 2."""


class PluginError(TsbenchError):
    """A plugin could not be loaded or registered."""


class DataError(UserError):
    """A data file is missing, malformed, or does not fit the requested windows."""


class StoreError(UserError):
    """The results store cannot be written or read (disk full, permissions, not a database): one message,
    exit code 2; what is already stored is kept (every write is one transaction)."""


class CellError(TsbenchError):
    """A cell failed at run time (NaN loss, export failure, output mismatch...): stored as a failed row.

    ``details``: the traceback of the original failure, when this error re-raises a remembered one; ``columns``:
    row columns measured before the failure (e.g. the gate's error figures), stored with the failed row."""

    def __init__(self, *args: object, details: str | None = None, columns: dict[str, Any] | None = None) -> None:
        super().__init__(*args)
        self.details = details
        self.columns = dict(columns or {})


class RuntimeUnavailable(CellError):
    """The runtime cannot run here (library missing, no CUDA, Python too new): the cell is stored as skipped."""
