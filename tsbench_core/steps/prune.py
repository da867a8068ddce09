"""Pruning step: run a pruner on a trained model, then fine-tune with its zeros kept at zero."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from tsbench_core.data import Batch, DatasetSplits, DataShape, example_inputs, seed_offset
from tsbench_core.errors import CellError, UserError
from tsbench_core.progress import Progress
from tsbench_core.protocols import TRAINED_WHILE_PRUNING, PruneContext, PruneResult, time_encoding_of
from tsbench_core.spec import FineTuneConfig, TrainingConfig
from tsbench_core.steps.train import train_model


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred - target) ** 2)


def prune_context(model_name: str, model_params: BaseModel, splits: DatasetSplits, training: TrainingConfig,
                  seed: int, progress: Progress | None) -> PruneContext:
    """What a pruner may use: example inputs, calibration batches, the loss and the training loop."""

    def calibration_batches() -> Iterable[Batch]:
        # 8 batches of consecutive training windows from the seed's offset (wrapping)
        n, size = len(splits.train), training.batch_size
        order = (torch.arange(n) + seed_offset(seed, n)) % n
        for begin in range(0, min(n, 8 * size), size):
            yield splits.train.batch(order[begin : begin + size])

    def train(model: nn.Module, **kwargs: Any) -> dict[str, Any]:
        return train_model(model, splits, training, seed=seed, progress=progress, **kwargs).as_dict()

    inputs = example_inputs(splits.shape, 2, time_encoding_of(model_params), seed=seed)
    return PruneContext(model_name, inputs, calibration_batches, mse_loss, train, seed)


def fine_tune_dense(model: nn.Module, fine_tune: FineTuneConfig | None,
                    context: PruneContext) -> tuple[PruneResult, dict[str, Any] | None]:
    """The dense control of a fine-tuning budget: the same extra training as the pruned models get, nothing
    pruned (returned like ``prune_and_fine_tune``)."""
    assert fine_tune is not None
    outcome = context.train(model, epochs=fine_tune.epochs, lr=fine_tune.lr,
                            max_train_batches=fine_tune.max_train_batches, masks=None)
    return PruneResult(model=model, info={"control": "dense + fine-tuning"}), outcome


def prune_and_fine_tune(
    model: nn.Module,
    pruner: Any,
    sparsity: float,
    pruner_params: BaseModel,
    fine_tune: FineTuneConfig | None,
    context: PruneContext,
) -> tuple[PruneResult, dict[str, Any] | None]:
    """Prune, then fine-tune when asked; returns the result and the fine-tuning outcome. A pruner that trains
    (through ``context.train``, e.g. gradual magnitude) gets its last training outcome recorded in its info under
    ``TRAINED_WHILE_PRUNING``, so reports never read it as one-shot."""
    outcomes: list[dict[str, Any]] = []

    def recorded_train(model: nn.Module, **kwargs: Any) -> dict[str, Any]:
        outcomes.append(context.train(model, **kwargs))
        return outcomes[-1]

    try:
        result = pruner.prune(model, sparsity, pruner_params, dataclasses.replace(context, train=recorded_train))
    except CellError:
        raise
    except Exception as exc:
        raise CellError(f"pruner {pruner.name!r} failed on {context.model_name}: {type(exc).__name__}: {exc}") from exc
    if outcomes:
        result.info.setdefault(TRAINED_WHILE_PRUNING, outcomes[-1])
    outcome = None
    if fine_tune is not None:
        outcome = context.train(result.model, epochs=fine_tune.epochs, lr=fine_tune.lr,
                                max_train_batches=fine_tune.max_train_batches, masks=result.masks)
    return result, outcome


def synthetic_prune_context(model_name: str, shape: DataShape, encoding: str, workdir: Path | None = None,
                            pruner: str = "this pruner") -> PruneContext:
    """A context without data or training, for pruning a model outside a run (tests, ``benchmarks/``): random
    calibration batches, and a ``train`` that refuses (a pruner that prunes while training needs a spec)."""

    def calibration_batches() -> Iterable[Batch]:
        for seed in range(100, 102):
            inputs = example_inputs(shape, 8, encoding, seed=seed)  # type: ignore[arg-type]
            yield Batch(*inputs, y=torch.zeros(8, shape.pred_len, shape.c_out))

    def train(model: nn.Module, **_: Any) -> dict[str, Any]:
        raise UserError(f"pruner {pruner}: it prunes while training, which needs data and a training loop; run it "
                        "through a spec with `tsbench run`")

    return PruneContext(model_name, example_inputs(shape, 2, encoding), calibration_batches,  # type: ignore[arg-type]
                        mse_loss, train, seed=0, workdir=workdir)
