"""Spec checks that need built models: every pruning entry against every model it will prune.

A pattern that matches no module, a pruner that finds nothing to prune in a model (``structured`` on
``dlinear``) or a target the pruner cannot reach (N:M pattern mismatch, a uniform structured ratio that would
empty every layer) would otherwise only surface as failed cells. Models are built on the ``meta`` device
(no memory, no initialisation cost) at each dataset's shape; channel counts come from the dataset plugin
when it declares them (``n_vars`` of the named datasets or of the synthetic one), else a placeholder — module
names do not depend on them. Pruners opt in with ``validate_for_model(model, params[, example_inputs])`` and
``validate_target(target_sparsity, params)``; both raise ``UserError``.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from tsbench_core.data import DataShape, example_inputs
from tsbench_core.embedding_dims import marks_dims
from tsbench_core.errors import UserError
from tsbench_core.protocols import ModelCheckingPruner
from tsbench_core.registry import Registry

PLACEHOLDER_CHANNELS = 7


def _data_shape(entry: Any, registry: Registry) -> DataShape | None:
    """The shape a dataset entry gives its models (first horizon), without reading data."""
    plugin = registry.datasets.get(entry.plugin)
    if plugin is None:
        return None
    try:
        params = plugin.params_model.model_validate(entry.params)
    except ValidationError:
        return None  # reported by validate_against
    n_vars = getattr(params, "n_vars", None) or getattr(plugin, "n_vars", None) or PLACEHOLDER_CHANNELS
    features = getattr(params, "features", "M")
    enc_in = 1 if features == "S" else int(n_vars)
    c_out = enc_in if features == "M" else 1
    freq = getattr(params, "freq", None) or getattr(plugin, "freq", None) or "h"
    timef, calendar = marks_dims(freq)
    return DataShape(enc_in, enc_in, c_out, entry.seq_len, entry.label_len, entry.pred_len[0], freq, timef,
                     calendar)


def _build(plugin: Any, params: Any, shape: DataShape, device: str) -> nn.Module:
    with torch.device(device):
        model = plugin.build(params, shape)
    return model.eval()


def _takes_inputs(method: Any) -> bool:
    try:
        return "example_inputs" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _model_check(pruner: Any, params: Any, model: nn.Module, shape: DataShape) -> None:
    check = pruner.validate_for_model
    if not _takes_inputs(check):
        check(model, params)
        return
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = tuple(t.to(device) for t in example_inputs(shape, 1))
    check(model, params, example_inputs=inputs)


class _Models:
    """Built models, cached by (model entry, shape): a spec's horizons and same-width datasets share one."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.cache: dict[tuple[str, str, DataShape, str], tuple[nn.Module | None, str | None]] = {}

    def get(self, entry: Any, shape: DataShape, device: str) -> tuple[nn.Module | None, str | None]:
        key = (entry.plugin, json.dumps(entry.params, sort_keys=True, default=str), shape, device)
        if key not in self.cache:
            plugin = self.registry.models[entry.plugin]
            try:
                model = _build(plugin, plugin.params_model.model_validate(entry.params), shape, device)
                self.cache[key] = (model, None)
            except UserError as exc:
                self.cache[key] = (None, str(exc))
        return self.cache[key]


def _entries(spec: Any, registry: Registry) -> Iterator[tuple[int, Any, Any, int, Any, DataShape]]:
    """(pruning index, pruning entry, validated params, model index, model entry, shape) to check."""
    shapes = [s for s in (_data_shape(d, registry) for d in spec.datasets) if s is not None]
    for i, entry in enumerate(spec.pruning):
        pruner = registry.pruners.get(entry.pruner)
        if pruner is None:
            continue
        try:
            params = pruner.params_model.model_validate(entry.params)
        except ValidationError:
            continue  # reported by validate_against
        for j, model_entry in enumerate(spec.models):
            if model_entry.plugin not in registry.models:
                continue
            try:
                registry.models[model_entry.plugin].params_model.model_validate(model_entry.params)
            except ValidationError:
                continue
            for shape in dict.fromkeys(shapes):
                yield i, entry, params, j, model_entry, shape


def check_pruners_against_models(spec: Any, registry: Registry, source: str) -> list[str]:
    """Located problems (``json.path: message``, as ``validate_against`` collects them; ``SpecProblems``
    prefixes ``source``) of every pruning entry against every model of ``spec``. Entries whose plugin
    names or params are invalid are skipped: ``validate_against`` reports those."""
    del source  # the caller prefixes it; kept in the signature for symmetry with validate_against
    problems: list[str] = []
    models = _Models(registry)
    for i, entry in enumerate(spec.pruning):
        pruner = registry.pruners.get(entry.pruner)
        check_target = getattr(pruner, "validate_target", None)
        if pruner is None or check_target is None:
            continue
        try:
            params = pruner.params_model.model_validate(entry.params)
        except ValidationError:
            continue
        grid = not isinstance(entry.sparsities, list)
        for k, target in enumerate(entry.sparsity_list()):
            try:
                check_target(target, params)
            except UserError as exc:
                problems.append(f"pruning[{i}].sparsities{'' if grid else f'[{k}]'}: {exc}")
    seen: set[str] = set()
    for i, entry, params, j, model_entry, shape in _entries(spec, registry):
        pruner = registry.pruners[entry.pruner]
        if not isinstance(pruner, ModelCheckingPruner):
            continue
        message = _problem(pruner, params, models, model_entry, shape)
        if message is None:
            continue
        field = re.search(r"field '(\w+)'", message)
        where = f"params.{field.group(1)}" if field and field.group(1) in entry.params else "pruner"
        line = f"pruning[{i}].{where}: with models[{j}] ({model_entry.plugin}): {message}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def _problem(pruner: Any, params: Any, models: _Models, model_entry: Any, shape: DataShape) -> str | None:
    """The ``UserError`` message of one pruner/model check, or None. A model that cannot be built or traced
    on the meta device is checked again on the CPU."""
    failure: Exception | None = None
    for device in ("meta", "cpu"):
        model, build_error = models.get(model_entry, shape, device)
        if build_error is not None:
            return f"the model cannot be built for this check: {build_error}"
        assert model is not None
        try:
            _model_check(pruner, params, model, shape)
            return None
        except UserError as exc:
            return str(exc)
        except Exception as exc:  # meta tensors reach an op without a meta kernel: retry on the CPU
            failure = exc
    return f"could not be checked against the model: {type(failure).__name__}: {failure}"
