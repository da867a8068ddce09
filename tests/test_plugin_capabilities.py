"""Optional plugin capabilities are declared protocols (``tsbench_core.protocols``): a third-party plugin that
declares one is treated accordingly, one that does not gets the default, and one missing a required member of
its kind is refused naming what it lacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from torch import nn

from tsbench_core import hookimpl
from tsbench_core.cells import DENSE, expand
from tsbench_core.data import DataShape, Windows
from tsbench_core.errors import CellError, UserError
from tsbench_core.executors.dask import needs_gpu
from tsbench_core.protocols import (
    Availability,
    DataLayout,
    HasAvailability,
    NoParams,
    PluginParams,
    PruneResult,
    time_encoding_of,
)
from tsbench_core.registry import load_plugins
from tsbench_core.spec import SpecProblems, parse_spec, validate_against
from tsbench_core.spec_models import PLACEHOLDER_CHANNELS, _data_shape, check_pruners_against_models
from tsbench_core.verify import verify_session

TINY_TRANSFORMER = {"plugin": "transformer", "params": {"d_model": 8, "n_heads": 2, "e_layers": 1, "d_layers": 1,
                                                        "d_ff": 16}}


class Extra:
    """A third-party plugin module registering the given plugins through the hooks."""

    def __init__(self, *, runtimes: tuple = (), pruners: tuple = (), datasets: tuple = ()) -> None:
        self.runtimes, self.pruners, self.datasets = runtimes, pruners, datasets

    @hookimpl
    def tsbench_register_runtimes(self, register):
        for plugin in self.runtimes:
            register(plugin)

    @hookimpl
    def tsbench_register_pruners(self, register):
        for plugin in self.pruners:
            register(plugin)

    @hookimpl
    def tsbench_register_datasets(self, register):
        for plugin in self.datasets:
            register(plugin)


def with_extra(**plugins: tuple):
    registry = load_plugins(extra=(Extra(**plugins),))
    assert registry.load_errors == []
    return registry


# --- runtimes ----------------------------------------------------------------------------------------------


class BareRuntime:
    """Only what RuntimePlugin requires: no availability, no device choice."""

    name = "bare-runtime"
    description = "third-party runtime without optional members"
    params_model = NoParams
    device = "cpu"

    def versions(self) -> dict[str, str]:
        return {}

    def prepare(self, model, example_inputs, params, *, threads, workdir):
        raise NotImplementedError


class UnavailableRuntime(BareRuntime):
    name = "unavailable-runtime"

    def availability(self) -> Availability:
        return Availability.no("needs the frobnicator")


class BrokenProbeRuntime(BareRuntime):
    name = "broken-probe-runtime"

    def availability(self) -> Availability:
        raise RuntimeError("probe crashed")


class AcceleratorParams(PluginParams):
    accelerator: Literal["cpu", "cuda"] = "cpu"


class AcceleratorRuntime(BareRuntime):
    """Declares DeviceFromParams: its params (a field not named ``device``) choose the device."""

    name = "accelerator-runtime"
    params_model = AcceleratorParams

    def device_for(self, params: AcceleratorParams) -> str:
        return params.accelerator


class DeviceFieldParams(PluginParams):
    device: Literal["cpu", "cuda"] = "cpu"


class DeviceFieldRuntime(BareRuntime):
    """A params field named ``device`` without DeviceFromParams: the runtime's ``device`` decides."""

    name = "device-field-runtime"
    params_model = DeviceFieldParams


def test_a_runtime_without_availability_registers_and_is_available() -> None:
    registry = with_extra(runtimes=(BareRuntime(), UnavailableRuntime(), BrokenProbeRuntime()))
    bare = registry.records["runtime"]["bare-runtime"]
    assert not isinstance(bare.plugin, HasAvailability)
    assert bare.availability() == Availability.yes()
    assert registry.records["runtime"]["unavailable-runtime"].availability() == \
        Availability.no("needs the frobnicator")
    broken = registry.records["runtime"]["broken-probe-runtime"].availability()
    assert not broken.available and broken.reason == "availability check raised RuntimeError: probe crashed"


def test_a_plugin_missing_a_required_member_is_refused_naming_it() -> None:
    class NoPrepare:
        name = "no-prepare"
        description = "forgot prepare and device"
        params_model = NoParams

        def versions(self) -> dict[str, str]:
            return {}

    class NoStructure:
        name = "no-structure"
        description = "forgot structure"
        params_model = NoParams

        def prune(self, model, target_sparsity, params, context):
            return PruneResult(model)

        def restore(self, model, structure):
            return model

    registry = load_plugins(extra=(Extra(runtimes=(NoPrepare(),)), Extra(pruners=(NoStructure(),))))
    assert "no-prepare" not in registry.runtimes and "no-structure" not in registry.pruners
    errors = " | ".join(e.error for e in registry.load_errors)
    assert "the runtime plugin 'no-prepare'" in errors
    assert "does not implement RuntimePlugin: missing device, prepare" in errors
    assert "the pruner plugin 'no-structure'" in errors and "does not implement PrunerPlugin: missing structure" \
        in errors
    assert "torch-eager" in registry.runtimes  # the others keep working


def _plain_cell(registry, runtime: str, params: dict[str, Any]):
    spec = parse_spec(json.dumps({
        "name": "gpu", "datasets": [{"plugin": "synthetic", "params": {"length": 200, "n_vars": 2},
                                     "seq_len": 16, "label_len": 8, "pred_len": [4]}],
        "models": [{"plugin": "dlinear"}], "runtimes": [{"plugin": runtime, "params": params}]}), "gpu.json")
    validate_against(spec, registry, "gpu.json")
    return expand(spec, registry)[0]


def test_a_runtime_whose_params_choose_the_device_gets_a_gpu_when_they_ask() -> None:
    registry = with_extra(runtimes=(AcceleratorRuntime(), DeviceFieldRuntime()))
    assert needs_gpu(_plain_cell(registry, "accelerator-runtime", {"accelerator": "cuda"}), registry)
    assert not needs_gpu(_plain_cell(registry, "accelerator-runtime", {"accelerator": "cpu"}), registry)
    # a field that happens to be called "device" is not a declaration: the runtime's own device decides
    assert not needs_gpu(_plain_cell(registry, "device-field-runtime", {"device": "cuda"}), registry)
    assert needs_gpu(_plain_cell(registry, "torch-compile", {"device": "cuda"}), registry)  # a built-in declares it


# --- pruners -----------------------------------------------------------------------------------------------


class LimitParams(PluginParams):
    limit: float = 0.6


class TargetLimitedPruner:
    """Declares ValidatesTarget (targets above ``limit`` refused) and ModelCheckingPruner."""

    name = "target-limited"
    description = "refuses targets above its limit"
    params_model = LimitParams
    structure = "unstructured"

    def __init__(self) -> None:
        self.targets: list[tuple[float, Any]] = []
        self.model_checks: list[dict[str, Any]] = []

    def prune(self, model, target_sparsity, params, context):
        return PruneResult(model)

    def restore(self, model, structure):
        return model

    def validate_target(self, target_sparsity: float, params: LimitParams) -> None:
        self.targets.append((target_sparsity, params))
        if target_sparsity > params.limit:
            raise UserError(f"target {target_sparsity:g} exceeds the limit {params.limit:g}")

    def validate_for_model(self, model: nn.Module, params: LimitParams, **options: Any) -> None:
        self.model_checks.append({"model": model, "params": params, **options})


class PlainPruner:
    """Only what PrunerPlugin requires."""

    name = "plain-pruner"
    description = "no optional checks"
    params_model = NoParams
    structure = "unstructured"

    def prune(self, model, target_sparsity, params, context):
        return PruneResult(model)

    def restore(self, model, structure):
        return model


def _pruning_spec(pruning: list[dict], dataset: dict | None = None):
    return parse_spec(json.dumps({
        "name": "caps",
        "datasets": [dataset or {"plugin": "synthetic", "params": {"n_vars": 3}, "seq_len": 32, "label_len": 16,
                                 "pred_len": [8]}],
        "models": [TINY_TRANSFORMER], "pruning": pruning}), "caps.json")


def test_validate_target_is_called_for_each_target_and_its_error_located() -> None:
    pruner = TargetLimitedPruner()
    registry = with_extra(pruners=(pruner, PlainPruner()))
    spec = _pruning_spec([{"pruner": "plain-pruner", "sparsities": [0.99]},
                          {"pruner": "target-limited", "sparsities": [0.5, 0.7], "params": {"limit": 0.6}},
                          {"pruner": "target-limited", "sparsities": {"density_base": 0.5, "n_from": 1, "n_to": 2}}])
    with pytest.raises(SpecProblems) as err:
        validate_against(spec, registry, "caps.json")
    assert err.value.problems == ["pruning[1].sparsities[1]: target 0.7 exceeds the limit 0.6",
                                  "pruning[2].sparsities: target 0.75 exceeds the limit 0.6"]
    assert [t for t, _ in pruner.targets] == [0.5, 0.7, 0.5, 0.75]
    assert all(isinstance(p, LimitParams) for _, p in pruner.targets)  # the validated params object


def test_validate_for_model_gets_one_batch_of_example_inputs_on_the_models_device() -> None:
    pruner = TargetLimitedPruner()
    registry = with_extra(pruners=(pruner,))
    spec = _pruning_spec([{"pruner": "target-limited", "sparsities": [0.5]}])
    assert check_pruners_against_models(spec, registry, "caps.json") == []
    (check,) = pruner.model_checks
    inputs = check["example_inputs"]
    x_enc, x_mark_enc, x_dec, x_mark_dec = inputs
    assert x_enc.shape == (1, 32, 3) and x_dec.shape == (1, 16 + 8, 3)
    assert x_mark_enc.shape == (1, 32, 4)  # hourly timeF marks
    assert {t.device for t in inputs} == {next(check["model"].parameters()).device}
    assert isinstance(check["params"], LimitParams)


# --- datasets ----------------------------------------------------------------------------------------------


class LayoutDataset:
    """Declares DeclaresLayout: 5 channels read, all in -> target out, quarter-hourly."""

    name = "layout-dataset"
    description = "declares its layout"
    params_model = NoParams

    def layout(self, params) -> DataLayout:
        return DataLayout(n_vars=5, features="MS", freq="t")

    def load(self, params, windows: Windows, data_dir: Path | None):
        raise NotImplementedError


class SilentDataset:
    """No layout: spec validation builds its models at a placeholder width, all -> all, hourly."""

    name = "silent-dataset"
    description = "declares nothing"
    params_model = NoParams

    def load(self, params, windows: Windows, data_dir: Path | None):
        raise NotImplementedError


def _entry(plugin: str, params: dict | None = None):
    return _pruning_spec([], {"plugin": plugin, "params": params or {}, "seq_len": 32, "label_len": 16,
                              "pred_len": [8]}).datasets[0]


def test_a_dataset_declaring_its_layout_shapes_the_checked_models() -> None:
    registry = with_extra(datasets=(LayoutDataset(), SilentDataset()))
    declared = _data_shape(_entry("layout-dataset"), registry)
    assert declared == DataShape(5, 5, 1, 32, 16, 8, "t", 5, 5)
    silent = _data_shape(_entry("silent-dataset"), registry)
    assert silent == DataShape(PLACEHOLDER_CHANNELS, PLACEHOLDER_CHANNELS, PLACEHOLDER_CHANNELS, 32, 16, 8, "h", 4, 4)
    # the built-ins declare theirs: a named dataset's published width, the synthetic one's params
    assert _data_shape(_entry("etth2", {"features": "S"}), registry).enc_in == 1
    assert _data_shape(_entry("synthetic", {"n_vars": 4, "freq": "d"}), registry) == \
        DataShape(4, 4, 4, 32, 16, 8, "d", 3, 4)


def test_a_frequency_alias_is_checked_at_the_code_the_data_will_have() -> None:
    # '10min' is the code 't' once loaded: the models are built for it, not refused as an unknown frequency
    spec = _pruning_spec([{"pruner": "magnitude", "sparsities": [0.5]}],
                         {"plugin": "synthetic", "params": {"n_vars": 3, "freq": "10min"}, "seq_len": 32,
                          "label_len": 16, "pred_len": [8]})
    assert check_pruners_against_models(spec, load_plugins(), "caps.json") == []
    assert _data_shape(spec.datasets[0], load_plugins()).freq == "t"


# --- models and sessions -----------------------------------------------------------------------------------


def test_params_choosing_a_calendar_embedding_get_calendar_marks() -> None:
    class Calendar(PluginParams):
        embed: str = "learned"

    class Normalised(PluginParams):
        embed: str = "timeF"

    assert time_encoding_of(Calendar()) == "calendar"
    assert time_encoding_of(Normalised()) == "timeF"
    assert time_encoding_of(NoParams()) == "timeF"


class NoInfoSession:
    """Runs correctly but has no ``info``: not a RuntimeSession."""

    def run(self, inputs):
        return np.zeros((1, 2), dtype=np.float32)

    def close(self) -> None:
        pass


def test_the_gate_refuses_a_session_that_is_no_runtime_session() -> None:
    reference = nn.Linear(3, 2)
    nn.init.zeros_(reference.weight)
    nn.init.zeros_(reference.bias)
    batches = [(np.ones((1, 3), dtype=np.float32),)]
    with pytest.raises(CellError, match=r"NoInfoSession, which does not implement RuntimeSession: missing info$"):
        verify_session(NoInfoSession(), reference, batches)


# --- cells -------------------------------------------------------------------------------------------------


def test_cells_carry_each_plugins_params_object_validated_once(registry) -> None:
    spec = parse_spec(json.dumps({
        "name": "typed", "datasets": [{"plugin": "synthetic", "params": {"length": 200, "n_vars": 2},
                                       "seq_len": 16, "label_len": 8, "pred_len": [4, 8]}],
        "models": [{"plugin": "dlinear", "params": {"individual": True}}],
        "seeds": [0, 1],
        "pruning": [{"pruner": "magnitude", "sparsities": [0.5, 0.9], "params": {"exclude": ["linear_trend.*"]}}],
        "runtimes": [{"plugin": "torch-eager", "params": {"deploy_form": True}}]}), "typed.json")
    validate_against(spec, registry, "typed.json")
    cells = expand(spec, registry)
    model_params = {id(c.prune.train.model_params) for c in cells}
    pruner_params = {id(c.prune.pruner_params) for c in cells if c.prune.pruner != DENSE}
    runtime_params = {id(c.runtime_params) for c in cells}
    assert len(cells) == 2 * 2 * 3 and len(model_params) == len(pruner_params) == len(runtime_params) == 1
    cell = next(c for c in cells if c.prune.pruner == "magnitude")
    assert isinstance(cell.prune.train.model_params, registry.models["dlinear"].params_model)
    assert cell.prune.train.model_params.individual is True
    assert isinstance(cell.prune.pruner_params, registry.pruners["magnitude"].params_model)
    assert cell.prune.pruner_params.exclude == ["linear_trend.*"]
    assert isinstance(cell.runtime_params, registry.runtimes["torch-eager"].params_model)
    assert cell.runtime_params.deploy_form is True
    assert isinstance(cell.prune.dense.pruner_params, NoParams)


def test_a_module_declaring_a_deploy_form_is_switched_by_the_runtimes() -> None:
    from sparse_runtime.common import set_deploy_form

    class Switchable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.deploy = False

        def set_deploy_form(self, enabled: bool) -> None:
            self.deploy = enabled

    class NotSwitchable(nn.Module):
        set_deploy_form = None  # an attribute of that name is no declaration

    model = nn.Sequential(nn.Linear(2, 2), Switchable(), NotSwitchable())
    assert set_deploy_form(model, True) == ["1"] and model[1].deploy is True
    assert set_deploy_form(model, False) == ["1"] and model[1].deploy is False
