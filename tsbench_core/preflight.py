"""Dataset preflight: open every dataset a run needs before anything is stored.

Each (dataset entry, horizon) of the cells to run is loaded once through its plugin and checked here too, so a
third-party plugin that returns non-finite values or an empty split is caught as well: every used column
finite, every split holding at least one full window. Problems become one ``DataError`` (exit code 2 from the
CLI), one located line per problem; the loaded splits stay memoised in the workspace for the cells.
"""

from __future__ import annotations

from typing import Any

import torch

from tsbench_core.cells import Cell
from tsbench_core.data import DatasetSplits
from tsbench_core.errors import DataError, TsbenchError
from tsbench_core.pipeline import Workspace, dataset_splits
from tsbench_core.spec import Spec


def split_problems(splits: DatasetSplits) -> list[str]:
    """What is wrong with loaded splits: non-finite values or marks, splits without a full window."""
    problems = []
    for name in ("train", "val", "test"):
        split = getattr(splits, name)
        series = split.series
        for what, table in (("values", series.values), ("time marks", series.marks_timef),
                            ("calendar marks", series.marks_calendar)):
            finite = torch.isfinite(table)
            if not bool(finite.all()):
                row, column = (int(i) for i in (~finite).nonzero()[0])
                problems.append(f"{name} split: {what} row {row} column {column} is {table[row, column].item()} "
                                f"({int((~finite).sum())} non-finite in that split)")
        if len(split) < 1:
            w = split.windows
            problems.append(f"{name} split has {series.rows} rows, fewer than one window of seq_len {w.seq_len} + "
                            f"pred_len {w.pred_len}; use shorter windows or a longer series")
    return problems


def preflight(spec: Spec, cells: list[Cell], ws: Workspace) -> None:
    """Load and check every dataset the cells use; raise one ``DataError`` listing every problem."""
    problems: list[str] = []
    seen: set[tuple[Any, ...]] = set()
    for cell in cells:
        job = cell.prune.train
        entry, seen_key = job.dataset, (job.dataset.model_dump_json(), job.pred_len, job.data_dir)
        if seen_key in seen:
            continue
        seen.add(seen_key)
        where = f"{spec.name}: datasets[{_index(spec, entry)}] ({entry.plugin}, pred_len {job.pred_len})"
        try:
            problems.extend(f"{where}: {p}" for p in split_problems(dataset_splits(ws, entry, job.pred_len,
                                                                                     job.data_dir)))
        except TsbenchError as exc:
            problems.append(f"{where}: {exc}")
        except Exception as exc:  # a plugin bug must still not reach the user as a traceback
            problems.append(f"{where}: the dataset plugin failed: {type(exc).__name__}: {exc}")
    if problems:
        raise DataError("\n".join(problems))


def _index(spec: Spec, entry: Any) -> int | str:
    return next((i for i, e in enumerate(spec.datasets) if e == entry), "?")
