"""One-shot unstructured pruning: magnitude (L1) and random, global across layers or per layer."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
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
from tsbench_core.protocols import PruneContext, PruneResult


class MagnitudeParams(SelectionParams):
    scope: Literal["global", "layer"] = Field(
        default="global",
        description="global: one threshold over all selected weights (the study's method); "
        "layer: every selected layer pruned to the target sparsity.",
    )


class RandomParams(MagnitudeParams):
    pass


class _OneShotPruner:
    params_model: type[MagnitudeParams] = MagnitudeParams
    structure = "unstructured"

    def _scores(self, weights: dict[str, nn.Parameter], context: PruneContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def prune(
        self, model: nn.Module, target_sparsity: float, params: Any, context: PruneContext
    ) -> PruneResult:
        check_target(target_sparsity)
        weights = select_weights(model, params)
        masks = masks_from_scores(self._scores(weights, context), target_sparsity, params.scope)
        bake(weights, masks)
        info = {"method": self.name, "scope": params.scope, "target_sparsity": target_sparsity,
                **sparsity_report(masks)}
        return PruneResult(model=model, masks=masks, structure={}, info=info)

    def restore(self, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return model

    def validate_for_model(self, model: nn.Module, params: Any) -> None:
        """Raise ``UserError`` when a module-name pattern of ``params`` matches nothing in ``model`` or nothing
        is left to prune."""
        check_selection(model, params)


class MagnitudePruner(_OneShotPruner):
    """Zero the weights of smallest absolute value."""

    name = "magnitude"
    description = "One-shot L1 magnitude pruning of Linear/Conv1d weights, global or per layer"
    params_model = MagnitudeParams

    @torch.no_grad()
    def _scores(self, weights: dict[str, nn.Parameter], context: PruneContext) -> dict[str, torch.Tensor]:
        return {name: w.detach().abs() for name, w in weights.items()}


class RandomPruner(_OneShotPruner):
    """Zero uniformly random weights (seeded by the cell's seed): the baseline of every pruning study."""

    name = "random"
    description = "One-shot random unstructured pruning of Linear/Conv1d weights (baseline)"
    params_model = RandomParams

    def _scores(self, weights: dict[str, nn.Parameter], context: PruneContext) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(context.seed))
        return {name: torch.rand(w.shape, generator=g) for name, w in weights.items()}


PLUGINS = (MagnitudePruner(), RandomPruner())
