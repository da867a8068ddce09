"""Spec checks that need built models: every pruning entry against every model it will prune.

A pattern that matches no module, a pruner that finds nothing to prune in a model (``structured`` on
``dlinear``) or a target the pruner cannot reach (N:M pattern mismatch, a uniform structured ratio that would
empty every layer) would otherwise only surface as failed cells. Models are built on the ``meta`` device
(no memory, no initialisation cost) at each dataset's shape: the ``DataLayout`` a dataset plugin declares
(``DeclaresLayout``: the named datasets' and the synthetic one's channels, feature mode and frequency), else a
placeholder width — module names do not depend on it. Pruners opt in with ``ModelCheckingPruner``
(``validate_for_model(model, params, example_inputs=...)``) and ``ValidatesTarget``
(``validate_target(target_sparsity, params)``); both raise ``UserError``. Each plugin's params are validated
once here, and entries whose params are invalid are skipped (``validate_against`` reports those).
"""

from __future__ import annotations

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
from tsbench_core.protocols import DataLayout, DeclaresLayout, ModelCheckingPruner, ValidatesTarget
from tsbench_core.registry import Registry

PLACEHOLDER_CHANNELS = 7


def _validated(plugin: Any, params: dict[str, Any]) -> Any | None:
    """``params`` as the plugin's params object, or None when invalid (``validate_against`` reports it)."""
    try:
        return plugin.params_model.model_validate(params)
    except ValidationError:
        return None


def _data_shape(entry: Any, registry: Registry) -> DataShape | None:
    """The shape a dataset entry gives its models (first horizon), without reading data."""
    plugin = registry.datasets.get(entry.plugin)
    params = _validated(plugin, entry.params) if plugin is not None else None
    if params is None:
        return None
    layout = plugin.layout(params) if isinstance(plugin, DeclaresLayout) else DataLayout()
    enc_in = 1 if layout.features == "S" else int(layout.n_vars or PLACEHOLDER_CHANNELS)
    c_out = enc_in if layout.features == "M" else 1
    freq = layout.freq
    timef, calendar = marks_dims(freq)
    return DataShape(enc_in, enc_in, c_out, entry.seq_len, entry.label_len, entry.pred_len[0], freq, timef,
                     calendar)


def _build(plugin: Any, params: Any, shape: DataShape, device: str) -> nn.Module:
    with torch.device(device):
        model = plugin.build(params, shape)
    return model.eval()


def _model_check(pruner: ModelCheckingPruner, params: Any, model: nn.Module, shape: DataShape) -> None:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    inputs = tuple(t.to(device) for t in example_inputs(shape, 1))
    pruner.validate_for_model(model, params, example_inputs=inputs)


class _Models:
    """Built models, cached by (model entry, shape): a spec's horizons and same-width datasets share one."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.cache: dict[tuple[str, str, DataShape, str], tuple[nn.Module | None, str | None]] = {}

    def get(self, entry: Any, params: Any, shape: DataShape, device: str) -> tuple[nn.Module | None, str | None]:
        """The model of ``entry`` (its validated ``params``) at ``shape`` on ``device``, or its build error."""
        key = (entry.plugin, json.dumps(entry.params, sort_keys=True, default=str), shape, device)
        if key not in self.cache:
            try:
                model = _build(self.registry.models[entry.plugin], params, shape, device)
                self.cache[key] = (model, None)
            except UserError as exc:
                self.cache[key] = (None, str(exc))
        return self.cache[key]


def _pruning(spec: Any, registry: Registry) -> Iterator[tuple[int, Any, Any, Any]]:
    """(index, pruning entry, pruner, validated params) of the entries whose pruner and params are valid."""
    for i, entry in enumerate(spec.pruning):
        pruner = registry.pruners.get(entry.pruner)
        params = _validated(pruner, entry.params) if pruner is not None else None
        if params is not None:
            yield i, entry, pruner, params


def _models(spec: Any, registry: Registry) -> list[tuple[int, Any, Any]]:
    """(index, model entry, validated params) of the model entries whose plugin and params are valid."""
    out = []
    for j, entry in enumerate(spec.models):
        plugin = registry.models.get(entry.plugin)
        params = _validated(plugin, entry.params) if plugin is not None else None
        if params is not None:
            out.append((j, entry, params))
    return out


def check_pruners_against_models(spec: Any, registry: Registry, source: str) -> list[str]:
    """Located problems (``json.path: message``, as ``validate_against`` collects them; ``SpecProblems``
    prefixes ``source``) of every pruning entry against every model of ``spec``. Entries whose plugin
    names or params are invalid are skipped: ``validate_against`` reports those."""
    del source  # the caller prefixes it; kept in the signature for symmetry with validate_against
    problems: list[str] = []
    pruning = list(_pruning(spec, registry))
    for i, entry, pruner, params in pruning:
        if not isinstance(pruner, ValidatesTarget):
            continue
        grid = not isinstance(entry.sparsities, list)
        for k, target in enumerate(entry.sparsity_list()):
            try:
                pruner.validate_target(target, params)
            except UserError as exc:
                problems.append(f"pruning[{i}].sparsities{'' if grid else f'[{k}]'}: {exc}")
    checking = [(i, entry, pruner, params) for i, entry, pruner, params in pruning
                if isinstance(pruner, ModelCheckingPruner)]
    if not checking:
        return problems
    shapes = list(dict.fromkeys(s for s in (_data_shape(d, registry) for d in spec.datasets) if s is not None))
    models = _Models(registry)
    model_entries = _models(spec, registry)
    seen: set[str] = set()
    for i, entry, pruner, params in checking:
        for j, model_entry, model_params in model_entries:
            for shape in shapes:
                message = _problem(pruner, params, models, model_entry, model_params, shape)
                if message is None:
                    continue
                field = re.search(r"field '(\w+)'", message)
                where = f"params.{field.group(1)}" if field and field.group(1) in entry.params else "pruner"
                line = f"pruning[{i}].{where}: with models[{j}] ({model_entry.plugin}): {message}"
                if line not in seen:
                    seen.add(line)
                    problems.append(line)
    return problems


def _problem(pruner: ModelCheckingPruner, params: Any, models: _Models, model_entry: Any, model_params: Any,
             shape: DataShape) -> str | None:
    """The ``UserError`` message of one pruner/model check, or None. A model that cannot be built or traced
    on the meta device is checked again on the CPU."""
    failure: Exception | None = None
    for device in ("meta", "cpu"):
        model, build_error = models.get(model_entry, model_params, shape, device)
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
