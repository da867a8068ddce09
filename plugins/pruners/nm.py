"""N:M semi-structured magnitude pruning (2:4 by default): in every group of M consecutive weights along a
Linear layer's input dimension, only the N of largest magnitude are kept — the pattern sparse tensor cores
(and PyTorch's semi-structured sparse tensors) accelerate."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

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


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` largest-magnitude entries of every ``m`` consecutive ones along the last dim."""
    rows = weight.detach().abs().reshape(-1, m)
    keep = torch.zeros_like(rows, dtype=torch.bool)
    keep.scatter_(1, torch.topk(rows, n, dim=1).indices, True)
    return keep.view(weight.shape)


def is_nm_sparse(tensor: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether ``tensor`` (2-D, last dim divisible by ``m``) has at most ``n`` nonzeros in every group of ``m``
    consecutive entries along its last dim — valid input for ``to_sparse_semi_structured`` when n:m = 2:4."""
    if tensor.dim() != 2 or tensor.shape[-1] % m:
        return False
    nonzero = (tensor.detach() != 0).reshape(-1, m).sum(dim=1)
    return bool(torch.all(nonzero <= n))


class NMParams(SelectionParams):
    module_types: list[Literal["Linear"]] = Field(
        default_factory=lambda: ["Linear"], min_length=1, description="Only Linear weights take N:M patterns."
    )
    n: int | None = Field(
        default=2, ge=1, description="Weights kept per group; null derives it from the target: "
        "round(m * (1 - sparsity)).",
    )
    m: int = Field(default=4, ge=2, le=64, description="Group size along the input dimension.")

    @model_validator(mode="after")
    def _n_below_m(self) -> NMParams:
        if self.n is not None and self.n >= self.m:
            raise ValueError(f"n ({self.n}) must be smaller than m ({self.m}): n:m keeps n of every m weights")
        return self


class NMPruner:
    name = "nm"
    description = "N:M semi-structured magnitude pruning (2:4 by default) of Linear weights along inputs"
    params_model = NMParams
    structure = "semi-structured"

    def prune(
        self, model: nn.Module, target_sparsity: float, params: Any, context: PruneContext
    ) -> PruneResult:
        check_target(target_sparsity)
        try:
            self.validate_target(target_sparsity, params)
        except UserError as exc:
            raise CellError(str(exc)) from exc
        m = params.m
        n = params.n if params.n is not None else round(m * (1.0 - target_sparsity))
        weights = select_weights(model, params)
        skipped = [name for name, w in weights.items() if w.shape[-1] % m]
        weights = {name: w for name, w in weights.items() if name not in skipped}
        if not weights:
            raise CellError(f"no selected Linear layer of {context.model_name} has an input size divisible by {m}")
        masks = {name: nm_mask(w, n, m) for name, w in weights.items()}
        bake(weights, masks)
        info = {"method": self.name, "pattern": f"{n}:{m}", "target_sparsity": target_sparsity,
                "skipped_layers": skipped, **sparsity_report(masks)}
        return PruneResult(model=model, masks=masks, structure={"n": n, "m": m}, info=info)

    def restore(self, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        return model

    def validate_for_model(self, model: nn.Module, params: Any, *,
                           example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
        """Raise ``UserError`` when a module-name pattern of ``params`` matches nothing in ``model`` or no
        selected Linear layer has an input size divisible by ``m``."""
        weights = check_selection(model, params)
        if all(w.shape[-1] % params.m for w in weights.values()):
            raise UserError(f"pruner nm: no selected Linear layer of {type(model).__name__} has an input size "
                            f"divisible by m={params.m}; choose another m or other layers")

    def validate_target(self, target_sparsity: float, params: Any) -> None:
        """Raise ``UserError`` when ``target_sparsity`` does not fit the N:M pattern of ``params``."""
        check_target(target_sparsity)
        m = params.m
        n = params.n if params.n is not None else round(m * (1.0 - target_sparsity))
        if not 1 <= n < m:
            raise UserError(f"target sparsity {target_sparsity} leaves {n} of every {m} weights; "
                            f"N:M pruning needs 1 <= n < m")
        pattern_sparsity = 1.0 - n / m
        if params.n is not None and abs(pattern_sparsity - target_sparsity) > 1e-3:
            raise UserError(f"pruner nm with n={n}, m={m} gives sparsity {pattern_sparsity:g}, not the target "
                            f"{target_sparsity:g}: set the sparsities to [{pattern_sparsity:g}] or n to null")


PLUGINS = (NMPruner(),)
