"""Run cells one after another in this process (training, then pruning, then timing, as each cell needs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tsbench_core.cells import Cell
from tsbench_core.pipeline import Workspace, measure_cell


class LocalExecutor:
    """Cells in order, each read only when the previous one is done (the runner claims a cell as it is read);
    artifacts made by one cell are reused by the next through the workspace."""

    name = "local"

    def execute(self, cells: Iterable[Cell], ws: Workspace) -> Iterator[dict[str, Any]]:
        for cell in cells:
            yield measure_cell(ws, cell)
