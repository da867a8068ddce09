"""Spec → cells: a pure expansion, and the content hashes that make every step cacheable.

A cell is one stored row: dataset × horizon × model × seed × (pruner, sparsity) × runtime × batch size. Every
(dataset, horizon, model, seed) also gets a dense reference cell per runtime and batch size (``pruner="dense"``),
which ``speedup_vs_dense`` compares against. Three keys chain the steps: ``train_key`` (dense training),
``prune_key`` (pruning + fine-tuning of that checkpoint) and ``cell_key`` (one runtime timing of it). The seed
enters the ``train_key`` (so every key after it): each seed trains, prunes, fine-tunes and calibrates its own
models.

Each plugin's params are validated once, here, and cells carry them as the plugin's params object (the keys hash
their JSON dump, defaults filled in); the steps pass that object on to the plugin.

A pruning entry with ``fine_tune`` also gives its *dense control*: ``pruner="dense"`` with the same fine-tuning
(same epochs, lr and batches, nothing pruned) as cells of its own, once per distinct fine-tuning config. The
accuracy change of a fine-tuned row is measured against that control, so a pruned model is never credited with
the extra training; one-shot rows are compared with the plain dense model.

A pruning entry with ``quantize`` gives cells that run the INT8 quantization of the same pruned weights: the
weights (and their ``prune_key``) are shared with the fp32 cells, the quantize config enters the ``cell_key``
only (cells without it keep the keys they always had), and their dense reference is the fp32 dense cell of the
same runtime. Every distinct quantize config also gets a dense INT8 cell per runtime and batch size its entries
run on.

A pruning entry's ``runtimes`` and ``batch_sizes`` restrict where its cells run (e.g. structured pruning on dense
kernels only, batch 1 only at some densities); the fp32 dense references always run on every runtime and batch
size of the spec, so every cell has its reference.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from tsbench_core.protocols import NoParams
from tsbench_core.registry import Registry
from tsbench_core.spec import (
    DatasetEntry,
    FineTuneConfig,
    PruningEntry,
    QuantizeConfig,
    RuntimeEntry,
    Spec,
    TimingConfig,
    TrainingConfig,
)

DENSE = "dense"


def content_hash(payload: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-able payload."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _params(registry: Registry, kind: str, name: str, params: dict[str, Any]) -> BaseModel:
    return registry.records[kind][name].plugin.params_model.model_validate(params)


def _quantize_config(registry: Registry, config: QuantizeConfig | None) -> QuantizeConfig | None:
    """The quantize config as its quantizer's params model reads it (its defaults filled in); as given when the
    method names no quantizer (an unvalidated spec)."""
    if config is None or config.method not in registry.records["quantizer"]:
        return config
    return registry.records["quantizer"][config.method].plugin.params_model.model_validate(config.model_dump())


def _training_payload(training: TrainingConfig) -> dict[str, Any]:
    """The training config as hashed: ``drop_last`` only when set, so cells keyed before the field existed
    (which kept the last partial batch) keep their keys."""
    payload = training.model_dump(mode="json")
    if not payload.get("drop_last"):
        payload.pop("drop_last", None)
    return payload


@dataclass(frozen=True)
class TrainJob:
    """Dense training of one model on one dataset and horizon."""

    dataset: DatasetEntry
    pred_len: int
    model: str
    model_params: BaseModel  # the model plugin's params object
    training: TrainingConfig
    seed: int
    data_dir: str | None

    @property
    def key(self) -> str:
        return content_hash(
            {
                "dataset": {**self.dataset.model_dump(mode="json"), "pred_len": self.pred_len},
                "model": self.model,
                "model_params": self.model_params.model_dump(mode="json"),
                "training": _training_payload(self.training),
                "seed": self.seed,
            }
        )


@dataclass(frozen=True)
class PruneJob:
    """Pruning (and optional fine-tuning) of a trained dense model; ``pruner == DENSE`` without fine-tuning is
    the identity, with fine-tuning the dense control of that budget."""

    train: TrainJob
    pruner: str
    sparsity: float
    pruner_params: BaseModel  # the pruner plugin's params object (``NoParams`` for ``DENSE``)
    fine_tune: FineTuneConfig | None

    @property
    def is_identity(self) -> bool:
        """The trained dense model itself (no pruning, no fine-tuning)."""
        return self.pruner == DENSE and self.fine_tune is None

    @property
    def is_control(self) -> bool:
        """The dense model given a fine-tuning budget (the reference of the pruned rows with that budget)."""
        return self.pruner == DENSE and self.fine_tune is not None

    @property
    def key(self) -> str:
        if self.is_identity:
            return self.train.key
        return content_hash(
            {
                "train": self.train.key,
                "pruner": self.pruner,
                "sparsity": self.sparsity,
                "params": self.pruner_params.model_dump(mode="json"),
                "fine_tune": self.fine_tune.model_dump(mode="json") if self.fine_tune else None,
            }
        )

    @property
    def dense(self) -> PruneJob:
        return PruneJob(self.train, DENSE, 0.0, NoParams(), None)

    @property
    def control(self) -> PruneJob:
        """The dense control with this job's fine-tuning (the plain dense model for one-shot jobs)."""
        return PruneJob(self.train, DENSE, 0.0, NoParams(), self.fine_tune)


@dataclass(frozen=True)
class Cell:
    """One benchmark row: a (possibly pruned) model verified and timed on one runtime at one batch size."""

    spec_name: str
    spec_hash: str
    prune: PruneJob
    runtime: str
    runtime_params: BaseModel  # the runtime plugin's params object
    batch_size: int
    timing: TimingConfig
    quantize: QuantizeConfig | None = None

    @property
    def key(self) -> str:
        payload = {
            "spec": self.spec_name,
            "prune": self.prune.key,
            "runtime": self.runtime,
            "runtime_params": self.runtime_params.model_dump(mode="json"),
            "batch_size": self.batch_size,
            "timing": self.timing.model_dump(mode="json"),
        }
        if self.quantize is not None:
            payload["quantize"] = self.quantize.model_dump(mode="json")
        return content_hash(payload)

    @property
    def is_reference(self) -> bool:
        """The fp32 dense cell, which other cells' speedups are measured against."""
        return self.prune.is_identity and self.quantize is None

    @property
    def dense_key(self) -> str:
        """Key of the dense fp32 reference cell on the same runtime and batch size."""
        return Cell(
            self.spec_name, self.spec_hash, self.prune.dense, self.runtime, self.runtime_params,
            self.batch_size, self.timing,
        ).key

    def label(self) -> str:
        t = self.prune.train
        sparsity = "" if self.prune.pruner == DENSE else f"@{self.prune.sparsity:g}"
        quantized = " int8" if self.quantize is not None else ""
        if self.prune.fine_tune is not None:
            quantized += f" ft{self.prune.fine_tune.epochs}"
        return (f"{t.dataset.plugin}/{t.pred_len} {t.model} seed {t.seed} {self.prune.pruner}{sparsity}{quantized} "
                f"{self.runtime} bs{self.batch_size}")


def spec_hash(spec: Spec) -> str:
    return content_hash(spec.model_dump(mode="json"))


def expand(spec: Spec, registry: Registry) -> list[Cell]:
    """Every cell of a validated spec, dense references first within each (dataset, horizon, model, seed)."""
    digest = spec_hash(spec)
    model_params = {id(m): _params(registry, "model", m.plugin, m.params) for m in spec.models}
    pruner_params = {id(e): _params(registry, "pruner", e.pruner, e.params) for e in spec.pruning}
    runtime_params = {id(r): _params(registry, "runtime", r.plugin, r.params) for r in spec.runtimes}
    quantize_configs = {id(e.quantize): _quantize_config(registry, e.quantize) for e in spec.pruning if e.quantize}
    cells: list[Cell] = []
    for dataset in spec.datasets:
        for pred_len in dataset.pred_len:
            for model, seed in ((m, s) for m in spec.models for s in spec.seed_list()):
                train = TrainJob(dataset, pred_len, model.plugin, model_params[id(model)], spec.training_for(model),
                                 seed, spec.data_dir)
                dense = PruneJob(train, DENSE, 0.0, NoParams(), None)
                everywhere = _targets(spec, spec.runtimes, spec.timing.batch_sizes)
                jobs: list[tuple[PruneJob, QuantizeConfig | None, list[tuple[RuntimeEntry, int]]]]
                jobs = [(dense, None, everywhere)]
                jobs += [(dense, q, targets) for q, targets in _distinct_configs(spec, "quantize")]
                jobs += [(PruneJob(train, DENSE, 0.0, NoParams(), fine_tune), None, targets)
                         for fine_tune, targets in _distinct_configs(spec, "fine_tune")]
                for entry in spec.pruning:
                    jobs += [
                        (PruneJob(train, entry.pruner, sparsity, pruner_params[id(entry)], entry.fine_tune),
                         entry.quantize, entry_targets(spec, entry))
                        for sparsity in entry.sparsity_list()
                    ]
                for job, quantize, targets in jobs:
                    for runtime, batch_size in targets:
                        cells.append(Cell(spec.name, digest, job, runtime.plugin, runtime_params[id(runtime)],
                                          batch_size, spec.timing,
                                          quantize_configs[id(quantize)] if quantize else None))
    return _unique(cells)


def _targets(spec: Spec, runtimes: list[RuntimeEntry], batch_sizes: list[int]) -> list[tuple[RuntimeEntry, int]]:
    """(runtime, batch size) pairs in spec order: runtime-major, as the cells have always been listed."""
    return [(r, b) for r in runtimes for b in spec.timing.batch_sizes if b in batch_sizes]


def entry_targets(spec: Spec, entry: PruningEntry) -> list[tuple[RuntimeEntry, int]]:
    """Where a pruning entry's cells run: its ``runtimes`` and ``batch_sizes`` if given, else all of the spec's."""
    names = entry.runtimes
    runtimes = [r for r in spec.runtimes if names is None or r.plugin in names]
    return _targets(spec, runtimes, entry.batch_sizes or spec.timing.batch_sizes)


def _union_targets(spec: Spec, entries: list[PruningEntry]) -> list[tuple[RuntimeEntry, int]]:
    """Every (runtime, batch size) that some of ``entries`` runs on, in spec order (a dense cell shared by them)."""
    wanted = {(id(r), b) for entry in entries for r, b in entry_targets(spec, entry)}
    return [(r, b) for r, b in _targets(spec, spec.runtimes, spec.timing.batch_sizes) if (id(r), b) in wanted]


def _distinct_configs(spec: Spec, field: str) -> list[tuple[Any, list[tuple[RuntimeEntry, int]]]]:
    """The distinct ``quantize`` or ``fine_tune`` configs of the pruning entries, in spec order, each with where
    its dense cells (dense INT8 cells, dense controls) run: wherever an entry with that config runs."""
    seen: dict[str, tuple[Any, list[PruningEntry]]] = {}
    for entry in spec.pruning:
        config = getattr(entry, field)
        if config is not None:
            seen.setdefault(config.model_dump_json(), (config, []))[1].append(entry)
    return [(config, _union_targets(spec, entries)) for config, entries in seen.values()]


def _unique(cells: list[Cell]) -> list[Cell]:
    seen: set[str] = set()
    out = []
    for cell in cells:
        if cell.key not in seen:
            seen.add(cell.key)
            out.append(cell)
    return out


SELECTABLE = ("dataset", "pred_len", "model", "seed", "pruner", "sparsity", "fine_tune", "runtime", "batch_size",
              "quantize")


def sparsity_text(sparsity: float) -> str:
    """A target sparsity as selected and shown: the shortest round-trip form (0.9, 0.67232; 0 for dense)."""
    return f"{float(sparsity):g}"


def cell_fields(cell: Cell) -> dict[str, str]:
    """The attributes a cell can be selected by, as strings."""
    train = cell.prune.train
    return {
        "dataset": train.dataset.plugin,
        "pred_len": str(train.pred_len),
        "model": train.model,
        "seed": str(train.seed),
        "pruner": cell.prune.pruner,
        "sparsity": sparsity_text(cell.prune.sparsity),
        "fine_tune": "none" if cell.prune.fine_tune is None else str(cell.prune.fine_tune.epochs),
        "runtime": cell.runtime,
        "batch_size": str(cell.batch_size),
        "quantize": cell.quantize.method if cell.quantize is not None else "none",
    }


def select(cells: list[Cell], selection: dict[str, set[str]]) -> list[Cell]:
    """Cells whose every selected attribute takes one of the given values (e.g. ``{"model": {"dlinear"}}``)."""
    return [c for c in cells if all(cell_fields(c)[k] in values for k, values in selection.items())]
