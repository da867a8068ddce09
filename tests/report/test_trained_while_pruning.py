"""A pruner that trains (gradual magnitude) is recorded as such and reported beside fine-tuned settings, not as
one-shot."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tsbench_core.protocols import TRAINED_WHILE_PRUNING, NoParams, PruneContext, PruneResult
from tsbench_core.report.data import group_sections
from tsbench_core.report.summary import summary_table
from tsbench_core.steps.prune import prune_and_fine_tune


class _Pruner:
    name = "toy"

    def __init__(self, trains: bool) -> None:
        self.trains = trains

    def prune(self, model: nn.Module, sparsity: float, params: Any, context: PruneContext) -> PruneResult:
        if self.trains:
            context.train(model, epochs=2)
        return PruneResult(model, info={"method": self.name})


def _context(calls: list[dict[str, Any]]) -> PruneContext:
    def train(model: nn.Module, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return {"epochs_run": kwargs["epochs"], "best_epoch": 1}

    return PruneContext("toy", (torch.zeros(1, 2),), lambda: [], lambda a, b: (a - b).mean(), train)


def test_the_core_records_the_training_a_pruner_ran():
    calls: list[dict[str, Any]] = []
    result, outcome = prune_and_fine_tune(nn.Linear(2, 2), _Pruner(trains=True), 0.5, NoParams(), None,
                                          _context(calls))
    assert calls == [{"epochs": 2}] and outcome is None
    assert result.info[TRAINED_WHILE_PRUNING] == {"epochs_run": 2, "best_epoch": 1}
    one_shot, _ = prune_and_fine_tune(nn.Linear(2, 2), _Pruner(trains=False), 0.5, NoParams(), None, _context([]))
    assert TRAINED_WHILE_PRUNING not in one_shot.info


def _row(key: str, pruner: str, sparsity: float, mse: float, seed: int, **extra: Any) -> dict[str, Any]:
    return {"cell_key": f"{key}{seed}", "spec_name": "s", "dataset": "etth1", "seq_len": 96, "label_len": 48,
            "pred_len": 96, "model": "m", "seed": seed, "pruner": pruner, "target_sparsity": sparsity,
            "achieved_sparsity": sparsity, "fine_tuned": 0, "fine_tune": None, "runtime": "torch-eager",
            "batch_size": 32, "status": "ok", "mse": mse, "mae": mse, "latency_ms_median": 1.0, **extra}


def test_the_summary_puts_a_pruner_that_trained_in_the_trained_columns():
    rows = []
    for seed in (0, 1):
        rows += [_row("d", "dense", 0.0, 1.0, seed),
                 _row("m", "magnitude", 0.5, 1.005, seed),  # one-shot, +0.5 %
                 _row("g", "gradual-magnitude", 0.9, 1.005, seed, prune_info={TRAINED_WHILE_PRUNING: {}})]
    (section,) = group_sections(rows)
    table = summary_table(section)
    line = dict(zip(table.headers, table.rows[0], strict=True))
    assert line["one-shot ≤1 %"] == "0.500 magnitude"  # without the record, gradual's 0.9 would win here
    assert line["trained ≤1 %"] == "0.900 gradual-magnitude"
