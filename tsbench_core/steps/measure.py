"""Runtime step: prepare a session, verify its outputs against torch eager, then time it.

``measure_quantized`` is the INT8 variant: export fp32, quantize with calibration on training windows, gate with
a relative tolerance, measure test accuracy through the runtime, time it, and record sizes and peak memory.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from tsbench_core.cpu import cpu_facts
from tsbench_core.data import DatasetSplits, WindowedSplit, seed_offset
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.protocols import Int8Plan, OnnxGraphRuntime, availability_of, int8_plan_of
from tsbench_core.spec import QuantizeConfig, TimingConfig
from tsbench_core.steps.forecast_metrics import ForecastErrors
from tsbench_core.timing import time_session
from tsbench_core.verify import verify_session, verify_session_relative

if TYPE_CHECKING:
    from sparse_runtime.qat import QatResult

ONNX_RUNTIMES = ("onnxruntime", "deepsparse")


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


def measure(
    model: nn.Module,
    runtime: Any,
    runtime_params: BaseModel,
    split: WindowedSplit,
    batch_size: int,
    timing: TimingConfig,
    workdir: Path,
) -> dict[str, Any]:
    """Verify then time ``model`` on ``runtime``; returns the timing columns of a cell row."""
    availability = availability_of(runtime)
    if not availability.available:
        raise RuntimeUnavailable(f"runtime {runtime.name!r} is unavailable: {availability.reason}")
    threads = timing.threads or os.cpu_count() or 1
    model = model.cpu().eval()
    batches = static_batches(split, batch_size, timing.verify_batches)
    example = tuple(torch.from_numpy(a) for a in batches[0])
    session = runtime.prepare(copy.deepcopy(model), example, runtime_params, threads=threads, workdir=workdir)
    try:
        max_err = verify_session(session, model, batches, atol=timing.atol, rtol=timing.rtol)
        result = time_session(session, list(batches[0]), warmup=timing.warmup, repeats=timing.repeats)
        info = dict(getattr(session, "info", {}) or {})
    finally:
        session.close()
    footprint = onnx_footprint(runtime.name, workdir, batches[0], threads=threads, batch_size=batch_size)
    info.update(footprint.pop("info", {}))
    return {
        **footprint,
        "threads": threads,
        "latency_ms_median": result.median_ms,
        "latency_ms_p10": result.p10_ms,
        "latency_ms_p90": result.p90_ms,
        "throughput_samples_per_s": batch_size * 1000.0 / result.median_ms if result.median_ms > 0 else None,
        "max_abs_err_vs_torch": max_err,
        "runtime_info": info,
    }


def onnx_footprint(runtime_name: str, workdir: Path, inputs: tuple[np.ndarray, ...], *, threads: int,
                   batch_size: int, onnx_path: Path | None = None) -> dict[str, Any]:
    """``model_bytes``, ``model_bytes_compressed`` and ``peak_rss_mb`` of the ONNX graph a runtime ran (the one
    exported into ``workdir`` unless ``onnx_path`` is given); empty for runtimes that do not run ONNX."""
    if runtime_name not in ONNX_RUNTIMES:
        return {}
    from sparse_runtime.export import ExportResult
    from sparse_runtime.quantize import model_sizes, peak_rss

    if onnx_path is None:
        found = sorted(p for p in Path(workdir).glob("model*.onnx"))
        if not found:
            return {}
        onnx_path = found[0]
    sizes = model_sizes(onnx_path)
    export = _feeding(onnx_path, ExportResult)
    memory = peak_rss(runtime_name, export, list(inputs), threads=threads, batch_size=batch_size)
    return {"model_bytes": sizes["model_bytes"], "model_bytes_compressed": sizes["model_bytes_compressed"],
            "peak_rss_mb": memory.get("peak_rss_mb"), "info": {"memory": memory}}


def _feeding(path: Path, export_cls: Any) -> Any:
    """An ``ExportResult`` for a graph on disk: its inputs, mapped onto the forward arguments by name."""
    import onnx

    from sparse_runtime.export import INPUT_NAMES

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    names = tuple(i.name for i in proto.graph.input if i.name not in initializers)
    shapes = tuple(tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in proto.graph.input
                   if i.name not in initializers)
    return export_cls(path=Path(path), opset=0, input_names=names,
                      used_inputs=tuple(INPUT_NAMES.index(n) for n in names), input_shapes=shapes)


def evaluate_session(session: Any, splits: DatasetSplits, batch_size: int,
                     max_batches: int | None = None) -> dict[str, float]:
    """Test MSE/MAE of a static-batch session over the test windows, as ``steps.train.evaluate`` computes them
    for torch (scaled data; original scale too when the dataset asks): the last partial batch is padded with
    the first windows and the padding's outputs are dropped."""
    test = splits.test
    n = len(test)
    if n == 0:
        raise CellError("the test split has no windows")
    c_out = splits.shape.c_out
    errors = ForecastErrors(splits)
    for index, first in enumerate(range(0, n, batch_size)):
        if max_batches is not None and index >= max_batches:
            break
        real = min(batch_size, n - first)
        starts = (torch.arange(batch_size) + first) % n
        batch = test.batch(starts)
        out = session.run([t.numpy() for t in batch.inputs])
        errors.add(torch.from_numpy(np.asarray(out, dtype=np.float32))[:real, :, -c_out:], batch.y[:real])
    return errors.metrics()


def int8_plan(runtime: Any, quantize: QuantizeConfig) -> Int8Plan:
    """The runtime's INT8 plan for this process's CPU; raises ``RuntimeUnavailable`` (a skipped cell) when the
    runtime cannot compute the format correctly here — checked before any work."""
    plan = int8_plan_of(runtime, cpu_facts(), quantize.format)
    if plan.unsupported:
        raise RuntimeUnavailable(f"INT8 on {runtime.name}: {plan.unsupported}")
    return plan


def measure_quantized(
    model: nn.Module,
    runtime: Any,
    runtime_params: BaseModel,
    splits: DatasetSplits,
    batch_size: int,
    timing: TimingConfig,
    quantize: QuantizeConfig,
    workdir: Path,
    *,
    max_eval_batches: int | None = None,
    qat: QatResult | None = None,
    calibration_seed: int = 0,
) -> dict[str, Any]:
    """Quantize ``model`` to INT8 (calibrated on training windows from the seed's offset), gate it against
    torch-eager fp32 with the relative tolerance, then measure test accuracy, latency, sizes and peak memory
    through ``runtime``.

    ``method: sparseml-qat`` needs ``qat``, the result of the QAT step (``pipeline.qat_artifact``): its fine-tuned
    float model is exported, written with the learned scales and gated against instead of ``model`` (it is the
    model the INT8 graph approximates)."""
    from sparse_runtime.export import export_onnx
    from sparse_runtime.quantize import WindowCalibrationReader, model_sizes, quantize_onnx

    if not isinstance(runtime, OnnxGraphRuntime):
        raise RuntimeUnavailable(f"runtime {runtime.name!r} cannot run an INT8 ONNX graph; quantized cells run on "
                                 f"runtimes that open a given ONNX graph (onnxruntime, deepsparse, openvino)")
    availability = availability_of(runtime)
    if not availability.available:
        raise RuntimeUnavailable(f"runtime {runtime.name!r} is unavailable: {availability.reason}")
    plan = int8_plan(runtime, quantize)
    threads = timing.threads or os.cpu_count() or 1
    model = model.cpu().eval()
    workdir = Path(workdir)
    qparams, qat_info = None, None
    if quantize.method == "sparseml-qat":
        if qat is None:
            raise CellError("sparseml-qat needs the result of the QAT fine-tuning step")
        model, qparams = qat.model.cpu().eval(), qat.qparams
        qat_info = {k: v for k, v in qat.info.items() if k != "recipe_text"}
    gate_batches = static_batches(splits.test, batch_size, timing.verify_batches)
    example = tuple(torch.from_numpy(a) for a in gate_batches[0])
    opset = getattr(runtime_params, "opset", None)
    export = export_onnx(model, example, workdir / "model.fp32.onnx", **({"opset": opset} if opset else {}))
    calibration = static_batches(splits.train, batch_size, quantize.calibration_batches,
                                 offset=seed_offset(calibration_seed, len(splits.train)))
    reader = WindowCalibrationReader(calibration, export)
    quantized = quantize_onnx(export, workdir / "model.int8.onnx", reader, keep_float=quantize.keep_float,
                              per_channel=quantize.per_channel,
                              symmetric_activations=quantize.symmetric_activations, quant_format=quantize.format,
                              qparams=qparams, weights=plan.weights, weights_reason=plan.reason)
    session = runtime.open_graph(quantized.export, runtime_params, threads=threads, batch_size=batch_size)
    try:
        max_err, rel_err = verify_session_relative(session, model, gate_batches, tolerance=quantize.tolerance)
        metrics = evaluate_session(session, splits, batch_size, max_batches=max_eval_batches)
        result = time_session(session, list(gate_batches[0]), warmup=timing.warmup, repeats=timing.repeats)
        info = dict(getattr(session, "info", {}) or {})
    finally:
        session.close()
    sizes = model_sizes(quantized.path)
    fp32_sizes = model_sizes(export.path)
    footprint = onnx_footprint(runtime.name, workdir, gate_batches[0], threads=threads, batch_size=batch_size,
                               onnx_path=quantized.path)
    info |= {"quantize": quantized.info() | ({"method": "sparseml-qat", "qat": qat_info} if qat_info else {}),
             "fp32_model_bytes": fp32_sizes["model_bytes"],
             "fp32_model_bytes_compressed": fp32_sizes["model_bytes_compressed"], **footprint.get("info", {})}
    return {
        "quantize": quantize.method,
        **metrics,
        "model_bytes": sizes["model_bytes"],
        "model_bytes_compressed": sizes["model_bytes_compressed"],
        "peak_rss_mb": footprint.get("peak_rss_mb"),
        "threads": threads,
        "latency_ms_median": result.median_ms,
        "latency_ms_p10": result.p10_ms,
        "latency_ms_p90": result.p90_ms,
        "throughput_samples_per_s": batch_size * 1000.0 / result.median_ms if result.median_ms > 0 else None,
        "max_abs_err_vs_torch": max_err,
        "rel_err_vs_torch": rel_err,
        "runtime_info": info,
    }
