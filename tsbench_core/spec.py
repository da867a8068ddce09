"""Benchmark specs: pydantic models of the JSON files in ``specs/``, validated against the plugin registry.

Validation happens in two passes, both before anything runs: the structure (``Spec``), then every plugin name
and every plugin's own params (``validate_against``). All problems are collected and reported as
``file: json.path: message`` lines.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from tsbench_core.errors import UserError
from tsbench_core.protocols import RecipeFile
from tsbench_core.registry import Registry, unknown_name_message
from tsbench_core.spec_models import check_pruners_against_models


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


PositiveInt = Annotated[int, Field(gt=0)]
Sparsity = Annotated[float, Field(ge=0.0, lt=1.0)]


class DatasetEntry(StrictModel):
    """A dataset plugin with its params and window lengths; several horizons make several tasks."""

    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)
    seq_len: PositiveInt
    label_len: Annotated[int, Field(ge=0)]
    pred_len: list[PositiveInt] = Field(min_length=1)

    @field_validator("pred_len", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _label_within_history(self) -> DatasetEntry:
        if self.label_len > self.seq_len:
            raise ValueError(f"label_len ({self.label_len}) cannot exceed seq_len ({self.seq_len})")
        return self


class ModelEntry(StrictModel):
    """A model plugin and its hyperparameters (window lengths and channel counts come from the dataset);
    ``training`` overrides fields of the spec's training config for this model (e.g. its published lr)."""

    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)


class TrainingConfig(StrictModel):
    """Dense training: Adam on MSE, learning-rate schedule, early stopping on validation loss."""

    epochs: Annotated[int, Field(ge=0)] = 10
    batch_size: PositiveInt = 32
    lr: Annotated[float, Field(gt=0)] = 1e-4
    patience: PositiveInt = 3
    lr_schedule: Literal["halve", "type1", "constant", "cosine"] = Field(
        "halve", description="halve: lr halved after every epoch; type1: the reference code's lradj type1 (lr kept "
        "for the first two epochs, then halved after each); constant; cosine")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False
    max_train_batches: PositiveInt | None = None
    max_eval_batches: PositiveInt | None = None
    drop_last: bool = Field(
        False, description="drop each epoch's last incomplete training batch, as the reference implementations' "
        "training loaders do (on ETTh1 96->96 at batch 32 it holds one window)")


class FineTuneConfig(StrictModel):
    """Fine-tuning after pruning; zeros of unstructured and N:M pruning stay zero."""

    epochs: PositiveInt = 1
    lr: Annotated[float, Field(gt=0)] = 1e-5
    max_train_batches: PositiveInt | None = None


class GeometricGrid(StrictModel):
    """Sparsities ``1 - density_base**n`` for n = n_from..n_to (the study used 0.8**n, n = 1..9)."""

    density_base: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    n_from: Annotated[int, Field(ge=0)] = 1
    n_to: PositiveInt = 9

    @model_validator(mode="after")
    def _ordered(self) -> GeometricGrid:
        if self.n_to < self.n_from:
            raise ValueError(f"n_to ({self.n_to}) must be >= n_from ({self.n_from})")
        return self

    def sparsities(self) -> list[float]:
        return [round(1.0 - self.density_base**n, 6) for n in range(self.n_from, self.n_to + 1)]


def _sparsity_form(value: Any) -> str:
    return "grid" if isinstance(value, dict | GeometricGrid) else "list"


# Modules kept in float by default: the output heads (Transformer family ``projection``, PatchTST ``head``,
# Crossformer ``linear_pred``) and the DFT/Fourier products of Autoformer/FEDformer (``inner_attention``).
DEFAULT_KEEP_FLOAT = ("projection", "*.projection", "head", "*.linear_pred", "*.inner_attention", "*fourier*",
                      "*dft*")


QAT_FIELDS = ("epochs", "lr", "max_train_batches", "recipe")  # dumped only when set (fine-tuning quantizers')


class QuantizeConfig(StrictModel):
    """INT8 quantization of the exported model (see docs/runtimes.md); ``method`` names the quantizer plugin.

    Built in: ``static-int8``: post-training static quantization, calibrated on training windows. ``sparseml-qat``:
    quantization-aware fine-tuning through a SparseML recipe (pruned zeros held), then the same INT8 graph
    written with the learned scales. ``format``: ``matmulinteger`` (QuantizeLinear → MatMulInteger → Cast → Mul,
    the form DeepSparse runs fast) or ``qdq`` (ONNX Runtime's QDQ graph). The rules between ``method`` and the
    other fields (which a method takes, its defaults) are the quantizer's: its ``params_model``, a subclass of
    this model, is checked by ``validate_against`` and gives the config the cells carry (``cells.expand``).
    """

    method: str = "static-int8"  # a quantizer plugin (``tsbench plugins``), checked by ``validate_against``
    format: Literal["matmulinteger", "qdq"] = "matmulinteger"
    calibration_batches: PositiveInt = 16  # batches of training windows (at the cell's batch size)
    keep_float: list[str] = Field(default_factory=lambda: list(DEFAULT_KEEP_FLOAT))
    per_channel: bool = False  # QDQ: DeepSparse 1.8 runs per-channel weight DequantizeLinear outside its engine
    symmetric_activations: bool = False
    # correctness gate: RMS(int8 - fp32 torch eager) / std(fp32 torch eager) over the gate batches
    tolerance: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    # fine-tuning quantizers only (sparseml-qat; null otherwise, defaults filled in by its params model)
    epochs: PositiveInt | None = None  # QAT fine-tuning epochs (default 2)
    lr: Annotated[float, Field(gt=0)] | None = None  # its learning rate (default 1e-5)
    max_train_batches: PositiveInt | None = None  # cap on batches per epoch
    recipe: RecipeFile | None = None  # a SparseML recipe (YAML) used instead of the generated one

    @field_validator("keep_float")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip() or pattern != pattern.strip():
                raise ValueError(f"keep_float pattern {pattern!r} is empty or has surrounding spaces")
            if pattern.startswith("op:") and not pattern[3:].isidentifier():
                raise ValueError(f"keep_float pattern {pattern!r}: 'op:' must be followed by an ONNX op type")
        return value

    @model_serializer(mode="wrap")
    def _without_unset_qat_fields(self, handler: Any) -> Any:
        # post-training configs dump without the QAT fields (shorter cell keys, same meaning)
        data = handler(self)
        if isinstance(data, dict):
            for name in QAT_FIELDS:
                if data.get(name) is None:
                    data.pop(name, None)
        return data


ENTRY_OPTIONAL_FIELDS = ("quantize", "runtimes", "batch_sizes")


class PruningEntry(StrictModel):
    """A pruner applied at each target sparsity, optionally followed by fine-tuning and INT8 quantization.

    ``runtimes`` (plugin names of the spec's runtimes) and ``batch_sizes`` (some of the spec's timing batch
    sizes) restrict this entry's cells; unset, the entry runs on every runtime at every batch size. The dense
    references always run on all of them."""

    pruner: str
    sparsities: Annotated[
        Annotated[list[Sparsity], Field(min_length=1), Tag("list")] | Annotated[GeometricGrid, Tag("grid")],
        Discriminator(_sparsity_form),
    ]
    params: dict[str, Any] = Field(default_factory=dict)
    fine_tune: FineTuneConfig | None = None
    quantize: QuantizeConfig | None = None
    runtimes: list[str] | None = Field(default=None, min_length=1)
    batch_sizes: list[PositiveInt] | None = Field(default=None, min_length=1)

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler: Any) -> Any:
        # entries without these options dump as before, so the hashes of existing specs do not change
        data = handler(self)
        if isinstance(data, dict):
            for name in ENTRY_OPTIONAL_FIELDS:
                if getattr(self, name) is None:
                    data.pop(name, None)
        return data

    def sparsity_list(self) -> list[float]:
        if isinstance(self.sparsities, GeometricGrid):
            return self.sparsities.sparsities()
        return list(self.sparsities)


class RuntimeEntry(StrictModel):
    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)


TIMING_PROTOCOL_FIELDS = ("min_time_s", "rounds", "runtime_accuracy")


class TimingConfig(StrictModel):
    """How every runtime is verified and timed."""

    batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [32], min_length=1)
    warmup: Annotated[int, Field(ge=0)] = 5
    repeats: PositiveInt = 20
    threads: PositiveInt | None = None  # None: all cores of the machine
    verify_batches: PositiveInt = 2
    atol: Annotated[float, Field(gt=0)] = 1e-3
    rtol: Annotated[float, Field(ge=0)] = 1e-3
    # timed calls continue (in whole rounds) until this many seconds are timed per session, beyond `repeats`
    min_time_s: Annotated[float, Field(ge=0)] = 0.0
    rounds: PositiveInt = 4  # interleaved rounds of a cell and its dense reference
    # test MSE/MAE of fp32 cells measured through their runtime over the test windows (false: torch's figures,
    # the row's accuracy_from says whose; a list: only at those batch sizes, e.g. [32] where batch 1 would take
    # one call per test window); INT8 cells are always measured through their runtime
    runtime_accuracy: bool | list[PositiveInt] = True

    @model_validator(mode="after")
    def _accuracy_sizes_timed(self) -> TimingConfig:
        if isinstance(self.runtime_accuracy, list):
            missing = [b for b in self.runtime_accuracy if b not in self.batch_sizes]
            if missing or not self.runtime_accuracy:
                raise ValueError(f"runtime_accuracy: batch sizes {missing or '[]'} are not among batch_sizes "
                                 f"{self.batch_sizes}; list some of them, or give true/false")
        return self

    def accuracy_at(self, batch_size: int) -> bool:
        """Whether fp32 cells at ``batch_size`` measure test accuracy through their runtime."""
        if isinstance(self.runtime_accuracy, bool):
            return self.runtime_accuracy
        return batch_size in self.runtime_accuracy

    @model_serializer(mode="wrap")
    def _without_default_protocol_fields(self, handler: Any) -> Any:
        # fields added with the protocol of record dump only when set away from their default, so the cell keys
        # of existing specs do not change
        data = handler(self)
        if isinstance(data, dict):
            for name in TIMING_PROTOCOL_FIELDS:
                if data.get(name) == TimingConfig.model_fields[name].default:
                    data.pop(name, None)
        return data


class Spec(StrictModel):
    """A benchmark: datasets × horizons × models × pruning × runtimes × batch sizes × seeds.

    ``seed`` is the one-seed form, ``seeds`` the several-seed one (each seed trains, prunes, fine-tunes and
    calibrates its own models); a spec gives one of them, not both.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    seeds: list[int] | None = Field(default=None, min_length=1)
    data_dir: str | None = None
    datasets: list[DatasetEntry] = Field(min_length=1)
    models: list[ModelEntry] = Field(min_length=1)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    pruning: list[PruningEntry] = Field(default_factory=list)
    runtimes: list[RuntimeEntry] = Field(default_factory=lambda: [RuntimeEntry(plugin="torch-eager")])
    timing: TimingConfig = Field(default_factory=TimingConfig)

    @model_validator(mode="after")
    def _one_seed_form(self) -> Spec:
        if self.seeds is not None and "seed" in self.model_fields_set:
            raise ValueError("give either 'seed' (one seed) or 'seeds' (a list), not both; "
                             f"e.g. \"seeds\": [{self.seed}, ...]")
        return self

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int] | None) -> list[int] | None:
        repeated = sorted({s for s in value or [] if value.count(s) > 1}) if value else []
        if repeated:
            raise ValueError(f"seed {', '.join(map(str, repeated))} given more than once; each seed runs once")
        return value

    @model_serializer(mode="wrap")
    def _without_unset_seeds(self, handler: Any) -> Any:
        # one-seed specs dump as before, so the hashes of existing specs do not change
        data = handler(self)
        if self.seeds is None and isinstance(data, dict):
            data.pop("seeds", None)
        return data

    def seed_list(self) -> list[int]:
        """The seeds every cell is run with, in spec order."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def training_for(self, entry: ModelEntry) -> TrainingConfig:
        """The spec's training config with the model entry's overrides applied (checked by
        ``validate_against``)."""
        if not entry.training:
            return self.training
        return TrainingConfig.model_validate({**self.training.model_dump(), **entry.training})


# --- loading and validation -----------------------------------------------------------------------------


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _json_path(loc: tuple[Any, ...]) -> str:
    """``models[0].params.d_model``; a key that is not a plain name is quoted (``["a key\n"]``), so a location
    is always one line and unambiguous."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            path += f"[{json.dumps(str(part))}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _pydantic_problems(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[str]:
    problems = []
    for err in exc.errors():
        # tagged-union members appear as extra location parts: drop them to keep the path readable
        loc = tuple(p for p in err["loc"] if p not in {"list", "grid"})
        where = _json_path(prefix + loc)
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) or value is None else f" (got {value!r})"
        problems.append(f"{where}: {err['msg']}{shown}")
    return problems


class SpecProblems(UserError):
    """One or more located problems in one spec file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def parse_spec(raw: str, source: str) -> Spec:
    """Parse JSON text into a ``Spec``; raise ``SpecProblems`` with located messages."""
    if not raw.strip():
        raise SpecProblems(source, ["(top level): file is empty; a spec is a JSON object"])
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SpecProblems(source, [f"line {exc.lineno} column {exc.colno}: not valid JSON: {exc.msg}"]) from None
    if not isinstance(data, dict):
        raise SpecProblems(source, [f"(top level): a spec must be a JSON object, got {type(data).__name__}"])
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecProblems(source, _pydantic_problems(exc)) from None


def read_spec_file(path: str | Path) -> Spec:
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecProblems(str(path), ["(top level): no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecProblems(str(path), [f"(top level): cannot read: {exc}"]) from None
    return parse_spec(raw, str(path))


def validate_against(spec: Spec, registry: Registry, source: str) -> None:
    """Check every plugin name and every plugin's params; raise ``SpecProblems`` listing all problems."""
    problems: list[str] = []

    def check(kind: str, name: str, params: dict[str, Any], where: str, name_field: str) -> None:
        records = registry.records[kind]
        if name not in records:
            problems.append(f"{where}.{name_field}: {unknown_name_message(kind, name, sorted(records))}")
            return
        try:
            records[name].plugin.params_model.model_validate(params)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, (*_split(where), "params")))

    for i, entry in enumerate(spec.datasets):
        check("dataset", entry.plugin, entry.params, f"datasets[{i}]", "plugin")
    for i, entry in enumerate(spec.models):
        check("model", entry.plugin, entry.params, f"models[{i}]", "plugin")
        try:
            spec.training_for(entry)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, ("models", i, "training")))
    for i, entry in enumerate(spec.pruning):
        check("pruner", entry.pruner, entry.params, f"pruning[{i}]", "pruner")
    for i, entry in enumerate(spec.runtimes):
        check("runtime", entry.plugin, entry.params, f"runtimes[{i}]", "plugin")
    for i, entry in enumerate(spec.pruning):
        if entry.quantize is not None:
            problems.extend(_quantize_problems(entry.quantize, registry, ("pruning", i, "quantize")))
    problems.extend(_entry_target_problems(spec))
    problems.extend(check_pruners_against_models(spec, registry, source))
    if problems:
        raise SpecProblems(source, problems)


def _quantize_problems(config: QuantizeConfig, registry: Registry, where: tuple[Any, ...]) -> list[str]:
    """``method`` must name a quantizer, and the config must satisfy that quantizer's params model."""
    quantizers = registry.records["quantizer"]
    if config.method not in quantizers:
        return [f"{_json_path((*where, 'method'))}: "
                f"{unknown_name_message('quantizer', config.method, sorted(quantizers))}"]
    try:
        quantizers[config.method].plugin.params_model.model_validate(config.model_dump())
    except ValidationError as exc:
        return _pydantic_problems(exc, where)
    return []


def _entry_target_problems(spec: Spec) -> list[str]:
    """A pruning entry's ``runtimes``/``batch_sizes`` must name the spec's own (the dense references run there)."""
    runtimes = [r.plugin for r in spec.runtimes]
    sizes = spec.timing.batch_sizes
    problems = []
    for i, entry in enumerate(spec.pruning):
        for j, name in enumerate(entry.runtimes or []):
            if name not in runtimes:
                problems.append(f"pruning[{i}].runtimes[{j}]: {name!r} is not one of the spec's runtimes "
                                f"({', '.join(runtimes)}); add it to 'runtimes' or remove it here")
        for j, size in enumerate(entry.batch_sizes or []):
            if size not in sizes:
                problems.append(f"pruning[{i}].batch_sizes[{j}]: {size} is not one of timing.batch_sizes "
                                f"({', '.join(map(str, sizes))}), where the dense references run; add it there "
                                "or remove it here")
    return problems


def _split(where: str) -> tuple[Any, ...]:
    name, index = where.rstrip("]").split("[")
    return (name, int(index))


def load_spec(path: str | Path, registry: Registry | None = None) -> Spec:
    """Read and fully validate a spec file (structure, plugin names, plugin params)."""
    from tsbench_core.registry import load_plugins

    spec = read_spec_file(path)
    validate_against(spec, registry or load_plugins(), str(path))
    return spec


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# entry definition -> (plugin kind, the member naming the plugin)
PLUGIN_ENTRIES = {
    "DatasetEntry": ("dataset", "plugin"),
    "ModelEntry": ("model", "plugin"),
    "PruningEntry": ("pruner", "pruner"),
    "RuntimeEntry": ("runtime", "plugin"),
}


def spec_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a spec that a standard validator enforces as ``tsbench validate`` does,
    as far as JSON Schema can say it: every plugin entry is a union discriminated by its plugin name, each
    member holding that plugin's params schema (types, ranges, choices, no unknown keys). Rules between fields
    (e.g. a pruning schedule within its epochs) and checks against the built models are ``validate``'s alone.
    ``x-tsbench-plugins`` keeps each plugin's description and params schema for tools."""
    schema = Spec.model_json_schema()
    defs = schema["$defs"]
    plugins: dict[str, dict[str, Any]] = {}
    for record in registry.all_records():
        plugins.setdefault(record.kind, {})[record.name] = {
            "description": record.plugin.description,
            "params": record.plugin.params_model.model_json_schema(),
        }
    pred_len = defs["DatasetEntry"]["properties"]["pred_len"]  # one horizon may be given as a bare integer
    defs["DatasetEntry"]["properties"]["pred_len"] = {
        "title": pred_len.pop("title", "Pred Len"), "anyOf": [{"type": "integer", "exclusiveMinimum": 0}, pred_len]}
    defs["ModelEntry"]["properties"]["training"] = {"$ref": "#/$defs/TrainingConfig"}  # overrides of its fields
    for definition, (kind, name_field) in PLUGIN_ENTRIES.items():
        defs[definition] = _discriminated(defs, definition, kind, name_field, registry)
    method = defs["QuantizeConfig"]["properties"]["method"]  # names a quantizer plugin
    method["enum"] = sorted(registry.records["quantizer"])
    return {"$schema": SCHEMA_DIALECT, **schema, "x-tsbench-plugins": plugins}


def _discriminated(defs: dict[str, Any], definition: str, kind: str, name_field: str,
                   registry: Registry) -> dict[str, Any]:
    """``definition`` as one member per plugin of ``kind`` (name a ``const``, params that plugin's schema)."""
    base = defs[definition]
    mapping: dict[str, str] = {}
    for name in sorted(registry.records[kind]):
        params_model = registry.records[kind][name].plugin.params_model
        prefix = f"{kind}.{name}."
        params = params_model.model_json_schema(ref_template=f"#/$defs/{prefix}{{model}}")
        for nested, body in params.pop("$defs", {}).items():
            defs[prefix + nested] = body
        defs[f"{prefix}params"] = params
        member = copy.deepcopy(base)
        member["title"] = f"{definition}: {name}"
        member["properties"][name_field] = {"const": name}
        member["properties"]["params"] = {"$ref": f"#/$defs/{prefix}params"}
        defs[f"{definition}.{name}"] = member
        mapping[name] = f"#/$defs/{definition}.{name}"
    names = sorted(mapping)
    return {
        "title": base.get("title", definition),
        "description": base.get("description", ""),
        "type": "object",
        "required": [name_field],
        "properties": {name_field: {"type": "string", "enum": names}},
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": name_field, "mapping": mapping},  # OpenAPI-style hint for editors
    }
