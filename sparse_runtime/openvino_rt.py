"""``openvino``: Intel's OpenVINO CPU plugin on the deploy-form ONNX export (fp32) or the project's INT8 graph.

fp32 sessions read the same static-shape export as ``onnxruntime`` with ``Core.read_model`` and compile it
for the CPU device with the thread count, one stream, the latency hint and fp32 inference precision set
explicitly (on a CPU with AVX512-BF16 or AMX, OpenVINO 2026 otherwise computes in bfloat16 and the gate fails).
INT8 cells hand it the graph ``sparse_runtime/quantize.py`` wrote (``open_graph``): the QDQ format becomes
OpenVINO's integer FullyConnected kernels; the MatMulInteger format is computed correctly, in fp32
FullyConnected kernels (``info.fully_connected`` counts which kernels ran). NNCF is not used: INT8 rows of every
runtime then come from the same quantized graph, and NNCF would bring its own dependencies and telemetry.

Sparse-weight decompression (``CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE``) is documented for INT8 matrix products on
CPUs with AMX only; ``decompression_decision`` turns it on where the CPU flags show AMX INT8 and says why not
elsewhere (``info.sparse_weights_decompression``).

OpenVINO's telemetry is kept off by ``sparse_runtime/openvino_telemetry.py``: openvino is imported only through
its ``import_openvino``. On x86 CPUs without VNNI, QDQ graphs are written with weights in half the 8-bit range
(``int8_plan``), OpenVINO's documented workaround for the saturation of its u8 x i8 kernels there.
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from sparse_runtime.common import base_versions, coerce_params, dist_versions
from sparse_runtime.export import DEFAULT_OPSET, ExportResult, export_onnx
from sparse_runtime.openvino_telemetry import ACTIVE_TELEMETRY, import_openvino, telemetry_status
from tsbench_core.cpu import CpuFacts, cpu_facts
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.protocols import Availability, Int8Plan, PluginParams

AMX_INT8_FLAGS = ("amx_tile", "amx_int8")  # the AMX tiles and their INT8 instructions (tsbench_core.cpu names)
DEFAULT_DECOMPRESSION_RATE = 0.5


class OpenVinoParams(PluginParams):
    """Options of the openvino runtime."""

    opset: int = Field(DEFAULT_OPSET, ge=11, le=17, description="ONNX opset of the fp32 export.")
    cpu_pinning: bool = Field(False, description="Bind the inference threads to cores (ENABLE_CPU_PINNING). Off: "
                              "the other runtimes' threads are not bound either.")
    sparse_weights_decompression: Literal["auto", "off"] = Field(
        "auto", description="auto: set CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE for INT8 graphs on CPUs with AMX INT8 "
        "(the only ones OpenVINO documents it for); off: never.")
    decompression_rate: float = Field(
        DEFAULT_DECOMPRESSION_RATE, ge=0.0, le=1.0,
        description="The value set when enabled: matrix products whose weights have a larger fraction of zeros "
        "use the sparse kernels (1 disables them).")


# --- sparse-weight decompression --------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The features ``tsbench_core/cpu.py`` measured on this process's CPU (``CPUID``; right under an emulator)."""
    return set(cpu_facts().features)


def decompression_decision(flags: set[str], *, int8: bool, mode: str = "auto",
                           rate: float = DEFAULT_DECOMPRESSION_RATE) -> dict[str, Any]:
    """Whether to set OpenVINO's sparse-weight decompression for a graph, and why: ``enabled``, ``rate`` (the
    value to set, None when off), ``reason`` and a short ``summary``.

    OpenVINO documents the feature for INT8 matrix products on CPUs with AMX only (and weights whose input and
    output channels are multiples of 64).
    """
    if mode == "off":
        return {"enabled": False, "rate": None, "summary": "off (params)", "reason": "off in the runtime params"}
    missing = [flag for flag in AMX_INT8_FLAGS if flag not in flags]
    if missing:
        return {"enabled": False, "rate": None, "summary": "off (no AMX INT8)",
                "reason": f"this CPU has no AMX INT8 ({', '.join(missing)} not among its flags); OpenVINO "
                          f"decompresses sparse weights on AMX only"}
    if not int8:
        return {"enabled": False, "rate": None, "summary": "off (fp32 graph)",
                "reason": "fp32 graph: OpenVINO decompresses sparse weights of INT8 matrix products only"}
    return {"enabled": True, "rate": rate, "summary": f"on (rate {rate:g})",
            "reason": f"AMX INT8 present: INT8 matrix products with more than {rate:g} zeros use sparse kernels"}


# --- sessions ---------------------------------------------------------------------------------------------


class OpenVinoSession:
    """One compiled model and its infer request, fed the graph's inputs in graph order."""

    def __init__(self, request: Any, export: ExportResult, info: dict[str, Any]) -> None:
        self._request = request
        self._export = export
        self.info = info

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self._request.infer(self._export.select(list(inputs)), share_inputs=True)[0]

    def close(self) -> None:
        self._request = None


def compile_properties(threads: int, *, cpu_pinning: bool, decompression_rate: float | None) -> dict[str, Any]:
    """The CPU plugin properties a timed session is compiled with (documented OpenVINO property names)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    props: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": cpu_pinning,
    }
    if decompression_rate is not None:
        props["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] = decompression_rate
    return props


def kernel_summary(compiled: Any) -> dict[str, Any]:
    """Which kernels the compiled model's matrix products run: FullyConnected nodes in total, in INT8, with
    sparse kernels, and the count of each primitive type (from the runtime model's ``rt_info``)."""
    kinds: Counter[str] = Counter()
    int8 = sparse = total = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) != "FullyConnected":
            continue
        total += 1
        primitive = info["primitiveType"].astype(str) if "primitiveType" in info else "?"
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        kinds[primitive] += 1
        int8 += precision in ("u8", "i8")
        sparse += "sparse" in primitive.lower()
    return {"total": total, "int8": int8, "sparse": sparse, "primitive_types": dict(sorted(kinds.items()))}


class OpenVinoRuntime:
    name = "openvino"
    description = "OpenVINO CPU plugin, static-shape deploy-form export (fp32) or the project's INT8 graph"
    params_model: type[BaseModel] = OpenVinoParams
    device = "cpu"
    int8_format = "qdq"  # the quantized graph OpenVINO runs with integer kernels

    def availability(self) -> Availability:
        if importlib.util.find_spec("openvino") is None:
            return Availability.no("openvino is not installed (pip install 'tsbench[openvino]')")
        if telemetry_status() == "active":
            return Availability.no(ACTIVE_TELEMETRY)
        return Availability.yes()

    def versions(self) -> dict[str, str]:
        return {**base_versions(), **dist_versions("openvino", "onnx")}

    def int8_plan(self, cpu: CpuFacts, quant_format: str) -> Int8Plan:
        """int8 weights, except QDQ graphs on x86-64 without VNNI: weights in half the 8-bit range (``int8-7bit``).

        OpenVINO documents that its u8 x i8 kernels saturate on x86 CPUs without VNNI (a 16-bit intermediate) and
        that weights in half the 8-bit range avoid it (its "saturation issue" workaround). It runs MatMulInteger
        graphs in fp32 kernels, exact with any encoding."""
        seen = cpu.described()
        if quant_format != "qdq":
            return Int8Plan("int8", f"{quant_format}: OpenVINO computes it in fp32 kernels, exact on every CPU; {seen}")
        if cpu.x86_64 and not cpu.vnni:
            return Int8Plan("int8-7bit", f"x86-64 without VNNI: {seen}; OpenVINO's u8 x i8 kernels saturate in 16 "
                            "bits there, weights in half the 8-bit range do not (its documented workaround)")
        return Int8Plan("int8", f"{'VNNI/AMX' if cpu.vnni else 'not x86-64'}: {seen}; OpenVINO's u8 x i8 kernels do "
                        "not saturate")

    def prepare(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], params: BaseModel, *,
                threads: int, workdir: Path) -> OpenVinoSession:
        self._require()
        p = coerce_params(params, OpenVinoParams)
        export = export_onnx(model, example_inputs, Path(workdir) / "model.openvino.onnx", opset=p.opset)
        return self._compile(export, p, threads=threads, batch_size=int(example_inputs[0].shape[0]), int8=False,
                             model_name=type(model).__name__)

    def open_graph(self, export: ExportResult, params: BaseModel, *, threads: int,
                   batch_size: int) -> OpenVinoSession:
        """A session on a given ONNX graph (an INT8 graph from ``sparse_runtime/quantize.py``)."""
        self._require()
        p = coerce_params(params, OpenVinoParams)
        return self._compile(export, p, threads=threads, batch_size=batch_size, int8=True,
                             model_name=export.path.name)

    def _require(self) -> None:
        available = self.availability()
        if not available.available:
            raise RuntimeUnavailable(available.reason)

    def _compile(self, export: ExportResult, p: OpenVinoParams, *, threads: int, batch_size: int, int8: bool,
                 model_name: str) -> OpenVinoSession:
        ov = import_openvino()
        decision = decompression_decision(cpu_flags(), int8=int8, mode=p.sparse_weights_decompression,
                                          rate=p.decompression_rate)
        props = compile_properties(threads, cpu_pinning=p.cpu_pinning, decompression_rate=decision["rate"])
        core = ov.Core()
        start = time.perf_counter()
        try:
            graph = core.read_model(str(export.path))
            read_s = time.perf_counter() - start
            if graph.is_dynamic():
                raise CellError(f"openvino read {model_name} with dynamic shapes; tsbench times static shapes only")
            compiled = core.compile_model(graph, "CPU", props)
        except CellError:
            raise
        except Exception as exc:
            raise CellError(f"openvino could not compile {model_name}: {type(exc).__name__}: {exc}") from exc
        compile_s = time.perf_counter() - start - read_s
        in_force = {key: _plain(compiled.get_property(key)) for key in props}
        kernels = kernel_summary(compiled)
        decompression = {**decision, "sparse_kernels": kernels["sparse"]}
        if decision["enabled"] and not kernels["sparse"]:
            decompression["note"] = ("no matrix product took the sparse kernels (they need INT8 FullyConnected "
                                     "nodes with enough zeros and channel counts that are multiples of 64)")
        info: dict[str, Any] = {
            "runtime": self.name, "device": "cpu", "versions": self.versions(), "batch_size": batch_size,
            "threads": {"inference_num_threads": int(in_force["INFERENCE_NUM_THREADS"]),
                        "num_streams": int(in_force["NUM_STREAMS"])},
            "properties": in_force, "read_s": read_s, "compile_s": compile_s,
            "cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME")),
            "cpu_capabilities": [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")],
            "fully_connected": kernels, "sparse_weights_decompression": decompression,
            "telemetry": telemetry_status(), **export.info(),
        }
        return OpenVinoSession(compiled.create_infer_request(), export, info)


def _plain(value: Any) -> Any:
    """A property value as JSON-able data (OpenVINO returns enums and element types for some)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


PLUGINS = (OpenVinoRuntime(),)
