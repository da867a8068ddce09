"""The measure step, shared by `tsbench run` and the pytest plugin: prepare → gate → time → row.

``prepare_fp32`` prepares a session and gates it against torch eager; ``prepare_int8`` is the INT8 variant
(the cell's quantizer plugin writes the INT8 graph, calibrated on training windows; the runtime opens it; gate with
a relative tolerance, measure test accuracy through the runtime). Both return a ``Prepared`` session;
``time_prepared`` times it with the timing protocol of record (``timing.py``), interleaved with its dense reference
when one is given, and ``Prepared.finish`` closes it and gives the rest of the row (sizes, peak memory, runtime info).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from tsbench_core.cpu import cpu_facts
from tsbench_core.data import DatasetSplits, WindowedSplit, seed_offset
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.protocols import (
    GraphFootprint,
    Int8Plan,
    OnnxGraphRuntime,
    QuantizeJob,
    QuantizerPlugin,
    RuntimeSession,
    availability_of,
    export_opset_of,
    int8_plan_of,
)
from tsbench_core.spec import QuantizeConfig, TimingConfig
from tsbench_core.steps.forecast_metrics import ForecastErrors
from tsbench_core.timing import TimingResult, time_sessions_interleaved
from tsbench_core.verify import verify_session, verify_session_relative


def static_batches(split: WindowedSplit, batch_size: int, count: int, offset: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``count`` real batches of exactly ``batch_size`` windows, spread over the split from window ``offset``
    (wrapping if short)."""
    n = len(split)
    batches = []
    for i in range(count):
        first = ((i * n) // max(count, 1) + offset) % n
        starts = (torch.arange(batch_size) + first) % n
        batches.append(tuple(t.numpy() for t in split.batch(starts).inputs))
    return batches


@dataclass
class Prepared:
    """A session that passed the correctness gate, ready to be timed, and the row columns known before timing.

    ``footprint`` (sizes and peak memory of the graph the runtime ran) is measured by ``finish`` once the session
    is closed, so the two never compete for memory."""

    session: RuntimeSession
    inputs: list[np.ndarray]  # the batch every timed call runs
    batch_size: int
    threads: int
    prepare_s: float  # session creation: export, compile, open
    columns: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    footprint: Callable[[], dict[str, Any]] = dict
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.info = {**(self.session.info or {}), **self.info}
            self.closed = True
            self.session.close()

    def finish(self) -> dict[str, Any]:
        """Close the session; the columns of the row this preparation gives (timing excluded)."""
        self.close()
        footprint = self.footprint()
        info = {**self.info, **footprint.pop("info", {})}
        return {**self.columns, **footprint, "threads": self.threads, "prepare_s": self.prepare_s,
                "runtime_info": info}


def _threads(timing: TimingConfig) -> int:
    return timing.threads or os.cpu_count() or 1


def _available(runtime: Any) -> None:
    availability = availability_of(runtime)
    if not availability.available:
        raise RuntimeUnavailable(f"runtime {runtime.name!r} is unavailable: {availability.reason}")


def prepare_fp32(model: nn.Module, runtime: Any, runtime_params: BaseModel, splits: DatasetSplits, batch_size: int,
                 timing: TimingConfig, workdir: Path, *, accuracy: bool = True,
                 max_eval_windows: int | None = None) -> Prepared:
    """Prepare ``model`` on ``runtime`` and gate it against torch eager (``timing.atol``/``rtol``); with
    ``accuracy`` (and ``timing.runtime_accuracy`` at this batch size), measure test MSE/MAE through the session."""
    _available(runtime)
    threads = _threads(timing)
    model = model.cpu().eval()
    batches = static_batches(splits.test, batch_size, timing.verify_batches)
    example = tuple(torch.from_numpy(a) for a in batches[0])
    started = time.perf_counter()
    session = runtime.prepare(copy.deepcopy(model), example, runtime_params, threads=threads, workdir=workdir)
    prepare_s = time.perf_counter() - started
    try:
        columns: dict[str, Any] = {"max_abs_err_vs_torch": verify_session(session, model, batches, atol=timing.atol,
                                                                          rtol=timing.rtol)}
        if accuracy and timing.accuracy_at(batch_size):
            columns |= {**evaluate_session(session, splits, batch_size, max_windows=max_eval_windows),
                        "accuracy_from": "runtime"}
    except BaseException:
        session.close()
        raise

    def footprint() -> dict[str, Any]:
        return graph_footprint(runtime, workdir, batches[0], threads=threads, batch_size=batch_size)

    return Prepared(session, list(batches[0]), batch_size, threads, prepare_s, columns=columns, footprint=footprint)


def timing_columns(result: TimingResult) -> dict[str, Any]:
    """The latency columns of a row from its timing."""
    return {
        "latency_ms_median": result.median_ms,
        "latency_ms_p10": result.p10_ms,
        "latency_ms_p90": result.p90_ms,
        "latency_ms_iqr": result.iqr_ms,
        "latency_outliers": result.outliers,
        "latency_unstable": int(result.unstable),
        "throughput_samples_per_s": result.batch_size * 1000.0 / result.median_ms if result.median_ms > 0 else None,
    }


def time_prepared(cell: Prepared, timing: TimingConfig, reference: Prepared | None = None,
                  reference_key: str | None = None) -> dict[str, Any]:
    """Time a prepared cell, in interleaved rounds with its prepared dense ``reference`` when given (same
    process, inputs and threads): the latency columns, and with a reference the pair — its median
    (``dense_latency_ms_paired``), the speedup between the two, and both sets of raw samples in
    ``runtime_info.timing``."""
    sessions = {"cell": cell.session} if reference is None else {"cell": cell.session, "dense": reference.session}
    rounds = timing.rounds if reference is not None else 1
    results = time_sessions_interleaved(sessions, cell.inputs, warmup=timing.warmup, repeats=timing.repeats,
                                        rounds=rounds, batch_size=cell.batch_size, min_time_s=timing.min_time_s)
    own = results["cell"]
    record: dict[str, Any] = {"protocol": "interleaved with the dense reference" if reference else "alone",
                              "rounds": min(rounds, timing.repeats), "min_time_s": timing.min_time_s,
                              **own.to_dict()}
    columns = timing_columns(own)
    if reference is not None:
        dense = results["dense"]
        columns["dense_latency_ms_paired"] = dense.median_ms
        columns["speedup_vs_dense"] = dense.median_ms / own.median_ms if own.median_ms > 0 else None
        record["pair"] = {"dense_cell_key": reference_key, "threads": reference.threads, **dense.to_dict()}
    cell.info["timing"] = record
    return columns


def graph_footprint(runtime: Any, workdir: Path, inputs: tuple[np.ndarray, ...], *, threads: int, batch_size: int,
                    graph: Path | None = None) -> dict[str, Any]:
    """Size and peak memory of the graph a runtime ran (``GraphFootprint``); empty for other runtimes."""
    if not isinstance(runtime, GraphFootprint):
        return {}
    return runtime.footprint(workdir, inputs, threads=threads, batch_size=batch_size, graph=graph)


def evaluate_session(session: Any, splits: DatasetSplits, batch_size: int,
                     max_windows: int | None = None) -> dict[str, float]:
    """Test MSE/MAE of a static-batch session over the test windows (the first ``max_windows`` of them, when
    given: the windows torch's evaluation covers), as ``steps.train.evaluate`` computes them for torch (scaled
    data; original scale too when the dataset asks): the last partial batch is padded with the first windows and
    the padding's outputs are dropped."""
    test = splits.test
    n = len(test) if max_windows is None else min(len(test), max_windows)
    if n == 0:
        raise CellError("the test split has no windows")
    c_out = splits.shape.c_out
    errors = ForecastErrors(splits)
    for first in range(0, n, batch_size):
        real = min(batch_size, n - first)
        starts = (torch.arange(batch_size) + first) % len(test)
        batch = test.batch(starts)
        out = session.run([t.numpy() for t in batch.inputs])
        errors.add(torch.from_numpy(np.asarray(out, dtype=np.float32))[:real, :, -c_out:], batch.y[:real])
    return errors.metrics()


def eval_windows(training: Any) -> int | None:
    """How many test windows torch's evaluation covers under a training config (all: None)."""
    return None if training.max_eval_batches is None else training.max_eval_batches * training.batch_size


def int8_plan(runtime: Any, quantize: QuantizeConfig) -> Int8Plan:
    """The runtime's INT8 plan for this process's CPU; raises ``RuntimeUnavailable`` (a skipped cell) when the
    runtime cannot compute the format correctly here — checked before any work."""
    plan = int8_plan_of(runtime, cpu_facts(), quantize.format)
    if plan.unsupported:
        raise RuntimeUnavailable(f"INT8 on {runtime.name}: {plan.unsupported}")
    return plan


def prepare_int8(
    model: nn.Module,
    runtime: Any,
    runtime_params: BaseModel,
    splits: DatasetSplits,
    batch_size: int,
    timing: TimingConfig,
    quantize: QuantizeConfig,
    workdir: Path,
    *,
    quantizer: QuantizerPlugin,
    max_eval_windows: int | None = None,
    fine_tuned: Any = None,
    calibration_seed: int = 0,
) -> Prepared:
    """Quantize ``model`` to INT8 with ``quantizer`` (calibrated on training windows from the seed's offset),
    gate it against torch-eager fp32 with the relative tolerance, and measure test accuracy through ``runtime``
    (an ``OnnxGraphRuntime``); sizes and peak memory come with ``finish``.

    A ``FineTuningQuantizer`` (``sparseml-qat``) needs ``fine_tuned``, the result of its step
    (``pipeline.fine_tuned_artifact``); the graph is gated against the model the quantizer says it approximates."""
    if not isinstance(runtime, OnnxGraphRuntime):
        raise RuntimeUnavailable(f"runtime {runtime.name!r} cannot run an INT8 ONNX graph; quantized cells run on "
                                 f"runtimes that open a given ONNX graph (onnxruntime, deepsparse, openvino)")
    _available(runtime)
    plan = int8_plan(runtime, quantize)
    threads = _threads(timing)
    model = model.cpu().eval()
    workdir = Path(workdir)
    gate_batches = static_batches(splits.test, batch_size, timing.verify_batches)
    started = time.perf_counter()
    calibration = static_batches(splits.train, batch_size, quantize.calibration_batches,
                                 offset=seed_offset(calibration_seed, len(splits.train)))
    job = QuantizeJob(model=model, example_inputs=tuple(torch.from_numpy(a) for a in gate_batches[0]),
                      calibration=calibration, plan=plan, workdir=workdir, opset=export_opset_of(runtime_params),
                      fine_tuned=fine_tuned)
    quantized = quantizer.quantize(quantize, job)
    session = runtime.open_graph(quantized.graph, runtime_params, threads=threads, batch_size=batch_size)
    prepare_s = time.perf_counter() - started
    try:
        max_err, rel_err = verify_session_relative(session, quantized.reference, gate_batches,
                                                   tolerance=quantize.tolerance)
        metrics = evaluate_session(session, splits, batch_size, max_windows=max_eval_windows)
    except BaseException:
        session.close()
        raise

    def footprint() -> dict[str, Any]:
        sizes = quantized.sizes()
        memory = graph_footprint(runtime, workdir, gate_batches[0], threads=threads, batch_size=batch_size,
                                 graph=quantized.path)
        info = {"quantize": quantized.info, "fp32_model_bytes": sizes["fp32_model_bytes"],
                "fp32_model_bytes_compressed": sizes["fp32_model_bytes_compressed"], **memory.get("info", {})}
        return {"model_bytes": sizes["model_bytes"], "model_bytes_compressed": sizes["model_bytes_compressed"],
                "peak_rss_mb": memory.get("peak_rss_mb"), "info": info}

    columns = {"quantize": quantize.method, **metrics, "accuracy_from": "runtime", "max_abs_err_vs_torch": max_err,
               "rel_err_vs_torch": rel_err}
    return Prepared(session, list(gate_batches[0]), batch_size, threads, prepare_s, columns=columns,
                    footprint=footprint)
