"""One-shot magnitude (L1) and random pruning, global across layers or per layer: of single weights
(unstructured, ``block: 1``) or of 1×b blocks, b consecutive input channels of a Linear weight row (``block: b``)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer
from torch import nn

from plugins.pruners.scoring import block_means, masks_from_block_scores, masks_from_scores
from plugins.pruners.selection import (
    SelectionParams,
    bake,
    check_selection,
    check_target,
    select_weights,
    sparsity_report,
)
from tsbench_core.errors import CellError, UserError
from tsbench_core.protocols import PruneContext, PruneResult

CONV_SKIP_REASON = (
    "block > 1 prunes Linear weights only: a Conv1d exports as an ONNX Conv, which the INT8 path keeps in float "
    "(sparse_runtime/quantize.py), so 1×b input-channel blocks serve no INT8 kernel there"
)


class MagnitudeParams(SelectionParams):
    scope: Literal["global", "layer"] = Field(
        default="global",
        description="global: one threshold over all selected weights (the study's method); "
        "layer: every selected layer pruned to the target sparsity.",
    )
    block: int = Field(
        default=1,
        description="1: unstructured. b > 1: whole groups of b consecutive input channels of each row of a Linear "
        "weight [out, in] are zeroed (1×b blocks; 4 is the int8 dot product of DeepSparse's INT8 kernels), "
        "ranked by the mean score of their weights; when in is not a multiple of b the last in % b columns form "
        "a shorter group. Conv1d weights are then left dense (listed in info.skipped_layers).",
    )

    @field_validator("block")
    @classmethod
    def _block_at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("block must be an integer >= 1 (1 = unstructured, 4 = blocks of 4 consecutive input "
                             "channels)")
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # block = 1 is left out of the dump, so the content keys of unstructured cells stay what they were.
        data = handler(self)
        if self.block == 1:
            data.pop("block", None)
        return data


class RandomParams(MagnitudeParams):
    pass


def linear_weights(weights: dict[str, nn.Parameter]) -> tuple[dict[str, nn.Parameter], list[str]]:
    """The 2-D (Linear) weights of ``weights`` and the names of the others (Conv1d), which blocks skip."""
    kept = {name: w for name, w in weights.items() if w.dim() == 2}
    return kept, [name for name in weights if name not in kept]


class _OneShotPruner:
    params_model: type[MagnitudeParams] = MagnitudeParams
    structure = "unstructured"

    def _scores(self, weights: dict[str, nn.Parameter], context: PruneContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _block_scores(
        self, weights: dict[str, nn.Parameter], block: int, context: PruneContext
    ) -> dict[str, torch.Tensor]:
        """``[out, groups]`` score of every 1×``block`` group of each 2-D weight."""
        raise NotImplementedError

    def prune(
        self, model: nn.Module, target_sparsity: float, params: Any, context: PruneContext
    ) -> PruneResult:
        check_target(target_sparsity)
        weights = select_weights(model, params)
        extra: dict[str, Any] = {}
        if params.block == 1:
            masks = masks_from_scores(self._scores(weights, context), target_sparsity, params.scope)
        else:
            weights, skipped = linear_weights(weights)
            if not weights:
                raise CellError(self._nothing_linear(model, params))
            cols = {name: w.shape[1] for name, w in weights.items()}
            scores = self._block_scores(weights, params.block, context)
            masks = masks_from_block_scores(scores, cols, params.block, target_sparsity, params.scope)
            extra = {"block": params.block, "skipped_layers": skipped}
            if skipped:
                extra["skipped_reason"] = CONV_SKIP_REASON
        bake(weights, masks)
        info = {"method": self.name, "scope": params.scope, "target_sparsity": target_sparsity, **extra,
                **sparsity_report(masks)}
        return PruneResult(model=model, masks=masks, structure={}, info=info)

    def _nothing_linear(self, model: nn.Module, params: Any) -> str:
        return (f"pruner {self.name} with block={params.block}: no selected Linear weight in "
                f"{type(model).__name__} ({CONV_SKIP_REASON}); select Linear layers or use block 1")

    def restore(self, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return model

    def validate_for_model(self, model: nn.Module, params: Any, *,
                           example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
        """Raise ``UserError`` when a module-name pattern of ``params`` matches nothing in ``model``, nothing is
        left to prune, or (``block`` > 1) no selected weight is a Linear one."""
        weights = check_selection(model, params)
        if params.block > 1 and not linear_weights(weights)[0]:
            raise UserError(self._nothing_linear(model, params))


class MagnitudePruner(_OneShotPruner):
    """Zero the weights (or 1×b blocks, by mean absolute value) of smallest magnitude."""

    name = "magnitude"
    description = "One-shot L1 magnitude pruning of Linear/Conv1d weights (or 1×b blocks), global or per layer"
    params_model = MagnitudeParams

    @torch.no_grad()
    def _scores(self, weights: dict[str, nn.Parameter], context: PruneContext) -> dict[str, torch.Tensor]:
        return {name: w.detach().abs() for name, w in weights.items()}

    @torch.no_grad()
    def _block_scores(
        self, weights: dict[str, nn.Parameter], block: int, context: PruneContext
    ) -> dict[str, torch.Tensor]:
        return {name: block_means(w.detach().abs().float(), block) for name, w in weights.items()}


class RandomPruner(_OneShotPruner):
    """Zero uniformly random weights or 1×b blocks (seeded by the cell's seed): the baseline of every pruning
    study."""

    name = "random"
    description = "One-shot random pruning of Linear/Conv1d weights (or 1×b blocks), the baseline"
    params_model = RandomParams

    def _scores(self, weights: dict[str, nn.Parameter], context: PruneContext) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(context.seed))
        return {name: torch.rand(w.shape, generator=g) for name, w in weights.items()}

    def _block_scores(
        self, weights: dict[str, nn.Parameter], block: int, context: PruneContext
    ) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(context.seed))
        return {name: torch.rand((w.shape[0], -(-w.shape[1] // block)), generator=g)
                for name, w in weights.items()}


PLUGINS = (MagnitudePruner(), RandomPruner())
