"""``onnxruntime``: the deploy-form ONNX export on ONNX Runtime's CPU execution provider."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from sparse_runtime.common import base_versions, coerce_params, dist_versions
from sparse_runtime.export import DEFAULT_OPSET, ExportResult, export_onnx
from tsbench_core.cpu import CpuFacts
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.protocols import Availability, Int8Plan, PluginParams


class OrtParams(PluginParams):
    """Options of the onnxruntime runtime."""

    opset: int = Field(DEFAULT_OPSET, ge=11, le=17)
    graph_optimization: str = Field("all", pattern="^(disable|basic|extended|all)$")


class OrtSession:
    def __init__(self, session: Any, export: ExportResult, info: dict[str, Any]) -> None:
        self._session = session
        self._export = export
        self._names = list(export.input_names)
        self.info = info

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        feed = dict(zip(self._names, self._export.select(list(inputs)), strict=True))
        return self._session.run(None, feed)[0]

    def close(self) -> None:
        self._session = None


class OnnxRuntimeRuntime:
    name = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider, static-shape deploy-form export"
    params_model: type[BaseModel] = OrtParams
    device = "cpu"
    int8_format = "matmulinteger"  # for `tsbench bench --quantize` (both formats run integer kernels here)
    graph_libraries = ("onnxruntime",)  # imported before a peak-memory baseline (``memory.py``)

    def availability(self) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability.no("onnxruntime is not installed (pip install onnxruntime)")
        if importlib.util.find_spec("onnx") is None:
            return Availability.no("onnx is not installed (needed for the export)")
        return Availability.yes()

    def versions(self) -> dict[str, str]:
        return {**base_versions(), **dist_versions("onnxruntime", "onnx")}

    def int8_plan(self, cpu: CpuFacts, quant_format: str) -> Int8Plan:
        """uint8 weights (U8U8) on x86-64 without VNNI, where ONNX Runtime's uint8 x int8 kernels use the
        saturating VPMADDUBSW (its documented remedy; exact, see ``sparse_runtime/quantize.py``); int8 elsewhere."""
        seen = cpu.described()
        if cpu.x86_64 and not cpu.vnni:
            return Int8Plan("uint8", f"x86-64 without VNNI: {seen}; ONNX Runtime computes uint8 x int8 with "
                            "VPMADDUBSW, which saturates in 16 bits; uint8 x uint8 does not")
        return Int8Plan("int8", f"{'VNNI/AMX' if cpu.vnni else 'not x86-64'}: {seen}; uint8 x int8 does not "
                        "saturate")

    def prepare(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], params: BaseModel, *,
                threads: int, workdir: Path) -> OrtSession:
        available = self.availability()
        if not available.available:
            raise RuntimeUnavailable(available.reason)
        import onnxruntime as ort

        p = coerce_params(params, OrtParams)
        export = export_onnx(model, example_inputs, Path(workdir) / "model.ort.onnx", opset=p.opset)
        opts = session_options(threads, p.graph_optimization)
        try:
            session = ort.InferenceSession(str(export.path), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CellError(f"onnxruntime cannot load the export of {type(model).__name__}: {exc}") from exc
        info = {"runtime": self.name, "device": "cpu", "versions": self.versions(),
                "providers": session.get_providers(),
                "threads": {"intra_op": threads, "inter_op": 1}, "intra_op_spinning": SPINNING,
                "graph_optimization": p.graph_optimization, **export.info()}
        return OrtSession(session, export, info)

    def footprint(self, workdir: Path, inputs: tuple[np.ndarray, ...], *, threads: int, batch_size: int,
                  graph: Path | None = None) -> dict[str, Any]:
        """Size and peak memory of the graph run (``GraphFootprint``)."""
        from sparse_runtime.footprint import graph_footprint

        return graph_footprint(self, workdir, inputs, threads=threads, batch_size=batch_size, graph=graph)

    def open_graph(self, export: ExportResult, params: BaseModel, *, threads: int, batch_size: int) -> OrtSession:
        """A session on a given ONNX graph (an INT8 graph from ``sparse_runtime/quantize.py``)."""
        import onnxruntime as ort

        p = coerce_params(params, OrtParams)
        opts = session_options(threads, p.graph_optimization)
        try:
            session = ort.InferenceSession(str(export.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CellError(f"onnxruntime cannot load {export.path.name}: {exc}") from exc
        info = {"runtime": self.name, "device": "cpu",
                "threads": {"intra_op": threads, "inter_op": 1}, "intra_op_spinning": SPINNING,
                "graph_optimization": p.graph_optimization, **export.info()}
        return OrtSession(session, export, info)


PLUGINS = (OnnxRuntimeRuntime(),)


SPINNING = False  # recorded in every session's info


def session_options(threads: int, graph_optimization: str) -> Any:
    """ONNX Runtime options for timing: ``threads`` intra-op threads that do not spin, sequential, the given
    optimisation level.

    Spinning is off because a cell is timed in interleaved rounds beside its dense session, and each session owns
    its pool: the idle session's spinning threads took the cores from the running one (2 cores: pair IQR ~4 ms
    against ~0.1-0.2 ms alone, ``benchmarks/ort_pair_interference.py``). One global pool would keep spinning but
    cannot serve cells with different thread counts in one process."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPINNING else "0")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    return opts
