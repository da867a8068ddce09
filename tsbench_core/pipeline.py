"""The steps of a cell, chained through content-hashed artifacts: train → prune (+ fine-tune) [→ QAT] → measure.

``dense_artifact``, ``pruned_artifact`` and ``measure_cell`` are what an executor calls (the local executor in
order, the Dask executor as dependent tasks). Each step reads what the previous one stored under the artifact
folder, so a step never calls back into the runner or the store.
"""

from __future__ import annotations

import copy
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from torch import nn

from tsbench_core.accounting import count_macs, count_params
from tsbench_core.cells import DENSE, Cell, PruneJob, TrainJob, content_hash
from tsbench_core.data import DatasetSplits, Windows, example_inputs
from tsbench_core.errors import CellError, RuntimeUnavailable, TsbenchError
from tsbench_core.hostlock import file_lock, host_lock
from tsbench_core.progress import NullProgress, Progress
from tsbench_core.protocols import FineTuningQuantizer, time_encoding_of
from tsbench_core.registry import Registry, load_plugins
from tsbench_core.settings import resolve_data_dir
from tsbench_core.spec import DatasetEntry
from tsbench_core.steps.artifacts import Artifact, load_weights, save_artifact, usable_artifact
from tsbench_core.steps.measure import Prepared, eval_windows, int8_plan, prepare_fp32, prepare_int8, time_prepared
from tsbench_core.steps.prune import fine_tune_dense, prune_and_fine_tune, prune_context
from tsbench_core.steps.train import evaluate, seed_everything, train_model
from tsbench_core.store import STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from tsbench_core.variants import variant_label


@dataclass
class Workspace:
    """Where artifacts live and what a step may use: the registry, the data folder, a progress sink.

    Datasets are memoised per process (loading is cheap but not free); nothing else is kept in memory.
    """

    artifacts: Path
    data_dir: str | None = None
    registry: Registry | None = None
    progress: Progress = field(default_factory=NullProgress)
    rebuild: bool = False  # ignore artifacts made before this run (``--force``)
    lock_dir: str | None = None  # folder of the host-wide locks (default: hostlock.lock_folder())
    _splits: dict[tuple[str, int, str], DatasetSplits] = field(default_factory=dict)  # (entry, pred_len, dir)
    _made: set[str] = field(default_factory=set)
    _failed: dict[str, str] = field(default_factory=dict)
    _failed_details: dict[str, str] = field(default_factory=dict)  # key -> traceback of that failure

    def cached(self, key: str) -> Artifact | None:
        """A stored artifact usable in this run; re-raises an earlier failure of the same step."""
        if key in self._failed:
            raise CellError(self._failed[key], details=self._failed_details.get(key))
        if self.rebuild and key not in self._made:
            return None
        return usable_artifact(self.artifacts, key)

    def made(self, key: str, artifact: Artifact) -> Artifact:
        self._made.add(key)
        return artifact

    def plugins(self) -> Registry:
        if self.registry is None:
            self.registry = load_plugins()
        return self.registry


def dataset_splits(ws: Workspace, dataset: DatasetEntry, pred_len: int, data_dir: str | None) -> DatasetSplits:
    """A dataset entry loaded by its plugin for one horizon (memoised per workspace)."""
    data_dir = resolve_data_dir(ws.data_dir, data_dir)  # option > environment > spec
    memo_key = (dataset.model_dump_json(), pred_len, data_dir or "")
    if memo_key not in ws._splits:
        plugin = ws.plugins().records["dataset"][dataset.plugin].plugin
        params = plugin.params_model.model_validate(dataset.params)
        windows = Windows(dataset.seq_len, dataset.label_len, pred_len)
        ws._splits[memo_key] = plugin.load(params, windows, Path(data_dir) if data_dir else None)
    return ws._splits[memo_key]


def load_splits(ws: Workspace, job: TrainJob) -> DatasetSplits:
    """The dataset of a training job, with the time encoding its model expects."""
    encoding = time_encoding_of(job.model_params)
    return dataset_splits(ws, job.dataset, job.pred_len, job.data_dir).with_time_encoding(encoding)


def build_dense(ws: Workspace, job: TrainJob, splits: DatasetSplits) -> nn.Module:
    seed_everything(job.seed)
    plugin = ws.plugins().records["model"][job.model].plugin
    return plugin.build(job.model_params, splits.shape)


def _accounting(model: nn.Module, splits: DatasetSplits, params: BaseModel) -> dict[str, Any]:
    inputs = example_inputs(splits.shape, 1, time_encoding_of(params))
    return {**count_params(model), **count_macs(model.cpu().eval(), inputs)}


def _build(ws: Workspace, key: str, step: Any, *args: Any) -> Artifact:
    """The stored artifact ``key``, or ``step`` run to make it: one process at a time per key (another run on
    this store may be making it), and a failure remembered for the other cells of this run."""
    found = ws.cached(key)
    if found is not None:
        return found
    with file_lock(ws.artifacts / "locks" / f"{key}.lock"):
        found = ws.cached(key)  # made by another process while this one waited
        if found is not None:
            return found
        try:
            return ws.made(key, step(ws, *args))
        except Exception as exc:
            ws._failed[key] = str(exc) if isinstance(exc, TsbenchError) else f"{type(exc).__name__}: {exc}"
            ws._failed_details[key] = traceback.format_exc()
            raise


def dense_artifact(ws: Workspace, job: TrainJob) -> Artifact:
    """Train the dense model once per content hash (or find it already trained)."""
    return _build(ws, job.key, _train_dense, job)


def pruned_artifact(ws: Workspace, job: PruneJob) -> Artifact:
    """Prune (and fine-tune) a trained dense model once per content hash (a dense control: fine-tune only)."""
    if job.is_identity:
        return dense_artifact(ws, job.train)
    return _build(ws, job.key, _prune, job)


def _relative_to_dense(pruned: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    """Sparsity measured against the dense model's counts, so a structurally pruned (smaller) model reports
    the fraction of weights it removed, and an unstructured one the fraction it zeroed."""
    return {
        **pruned,
        "sparsity_prunable": 1.0 - pruned["prunable_nonzero"] / dense["prunable_total"],
        "sparsity_all": 1.0 - pruned["params_nonzero"] / dense["params_total"],
        "sparsity_prunable_own": pruned["sparsity_prunable"],
    }


def _train_dense(ws: Workspace, job: TrainJob) -> Artifact:
    splits = load_splits(ws, job)
    model = build_dense(ws, job, splits)
    outcome = train_model(model, splits, job.training, seed=job.seed, progress=ws.progress)
    metrics = evaluate(model, splits, job.training.batch_size, max_batches=job.training.max_eval_batches)
    meta = {
        "kind": "dense",
        "train": outcome.as_dict(),
        "metrics": metrics,
        "accounting": _accounting(model, splits, job.model_params),
        "shape": asdict(splits.shape),
        "dataset_info": splits.info,
    }
    return save_artifact(ws.artifacts, job.key, model.state_dict(), meta)


def _prune(ws: Workspace, job: PruneJob) -> Artifact:
    dense = dense_artifact(ws, job.train)
    splits = load_splits(ws, job.train)
    model = build_dense(ws, job.train, splits)
    model.load_state_dict(load_weights(dense))
    model_params = job.train.model_params
    context = prune_context(job.train.model, model_params, splits, job.train.training, job.train.seed, ws.progress)
    if job.is_control:
        result, fine_tune = fine_tune_dense(model, job.fine_tune, context)
    else:
        pruner = ws.plugins().records["pruner"][job.pruner].plugin
        result, fine_tune = prune_and_fine_tune(model, pruner, job.sparsity, job.pruner_params, job.fine_tune, context)
    pruned = result.model
    metrics = evaluate(pruned, splits, job.train.training.batch_size,
                       max_batches=job.train.training.max_eval_batches)
    meta = {
        "kind": "pruned",
        "pruner": job.pruner,
        "target_sparsity": job.sparsity,
        "structure": result.structure,
        "prune_info": result.info,
        "fine_tune": fine_tune,
        "metrics": metrics,
        "accounting": _relative_to_dense(_accounting(pruned, splits, model_params), dense.meta["accounting"]),
        "shape": dense.meta["shape"],
    }
    return save_artifact(ws.artifacts, job.key, pruned.state_dict(), meta)


def load_model(ws: Workspace, job: PruneJob, artifact: Artifact, splits: DatasetSplits) -> nn.Module:
    """Rebuild the (possibly structurally pruned) model of an artifact and load its weights strictly."""
    model = build_dense(ws, job.train, splits)
    if job.pruner != DENSE:
        pruner = ws.plugins().records["pruner"][job.pruner].plugin
        model = pruner.restore(model, artifact.meta.get("structure") or {})
    model.load_state_dict(load_weights(artifact), strict=True)
    return model.eval()


SKIP_FACTS = "skipped_while"  # runtime_info member of a skipped row: was the runtime available then?


def quantizer_of(ws: Workspace, cell: Cell) -> Any:
    """The quantizer plugin of an INT8 cell (``quantize.method``)."""
    assert cell.quantize is not None
    return ws.plugins().records["quantizer"][cell.quantize.method].plugin


def fine_tune_key(cell: Cell, quantizer: FineTuningQuantizer) -> str:
    """The content hash of a quantizer's fine-tuning step: the pruned model and the fields that change it (a recipe
    by content), not the runtime or batch size, so every runtime cell of one pruned model shares one fine-tuning."""
    assert cell.quantize is not None
    return content_hash({"pruned": cell.prune.key, "qat": quantizer.fine_tune_fields(cell.quantize)})


def fine_tuned_artifact(ws: Workspace, cell: Cell, quantizer: FineTuningQuantizer, model: nn.Module,
                        splits: DatasetSplits) -> Artifact:
    """A fine-tuning quantizer's step (QAT) on a cell's pruned model, once per ``fine_tune_key``."""
    key = fine_tune_key(cell, quantizer)
    return _build(ws, key, _fine_tune, key, cell, quantizer, model, splits)


def _fine_tune(ws: Workspace, key: str, cell: Cell, quantizer: FineTuningQuantizer, model: nn.Module,
               splits: DatasetSplits) -> Artifact:
    job = cell.prune.train

    def train(m: Any, **kwargs: Any) -> dict[str, Any]:  # the cell's training loop
        return train_model(m, splits, job.training, seed=job.seed, progress=ws.progress, **kwargs).as_dict()

    fine_tuned, meta = quantizer.fine_tune(model, train, cell.quantize)
    return save_artifact(ws.artifacts, key, fine_tuned.state_dict(), {"kind": "qat", "pruned": cell.prune.key,
                                                                       **meta})


def load_fine_tuned(artifact: Artifact, quantizer: FineTuningQuantizer, model: nn.Module) -> Any:
    """What the quantizer takes from a stored fine-tuning: a copy of ``model`` with the fine-tuned weights and the
    stored record."""
    fine_tuned = copy.deepcopy(model)
    fine_tuned.load_state_dict(load_weights(artifact), strict=True)
    fine_tuned.eval()
    meta = {k: v for k, v in artifact.meta.items() if k not in {"kind", "pruned"}}
    return quantizer.load_fine_tuned(fine_tuned, meta)


def base_row(cell: Cell) -> dict[str, Any]:
    train = cell.prune.train
    return {
        "cell_key": cell.key,
        "spec_name": cell.spec_name,
        "spec_hash": cell.spec_hash,
        "dataset": train.dataset.plugin,
        "seq_len": train.dataset.seq_len,
        "label_len": train.dataset.label_len,
        "pred_len": train.pred_len,
        "model": train.model,
        "seed": train.seed,
        "pruner": cell.prune.pruner,
        "target_sparsity": cell.prune.sparsity,
        "fine_tuned": int(cell.prune.fine_tune is not None),
        "fine_tune": cell.prune.fine_tune.model_dump_json() if cell.prune.fine_tune is not None else None,
        "runtime": cell.runtime,
        "batch_size": cell.batch_size,
        "quantize": cell.quantize.method if cell.quantize is not None else None,
        "dense_cell_key": None if cell.is_reference else cell.dense_key,
        "train_key": train.key,
        "prune_key": cell.prune.key,
        "host": socket.gethostname(),
    }


@dataclass
class CellModels:
    """What a cell's measurement starts from: its (pruned) model and data, the dense reference model it is
    timed beside (none for a reference cell), and the fine-tuning of a ``FineTuningQuantizer`` (QAT) cell."""

    artifact: Artifact
    splits: DatasetSplits
    model: nn.Module
    dense: nn.Module | None = None
    fine_tuned: Any = None


def cell_models(ws: Workspace, cell: Cell, *, with_reference: bool = True) -> CellModels:
    """Train, prune and fine-tune (or find stored) what ``cell`` measures."""
    artifact = pruned_artifact(ws, cell.prune)
    splits = load_splits(ws, cell.prune.train)
    model = load_model(ws, cell.prune, artifact, splits)
    quantizer = quantizer_of(ws, cell) if cell.quantize is not None else None
    fine_tuned = None
    if isinstance(quantizer, FineTuningQuantizer):
        fine_tuned = load_fine_tuned(fine_tuned_artifact(ws, cell, quantizer, model, splits), quantizer, model)
    dense = None
    if with_reference and not cell.is_reference:
        dense = load_model(ws, cell.prune.dense, dense_artifact(ws, cell.prune.train), splits)
    return CellModels(artifact, splits, model, dense, fine_tuned)


def prepare_cell(ws: Workspace, cell: Cell, models: CellModels) -> Prepared:
    """The cell's session on its runtime, gated (fp32 against torch eager; INT8 quantized, gated with the
    relative tolerance and its test accuracy measured through the runtime)."""
    runtime = ws.plugins().records["runtime"][cell.runtime].plugin
    workdir = ws.artifacts / "runtime" / cell.key
    runtime_params = cell.runtime_params
    if cell.quantize is None:
        return prepare_fp32(models.model, runtime, runtime_params, models.splits, cell.batch_size, cell.timing,
                            workdir, max_eval_windows=eval_windows(cell.prune.train.training))
    return prepare_int8(models.model, runtime, runtime_params, models.splits, cell.batch_size, cell.timing,
                        cell.quantize, workdir, quantizer=quantizer_of(ws, cell), fine_tuned=models.fine_tuned,
                        max_eval_windows=eval_windows(cell.prune.train.training),
                        calibration_seed=cell.prune.train.seed)


def prepare_reference(ws: Workspace, cell: Cell, models: CellModels) -> Prepared:
    """The dense fp32 model on the cell's runtime, gated: the reference a cell is timed beside."""
    assert models.dense is not None
    runtime = ws.plugins().records["runtime"][cell.runtime].plugin
    runtime_params = cell.runtime_params
    return prepare_fp32(models.dense, runtime, runtime_params, models.splits, cell.batch_size, cell.timing,
                        ws.artifacts / "runtime" / cell.key / "dense-pair", accuracy=False)


def _paired_reference(ws: Workspace, cell: Cell, models: CellModels, info: dict[str, Any]) -> Prepared | None:
    """The prepared reference, or None (with the reason in ``info``) when it cannot run: the cell is then
    timed alone and gets no speedup (the reference cell's own row reports the problem)."""
    if models.dense is None:
        return None
    try:
        return prepare_reference(ws, cell, models)
    except Exception as exc:
        info["timing_pair_error"] = str(exc) if isinstance(exc, TsbenchError) else f"{type(exc).__name__}: {exc}"
        return None


def measure_cell(ws: Workspace, cell: Cell) -> dict[str, Any]:
    """Everything about one cell as a store row; failures become a failed (or skipped) row, never an exception.

    prepare → gate → time (interleaved with its dense reference: the speedup is that pair's) → row. The model
    steps hold the host lock shared, the measurement (gate and timing) exclusively: no timing runs beside other
    work of any tsbench process on this host. ``runtime_info.host_lock`` says so in the row."""
    row = base_row(cell)
    row["variant"] = variant_label(cell, ws.plugins())
    row["started_at"] = time.time()
    try:
        if cell.quantize is not None:  # INT8 this runtime cannot compute correctly on this CPU: skipped, no work
            int8_plan(ws.plugins().records["runtime"][cell.runtime].plugin, cell.quantize)
        with host_lock(ws.lock_dir, exclusive=False):
            models = cell_models(ws, cell)
            row |= model_columns(models.artifact)
            if cell.quantize is not None:  # the fp32 figures are not this cell's: measured through the runtime
                row |= dict.fromkeys(("mse", "mae", "mse_original", "mae_original"))
        with host_lock(ws.lock_dir, exclusive=True) as waited:
            held_from = time.time()
            prepared = prepare_cell(ws, cell, models)
            reference = None
            try:
                reference = _paired_reference(ws, cell, models, prepared.info)
                row |= time_prepared(prepared, cell.timing, reference, None if reference is None else cell.dense_key)
            finally:
                prepared.close()
                if reference is not None:
                    reference.close()
            row |= {"accuracy_from": "torch"} | prepared.finish()  # the runtime's own accuracy replaces torch's
            # torch's test figures of the same weights, beside the runtime's
            row["runtime_info"]["fp32_metrics" if cell.quantize is not None else "torch_metrics"] = \
                models.artifact.meta["metrics"]
            held_to = time.time()
        row["runtime_info"]["host_lock"] = {"exclusive": True, "waited_s": round(waited, 3), "from": held_from,
                                            "to": held_to}
        row["fraction_of_supported_ops"] = row["runtime_info"].get("fraction_of_supported_ops")
        row["status"] = STATUS_OK
    except RuntimeUnavailable as exc:
        record = ws.plugins().records["runtime"].get(cell.runtime)
        available = bool(record and record.availability().available)
        row |= {"status": STATUS_SKIPPED, "error": str(exc), "details": traceback.format_exc(),
                "runtime_info": {SKIP_FACTS: {"runtime_available": available}}}
    except CellError as exc:
        row |= {"status": STATUS_FAILED, "error": str(exc), **exc.columns,
                "details": exc.details or traceback.format_exc()}
    except TsbenchError as exc:
        row |= {"status": STATUS_FAILED, "error": str(exc), "details": traceback.format_exc()}
    except Exception as exc:  # a bug in a plugin must not stop the other cells
        row |= {"status": STATUS_FAILED, "error": f"{type(exc).__name__}: {exc}", "details": traceback.format_exc()}
    row["finished_at"] = time.time()
    return row


def model_columns(artifact: Artifact) -> dict[str, Any]:
    acc = artifact.meta["accounting"]
    metrics = artifact.meta["metrics"]
    info = artifact.meta.get("prune_info") or {}
    # over the weights the pruner was asked to prune (its own selection), else over the default prunable set
    achieved = info.get("achieved_sparsity", info.get("achieved_reduction", acc.get("sparsity_prunable")))
    return {
        "achieved_sparsity": achieved,
        "sparsity_all": acc.get("sparsity_all"),
        "params_total": acc.get("params_total"),
        "params_nonzero": acc.get("params_nonzero"),
        "macs_dense": acc.get("macs_dense"),
        "macs_effective": acc.get("macs_effective"),
        "mse": metrics.get("mse"),
        "mae": metrics.get("mae"),
        "mse_original": metrics.get("mse_original"),
        "mae_original": metrics.get("mae_original"),
        "prune_info": artifact.meta.get("prune_info"),
        "train_info": artifact.meta.get("train") or artifact.meta.get("fine_tune"),
    }

