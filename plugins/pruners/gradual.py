"""Gradual magnitude pruning (GMP, Zhu & Gupta 2017) during fine-tuning, driven by a SparseML recipe.

Sparsity rises from ``init_sparsity`` to the target along a cubic curve between ``start_epoch`` and
``end_epoch`` (updated every ``update_frequency`` epochs); the selected weights of smallest magnitude are
masked at every update and stay masked. The recipe is generated from the params, or read from ``recipe`` (a
SparseML YAML recipe file; its own sparsities then rule). Training runs through the cell's training loop
(``context.train``) with SparseML's manager wrapping the optimizer.

The stored model is one trained under its final mask: the training loop keeps the best epoch only among the
epochs after the last sparsity update (``end_epoch``, rounded up). The model is fine-tuned ``final_epochs`` more
under its final mask when that is not enough: no full epoch ran after the last update, SparseML's ``finalize``
still added zeros, a user recipe (schedule unknown here), or a top-up to the target. ``info`` says which.

SparseML is imported only inside ``prune()``. Importing ``sparseml.pytorch`` replaces ``torch.compile`` by a
shim that warns and then calls the original; the original is kept in ``sparseml.pytorch.torch_compile_func``
and is put back right after the import, so the torch-compile runtime is unaffected.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from plugins.pruners.scoring import masks_from_scores
from plugins.pruners.selection import (
    SelectionParams,
    bake,
    check_selection,
    check_target,
    select_weights,
    sparsity_report,
)
from plugins.pruners.sparseml_recipe import manager_from_recipe, recipe_text
from tsbench_core.errors import CellError
from tsbench_core.protocols import Availability, PruneContext, PruneResult, RecipeFile
from tsbench_core.telemetry import disable_neural_magic_analytics


class GradualParams(SelectionParams):
    epochs: int = Field(default=3, ge=1, le=1000, description="Fine-tuning epochs run while pruning.")
    lr: float = Field(default=1e-4, gt=0.0, description="Learning rate of that fine-tuning.")
    max_train_batches: int | None = Field(default=None, ge=1, description="Cap on batches per epoch.")
    init_sparsity: float = Field(default=0.05, ge=0.0, lt=1.0, description="Sparsity at start_epoch.")
    start_epoch: float = Field(default=0.0, ge=0.0, description="Epoch at which pruning starts.")
    end_epoch: float | None = Field(default=None, gt=0.0, description="Epoch at which the target is "
                                    "reached; null: two thirds of the epochs.")
    update_frequency: float | None = Field(default=None, gt=0.0, description="Epochs between sparsity "
                                           "updates; null: a tenth of the pruning span.")
    scope: Literal["global", "layer"] = Field(default="global", description="global: one magnitude "
                                              "threshold over all selected weights; layer: per layer.")
    recipe: RecipeFile | None = Field(default=None, description="Path of a SparseML recipe (YAML) used instead of "
                               "the generated one.")
    final_epochs: int = Field(default=1, ge=1, le=1000, description="Epochs of fine-tuning under the final mask "
                              "when the weights kept after pruning were not trained under it (a user recipe, or "
                              "end_epoch at the last epoch).")

    @model_validator(mode="after")
    def _schedule_fits(self) -> GradualParams:
        end = self.end_of_pruning()
        if end <= self.start_epoch:
            raise ValueError(f"end_epoch ({end:g}) must be after start_epoch ({self.start_epoch:g})")
        if end > self.epochs:
            raise ValueError(f"end_epoch ({end:g}) is beyond the {self.epochs} fine-tuning epochs")
        return self

    def end_of_pruning(self) -> float:
        return self.end_epoch if self.end_epoch is not None else max(self.start_epoch + 0.1, self.epochs * 2 / 3)


def _why_train_again(params: GradualParams, first_final: int, *, masked_by_finalize: bool,
                     topped_up: bool) -> str | None:
    """Why the kept weights need ``final_epochs`` of fine-tuning under the final mask, or None."""
    if topped_up:
        return "topped up to the target after training"
    if masked_by_finalize:
        return "SparseML's finalize masked the kept weights further"
    if params.recipe is not None:
        return "a user recipe: its schedule is not known here"
    if math.ceil(params.end_of_pruning()) > first_final:
        return "no full epoch ran under the final mask (end_epoch too close to the last epoch)"
    return None


def _zero_fraction(weights: dict[str, torch.Tensor]) -> float:
    return sum(int((w == 0).sum()) for w in weights.values()) / max(sum(w.numel() for w in weights.values()), 1)


def import_sparseml() -> tuple[Any, Any]:
    """Import SparseML's recipe manager and logger manager, and undo its replacement of ``torch.compile``."""
    disable_neural_magic_analytics()
    before = torch.compile
    import sparseml.pytorch as sparseml_pytorch
    from sparseml.pytorch.optim import ScheduledModifierManager
    from sparseml.pytorch.utils.logger import LoggerManager

    torch.compile = getattr(sparseml_pytorch, "torch_compile_func", before)
    # SparseML's default modifier logger adds a file handler under ./sparse_logs unless one is present
    sparseml_logger = logging.getLogger("sparseml.pytorch.utils.logger")
    if not any(isinstance(h, logging.FileHandler) for h in sparseml_logger.handlers):
        sparseml_logger.addHandler(logging.FileHandler(os.devnull, delay=True))
    return ScheduledModifierManager, LoggerManager


def build_recipe(names: list[str], target: float, params: GradualParams) -> str:
    """A SparseML recipe: an epoch range and one GMP modifier over the named weights."""
    end = params.end_of_pruning()
    frequency = params.update_frequency or max((end - params.start_epoch) / 10, 1e-3)
    init = min(params.init_sparsity, target)
    listed = "\n".join(f"      - {name}" for name in names)
    return (
        "modifiers:\n"
        "  - !EpochRangeModifier\n"
        "    start_epoch: 0.0\n"
        f"    end_epoch: {float(params.epochs)}\n"
        f"  - !{'GlobalMagnitudePruningModifier' if params.scope == 'global' else 'GMPruningModifier'}\n"
        "    params:\n"
        f"{listed}\n"
        f"    init_sparsity: {init}\n"
        f"    final_sparsity: {target}\n"
        f"    start_epoch: {params.start_epoch}\n"
        f"    end_epoch: {end}\n"
        f"    update_frequency: {frequency}\n"
        "    inter_func: cubic\n"
        "    mask_type: unstructured\n"
        "    leave_enabled: True\n"
    )


class GradualMagnitudePruner:
    name = "gradual-magnitude"
    description = "Gradual magnitude pruning during fine-tuning (cubic GMP schedule) from a SparseML recipe"
    params_model = GradualParams
    structure = "unstructured"

    def availability(self) -> Availability:
        try:
            import importlib.util

            if importlib.util.find_spec("sparseml") is None:
                return Availability.no("sparseml is not installed (pip install 'tsbench[sparse]', Python < 3.12)")
        except Exception as exc:
            return Availability.no(f"sparseml cannot be found: {type(exc).__name__}: {exc}")
        return Availability.yes()

    def prune(
        self, model: nn.Module, target_sparsity: float, params: Any, context: PruneContext
    ) -> PruneResult:
        check_target(target_sparsity)
        try:
            manager_cls, logger_cls = import_sparseml()
        except Exception as exc:
            raise CellError(f"gradual-magnitude needs sparseml, which cannot be imported: "
                            f"{type(exc).__name__}: {exc}") from exc
        weights = select_weights(model, params)
        text = recipe_text(params.recipe, lambda: build_recipe(list(weights), target_sparsity, params))
        manager = manager_from_recipe(manager_cls, text)

        wrapped: list[bool] = []

        def wrap(module: nn.Module, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
            wrapped.append(True)
            # no loggers: SparseML's default one writes a sparse_logs/ folder into the working directory
            return manager.modify(module, optimizer, steps_per_epoch=max(int(steps_per_epoch), 1),
                                  loggers=logger_cls(log_python=False))

        # keep the best epoch among those trained under the final mask only (known for a generated recipe)
        first_final = min(math.ceil(params.end_of_pruning()) if params.recipe is None else params.epochs,
                          params.epochs - 1)
        try:
            outcome = context.train(model, epochs=params.epochs, lr=params.lr, masks=None,
                                    max_train_batches=params.max_train_batches, wrap_optimizer=wrap,
                                    select_from_epoch=first_final)
            kept = _zero_fraction(weights)  # the weights the training loop kept, before SparseML's finalize
        finally:
            if wrapped:  # a training loop that failed before wrapping leaves nothing to finalize
                manager.finalize(model)
        finalized = _zero_fraction(weights)
        topped_up = params.recipe is None and finalized < target_sparsity - 1e-3
        if topped_up:  # e.g. a schedule that never reached its target: one-shot magnitude over the same weights
            with torch.no_grad():
                masks = masks_from_scores({n: w.abs() for n, w in weights.items()}, target_sparsity, params.scope)
            bake(weights, masks)
        masks = {name: (w.detach() != 0) for name, w in weights.items()}
        reason = _why_train_again(params, first_final, masked_by_finalize=finalized > kept + 1e-9,
                                  topped_up=topped_up)
        retrained = None
        if reason is not None:
            retrained = context.train(model, epochs=params.final_epochs, lr=params.lr, masks=masks,
                                      max_train_batches=params.max_train_batches)
        info = {"method": self.name, "target_sparsity": target_sparsity, "scope": params.scope,
                "recipe": params.recipe or "generated", "recipe_text": text,
                "candidate_epochs_from": first_final, "sparsity_of_kept_weights": kept,
                "masked_by_finalize": finalized > kept + 1e-9, "topped_up_after_training": topped_up,
                "fine_tuned_under_final_mask_because": reason, "fine_tuned_under_final_mask": retrained,
                "training": outcome, **sparsity_report(masks)}
        return PruneResult(model=model, masks=masks, structure={}, info=info)

    def restore(self, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return model

    def validate_for_model(self, model: nn.Module, params: Any, *,
                           example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
        """Raise ``UserError`` when a module-name pattern of ``params`` matches nothing in ``model`` or nothing
        is left to prune."""
        check_selection(model, params)


PLUGINS = (GradualMagnitudePruner(),)
