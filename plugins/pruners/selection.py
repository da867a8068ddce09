"""Which weights an unstructured or N:M pruner touches, chosen by module type and module-name glob patterns.

Patterns are ``fnmatch`` globs matched against the dotted module names of ``model.named_modules()``
(e.g. ``decoder.projection``, ``encoder.attn_layers.0.attention.query_projection``). By default every
Linear and Conv1d weight is selected except the output projections (the layer that produces the forecast).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from tsbench_core.errors import CellError, UserError
from tsbench_core.protocols import PluginParams

ModuleTypeName = Literal["Linear", "Conv1d"]
MODULE_TYPES: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Conv1d": nn.Conv1d}

# Names of the forecast-producing layers in the built-in models (Time-Series-Library naming). A default
# pattern may match nothing in a given model; a pattern the user wrote must match something.
DEFAULT_OUTPUT_PATTERNS: tuple[str, ...] = (
    "projection",
    "*.projection",
    "projector",
    "*.projector",
    "head.linear",
    "*.head.linear",
    "*.linear_pred",
)


class SelectionParams(PluginParams):
    """Options shared by the pruners that zero individual weights."""

    module_types: list[ModuleTypeName] = Field(
        default_factory=lambda: ["Linear", "Conv1d"], min_length=1,
        description="Kinds of layer whose weights are pruned.",
    )
    include: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Glob patterns on module names: only matching modules are pruned.",
    )
    exclude: list[str] | None = Field(
        default=None,
        description="Glob patterns on module names never pruned; null means the output projections "
        f"({', '.join(DEFAULT_OUTPUT_PATTERNS)}). Use [] to prune the output projections too.",
    )

    @field_validator("include", "exclude")
    @classmethod
    def _non_empty_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not pattern.strip():
                raise ValueError("a module-name pattern must not be empty")
        return value


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_patterns(model: nn.Module, params: SelectionParams) -> None:
    """Raise ``UserError`` when a pattern the user gave matches no module of ``model``.

    Pruners expose it as ``validate_for_model(model, params)`` so a spec can be checked against built models
    before anything runs; ``prune`` repeats the check and fails the cell.
    """
    names = [n for n, _ in model.named_modules() if n]
    user_patterns = [("include", p) for p in params.include if p != "*"]
    user_patterns += [("exclude", p) for p in (params.exclude or [])]
    for field_name, pattern in user_patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise UserError(
                f"pruner params field {field_name!r}: pattern {pattern!r} matches no module of "
                f"{type(model).__name__} (module names look like: {sample}); fix or remove the pattern"
            )


def check_selection(model: nn.Module, params: SelectionParams) -> dict[str, nn.Parameter]:
    """``check_patterns``, then that something is left to prune: the selected weights, or a ``UserError``
    (for ``validate_for_model``; works on a model built on the meta device)."""
    check_patterns(model, params)
    try:
        return select_weights(model, params)
    except CellError as exc:
        raise UserError(str(exc)) from exc


def select_weights(model: nn.Module, params: SelectionParams) -> dict[str, nn.Parameter]:
    """Parameter name -> weight of every selected module, in ``named_modules`` order.

    Raises ``CellError`` when a user pattern matches nothing or nothing is left to prune.
    """
    try:
        check_patterns(model, params)
    except UserError as exc:
        raise CellError(str(exc)) from exc
    types = tuple(MODULE_TYPES[t] for t in params.module_types)
    exclude = DEFAULT_OUTPUT_PATTERNS if params.exclude is None else params.exclude
    selected: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, types) or not _matches(name, params.include) or _matches(name, exclude):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or id(weight) in seen:
            continue
        seen.add(id(weight))
        selected[f"{name}.weight" if name else "weight"] = weight
    if not selected:
        raise CellError(
            f"no {'/'.join(params.module_types)} weight of {type(model).__name__} is left to prune after "
            f"include={params.include} and exclude={list(exclude)}"
        )
    return selected


def check_target(target_sparsity: float) -> None:
    if not 0.0 <= target_sparsity < 1.0:
        raise UserError(f"target sparsity must be in [0, 1), got {target_sparsity}")


@torch.no_grad()
def bake(weights: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned entries in the weights themselves (no reparametrisation left on the modules)."""
    for name, weight in weights.items():
        weight.mul_(masks[name].to(weight.dtype))


def sparsity_report(masks: dict[str, torch.Tensor]) -> dict[str, object]:
    """Achieved sparsity over the selected weights, overall and per layer, for ``PruneResult.info``."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return {
        "achieved_sparsity": 1.0 - kept / total if total else 0.0,
        "pruned_weights": total - kept,
        "selected_weights": total,
        "layers": len(masks),
        "layer_sparsity": {n: round(1.0 - float(m.float().mean()), 6) for n, m in masks.items()},
    }
