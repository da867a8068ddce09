"""What a plugin of each kind provides.

Every plugin object has ``name`` (unique within its kind), ``description`` (one line) and ``params_model``
(a pydantic model with ``extra="forbid"``: the single source of truth for its options — spec validation, the
JSON Schema and the docs all come from it). The rest depends on the kind, below: each kind's protocol lists what
it must have (``registry.py`` refuses a plugin missing any of it); every optional capability is a protocol of its
own, checked with ``isinstance`` and never by probing attributes (``HasAvailability``, ``DeclaresLayout``,
``ModelCheckingPruner``, ``ValidatesTarget``, ``DeviceFromParams``, ``OnnxGraphRuntime``, ``Int8Runtime``,
``HardwareReporting``, ``GraphFootprint``; on a model's submodules ``DeployForm``; on params
``ChoosesTimeEmbedding``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict
from torch import nn

from tsbench_core.cpu import CpuFacts
from tsbench_core.data import Batch, DatasetSplits, DataShape, TimeEncoding, Windows


def _recipe_file_exists(value: str) -> str:
    if not Path(value).expanduser().is_file():
        raise ValueError(f"recipe file {value!r} does not exist")
    return value


RecipeFile = Annotated[str, AfterValidator(_recipe_file_exists)]
"""A path option naming a file that must exist when the spec is validated (SparseML recipes)."""


class PluginParams(BaseModel):
    """Base class for plugin params models: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class NoParams(PluginParams):
    """For plugins without options."""


@dataclass(frozen=True)
class Availability:
    """Whether a plugin can run on this machine, and why not."""

    available: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@runtime_checkable
class Plugin(Protocol):
    name: str
    description: str
    params_model: type[BaseModel]


@runtime_checkable
class HasAvailability(Protocol):
    """Optional for every kind: whether the plugin can run on this machine (a plugin without it is available).
    Import heavy libraries here, not at module import."""

    def availability(self) -> Availability: ...


# --- datasets ---------------------------------------------------------------------------------------------


@runtime_checkable
class DatasetPlugin(Plugin, Protocol):
    def load(self, params: BaseModel, windows: Windows, data_dir: Path | None) -> DatasetSplits:
        """Read (or generate) the series, split, scale on train rows, and return windowed splits.

        Raises ``errors.DataError`` with the file, column and row for bad input.
        """
        ...


@dataclass(frozen=True)
class DataLayout:
    """What a dataset entry gives its models, known without reading any data: the channels it reads (``None``
    when only the data tells), the feature mode (``M`` all -> all, ``S`` target -> target, ``MS`` all -> target)
    and the time-feature frequency code."""

    n_vars: int | None = None
    features: Literal["M", "S", "MS"] = "M"
    freq: str = "h"


@runtime_checkable
class DeclaresLayout(Protocol):
    """Optional for datasets: the layout an entry's params give, so spec validation builds its models at the
    right channel count and frequency (without it: a placeholder width, all -> all, hourly)."""

    def layout(self, params: BaseModel) -> DataLayout: ...


# --- models -----------------------------------------------------------------------------------------------


@runtime_checkable
class ModelPlugin(Plugin, Protocol):
    def build(self, params: BaseModel, shape: DataShape) -> nn.Module:
        """Build the model. ``forward(x_enc, x_mark_enc, x_dec, x_mark_dec)`` returns ``[B, pred_len, C]``
        with ``C >= shape.c_out``; the last ``c_out`` channels are the forecast."""
        ...


@runtime_checkable
class ChoosesTimeEmbedding(Protocol):
    """Optional for a model's params: ``embed`` is ``"timeF"`` (normalised time features) or ``"fixed"`` /
    ``"learned"`` (integer calendar fields, embedded by the model)."""

    embed: str


def time_encoding_of(params: BaseModel) -> TimeEncoding:
    """Calendar ints for models whose params choose a fixed/learned ``embed``; normalised marks for all others."""
    return "calendar" if isinstance(params, ChoosesTimeEmbedding) and params.embed != "timeF" else "timeF"


@runtime_checkable
class DeployForm(Protocol):
    """Optional for a model's submodules whose training form cannot be exported (FFT, random sampling, masks):
    switch to an equivalent exportable form and back. Runtimes and the MAC counter call it on every submodule
    that has it."""

    def set_deploy_form(self, enabled: bool) -> None: ...


# --- pruners ----------------------------------------------------------------------------------------------

PruneStructure = Literal["unstructured", "structured", "semi-structured"]
TrainFn = Callable[..., Any]


@dataclass
class PruneContext:
    """What a pruner may use besides the model: example inputs (for dependency graphs), data for importance
    scores, and the training loop (for pruning during fine-tuning)."""

    model_name: str
    example_inputs: tuple[torch.Tensor, ...]
    calibration_batches: Callable[[], Iterable[Batch]]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train: TrainFn  # train(model, epochs=..., lr=..., masks=None, on_step=None) -> dict of metrics
    seed: int = 0
    workdir: Path | None = None


@dataclass
class PruneResult:
    """A pruned model and what is needed to fine-tune, store and reload it.

    ``masks`` (parameter name -> bool keep-mask) keep zeros at zero during fine-tuning; ``structure`` is the
    JSON-able state ``restore`` needs to rebuild the pruned architecture before loading its weights.
    """

    model: nn.Module
    masks: dict[str, torch.Tensor] | None = None
    structure: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


TRAINED_WHILE_PRUNING = "training"  # prune_info key: the outcome of the training a pruner ran via context.train


@runtime_checkable
class PrunerPlugin(Plugin, Protocol):
    structure: PruneStructure

    def prune(
        self, model: nn.Module, target_sparsity: float, params: BaseModel, context: PruneContext
    ) -> PruneResult:
        """Prune ``model`` (in place or a copy) to ``target_sparsity`` and finalise it (no masks left on it)."""
        ...

    def restore(self, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        """Turn a freshly built dense model into the pruned architecture recorded in ``structure``
        (identity for unstructured pruners)."""
        ...


@runtime_checkable
class ModelCheckingPruner(Protocol):
    """Optional for pruners: check the params against a model built on the ``meta`` device at spec validation
    (raise ``UserError``). ``example_inputs`` (one batch, on the model's device) is there for checks that trace
    the model; others ignore it."""

    def validate_for_model(self, model: nn.Module, params: BaseModel, *,
                           example_inputs: tuple[torch.Tensor, ...]) -> None: ...


@runtime_checkable
class ValidatesTarget(Protocol):
    """Optional for pruners: refuse a target sparsity the pruner cannot reach with these params (raise
    ``UserError``), at spec validation for each of an entry's targets."""

    def validate_target(self, target_sparsity: float, params: BaseModel) -> None: ...


# --- runtimes ---------------------------------------------------------------------------------------------


@runtime_checkable
class RuntimeSession(Protocol):
    """A model prepared for one runtime, static batch size and thread count."""

    info: dict[str, Any]  # runtime_info: versions, providers, supported-op fraction, fallbacks...

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray: ...

    def close(self) -> None: ...


@runtime_checkable
class RuntimePlugin(Plugin, Protocol):
    device: str  # "cpu" or "cuda"

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this runtime uses (recorded in the run environment)."""
        ...

    def prepare(
        self,
        model: nn.Module,
        example_inputs: tuple[torch.Tensor, ...],
        params: BaseModel,
        *,
        threads: int,
        workdir: Path,
    ) -> RuntimeSession:
        """Export/compile ``model`` (eval mode, weights as given) for inputs shaped like ``example_inputs``."""
        ...


@runtime_checkable
class DeviceFromParams(Protocol):
    """Optional for runtimes whose params choose the device: the one ``params`` ask for (``"cpu"``, ``"cuda"``);
    without it a runtime runs on its ``device``. The Dask executor asks a GPU for cells that need ``"cuda"``."""

    def device_for(self, params: BaseModel) -> str: ...


def device_of(plugin: RuntimePlugin, params: BaseModel) -> str:
    """The device ``plugin`` runs on with ``params``."""
    return plugin.device_for(params) if isinstance(plugin, DeviceFromParams) else plugin.device


@runtime_checkable
class OnnxGraphRuntime(Protocol):
    """A runtime that also opens a given ONNX graph: the INT8 graph of a quantized cell (``sparse_runtime/quantize.py``
    writes it once, every such runtime runs the same graph)."""

    int8_format: str  # the INT8 graph format ("matmulinteger" or "qdq") an ad-hoc bench quantizes to for it

    def open_graph(self, export: Any, params: BaseModel, *, threads: int, batch_size: int) -> RuntimeSession:
        """A session on ``export.path`` (an ``ExportResult``), compiled for ``batch_size`` and ``threads``."""
        ...


@dataclass(frozen=True)
class Int8Plan:
    """How a runtime computes an INT8 graph correctly on this CPU: the weight encoding to write
    (``sparse_runtime.int8.qparams.WEIGHT_ENCODINGS``) and why; or, with ``unsupported`` set, why it cannot (the cell
    is then skipped before any work)."""

    weights: str
    reason: str
    unsupported: str | None = None

    def info(self) -> dict[str, Any]:
        return {"weights": self.weights, "reason": self.reason, "unsupported": self.unsupported}


@runtime_checkable
class Int8Runtime(Protocol):
    """A runtime that runs INT8 ONNX graphs and knows what its integer kernels compute correctly on a CPU."""

    def int8_plan(self, cpu: CpuFacts, quant_format: str) -> Int8Plan: ...


@runtime_checkable
class HardwareReporting(Protocol):
    """A runtime with its own CPU detection: what it reports (recorded in the run environment)."""

    def hardware(self) -> dict[str, Any]: ...


@runtime_checkable
class GraphFootprint(Protocol):
    """A runtime whose sessions run an ONNX graph file: the graph's size and the peak memory of running it."""

    def footprint(self, workdir: Path, inputs: tuple[np.ndarray, ...], *, threads: int, batch_size: int,
                  graph: Path | None = None) -> dict[str, Any]:
        """``model_bytes``, ``model_bytes_compressed``, ``peak_rss_mb`` (and ``info``) of ``graph``, or of the graph
        ``prepare`` wrote into ``workdir``; empty when there is none."""
        ...


def int8_plan_of(plugin: RuntimePlugin, cpu: CpuFacts, quant_format: str) -> Int8Plan:
    """The plugin's INT8 plan for ``cpu``, or the default encoding when the runtime states no CPU rule."""
    if isinstance(plugin, Int8Runtime):
        return plugin.int8_plan(cpu, quant_format)
    return Int8Plan("int8", f"runtime {plugin.name!r} states no CPU rule for INT8")


# --- quantizers -------------------------------------------------------------------------------------------


@runtime_checkable
class OnnxExportParams(Protocol):
    """Runtime params that fix the ONNX opset of the graphs exported for that runtime (a quantizer exports with
    it too)."""

    opset: int


def export_opset_of(params: BaseModel) -> int | None:
    """The opset the runtime params ask the ONNX export for, or None (the exporter's default)."""
    return params.opset if isinstance(params, OnnxExportParams) else None


@dataclass
class QuantizeJob:
    """What the measure step hands a quantizer for one INT8 cell."""

    model: nn.Module  # the cell's fp32 model, eval mode, on the CPU
    example_inputs: tuple[torch.Tensor, ...]  # one batch at the cell's batch size (the export's static shapes)
    calibration: list[tuple[np.ndarray, ...]]  # batches of training windows (from the seed's offset)
    plan: Int8Plan  # the runtime's weight encoding for this CPU
    workdir: Path
    opset: int | None = None  # from the runtime params (``export_opset_of``)
    fine_tuned: Any = None  # a ``FineTuningQuantizer``'s ``load_fine_tuned`` result, for that kind only


@dataclass
class QuantizedGraph:
    """An INT8 ONNX graph a quantizer wrote, for ``OnnxGraphRuntime.open_graph``."""

    graph: Any  # what ``open_graph`` takes (an ``ExportResult`` of the INT8 graph)
    path: Path  # the INT8 graph file (its size and peak memory are measured on it)
    reference: nn.Module  # the float model the graph approximates: the gate compares with it
    info: dict[str, Any]  # ``runtime_info.quantize``
    sizes: Callable[[], dict[str, Any]]  # model_bytes(_compressed) of the INT8 graph and fp32_model_bytes(_compressed)


@runtime_checkable
class QuantizerPlugin(Plugin, Protocol):
    """A quantization method (``pruning[].quantize.method``); ``params_model`` is the quantize config it reads."""

    def quantize(self, config: BaseModel, job: QuantizeJob) -> QuantizedGraph:
        """Export ``job.model`` (or the fine-tuned model) to ONNX and write its INT8 graph into ``job.workdir``."""
        ...


@runtime_checkable
class FineTuningQuantizer(Protocol):
    """A quantizer with a training step before ``quantize`` (QAT): the pipeline runs it once per content hash of
    the pruned model and ``fine_tune_fields``, stores the weights and ``meta``, and hands ``load_fine_tuned``'s
    result to ``quantize`` as ``job.fine_tuned``."""

    def fine_tune_fields(self, config: BaseModel) -> dict[str, Any]:
        """The config fields that change the fine-tuning, by content (JSON-able)."""
        ...

    def fine_tune(self, model: nn.Module, train: TrainFn, config: BaseModel) -> tuple[nn.Module, dict[str, Any]]:
        """The fine-tuned float model (its state dict is stored) and JSON-able ``meta`` to store beside it."""
        ...

    def load_fine_tuned(self, model: nn.Module, meta: dict[str, Any]) -> Any:
        """What ``quantize`` takes from a stored fine-tuning: ``model`` holds its weights, ``meta`` its record."""
        ...


KINDS = ("model", "dataset", "pruner", "runtime", "quantizer")
Kind = Literal["model", "dataset", "pruner", "runtime", "quantizer"]
PROTOCOL_OF_KIND: dict[str, type] = {
    "model": ModelPlugin,
    "dataset": DatasetPlugin,
    "pruner": PrunerPlugin,
    "runtime": RuntimePlugin,
    "quantizer": QuantizerPlugin,
}


def availability_of(plugin: Plugin) -> Availability:
    """The plugin's ``availability()`` (``HasAvailability``); available when it has none."""
    if not isinstance(plugin, HasAvailability):
        return Availability.yes()
    try:
        return plugin.availability()
    except Exception as exc:  # an availability probe must never take the host down
        return Availability.no(f"availability check raised {type(exc).__name__}: {exc}")
