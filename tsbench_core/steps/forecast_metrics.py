"""Test-set MSE/MAE accumulated batch by batch: one definition for torch models and runtime sessions alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tsbench_core.data import DatasetSplits
from tsbench_core.errors import CellError


class ForecastErrors:
    """Sums of squared and absolute errors over every predicted value, on the scaled data and (when the
    dataset asks for it, ``info["original_scale_metrics"]``) on the original scale."""

    def __init__(self, splits: DatasetSplits) -> None:
        self._scaler = splits.scaler
        self._columns: Sequence[str] = splits.test.series.target_columns
        self._original = bool(splits.info.get("original_scale_metrics"))
        self._sums = {"se": 0.0, "ae": 0.0, "se_o": 0.0, "ae_o": 0.0}
        self._count = 0

    def add(self, pred: torch.Tensor, y: torch.Tensor) -> None:
        """Add one batch of predictions and targets (same shape, scaled)."""
        pred, y = pred.float().cpu(), y.float().cpu()
        self._sums["se"] += torch.sum((pred - y) ** 2).item()
        self._sums["ae"] += torch.sum(torch.abs(pred - y)).item()
        if self._original:
            pred_o, y_o = self._scaler.inverse(pred, self._columns), self._scaler.inverse(y, self._columns)
            self._sums["se_o"] += torch.sum((pred_o - y_o) ** 2).item()
            self._sums["ae_o"] += torch.sum(torch.abs(pred_o - y_o)).item()
        self._count += y.numel()

    def metrics(self) -> dict[str, float]:
        """``mse``/``mae`` (and ``mse_original``/``mae_original``) over everything added."""
        if self._count == 0:
            raise CellError("the test split has no windows")
        s, n = self._sums, self._count
        out = {"mse": s["se"] / n, "mae": s["ae"] / n}
        if self._original:
            out |= {"mse_original": s["se_o"] / n, "mae_original": s["ae_o"] / n}
        return out
