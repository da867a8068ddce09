"""Post-training static INT8 quantization of an exported (pruned) ONNX graph, and what it costs in bytes and memory.

The fp32 deploy-form export is quantized with ONNX Runtime's ``quantize_static`` into the QDQ format (every
quantized tensor is a QuantizeLinear → DequantizeLinear pair), which both ONNX Runtime and DeepSparse run:

* weights: int8, symmetric (zero point 0, so a pruned zero stays exactly 0), one scale per tensor by default
  (DeepSparse 1.8 leaves per-channel weight DequantizeLinear nodes outside its engine);
* activations: uint8, asymmetric, min/max calibrated on training windows — the defaults of SparseML 1.8's
  quantization (``QConfigProperties``: symmetric weights, asymmetric activations), which is what DeepSparse's
  INT8 kernels are built for;
* only MatMul/Gemm with a constant weight are quantized (``MatMulConstBOnly``): the products of two
  activations (attention scores) stay float, as do the nodes matched by ``keep_float`` patterns. Conv (the
  token embeddings) stays float: DeepSparse 1.8 rejects a quantized Conv of this graph ("kernel is not
  constant") and then runs the whole graph outside its engine.

``keep_float`` patterns name modules (``fnmatch`` on the dotted module path the legacy exporter writes into node
names, ``/decoder/projection/MatMul`` → ``decoder.projection``; a pattern matching a module keeps all nodes inside
it), or op types as ``op:TYPE``.

onnx 1.14 (pinned for DeepSparse 1.8) lacks the 4-bit tensor types that onnxruntime's quantization module names
at import time; ``_quantization_module`` adds the two enum values before importing it (nothing here uses them).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sparse_runtime.export import ExportResult
from tsbench_core.errors import CellError, RuntimeUnavailable

QUANTIZED_OP_TYPES = ("MatMul", "Gemm")
QDQ_OP_TYPES = ("QuantizeLinear", "DequantizeLinear")
ONNX_RUNTIMES = ("onnxruntime", "deepsparse")


def _quantization_module() -> Any:
    """``onnxruntime.quantization``, importable next to onnx 1.14 (see the module docstring)."""
    from onnx import TensorProto

    for name, value in (("UINT4", 21), ("INT4", 22)):  # the values onnx >= 1.16 gives them
        if not hasattr(TensorProto, name):
            setattr(TensorProto, name, value)
    import onnxruntime.quantization as quantization

    return quantization


# --- which nodes stay float ------------------------------------------------------------------------------


def module_path(node_name: str) -> str:
    """The dotted module path of a node named by the legacy exporter (``/a/b.0/c/MatMul_1`` → ``a.b.0.c``)."""
    parts = [p for p in node_name.split("/") if p]
    return ".".join(parts[:-1])


def keeps_float(patterns: Sequence[str], node_name: str, op_type: str) -> str | None:
    """The first pattern that keeps this node in float, or None."""
    path = module_path(node_name)
    parts = path.split(".") if path else []
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if pattern.startswith("op:"):
            if op_type == pattern[3:]:
                return pattern
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return pattern
    return None


def float_nodes(proto: Any, patterns: Sequence[str]) -> dict[str, str]:
    """Quantizable nodes (by op type) kept in float, with the pattern that matched each."""
    kept = {}
    for node in proto.graph.node:
        if node.op_type in QUANTIZED_OP_TYPES:
            pattern = keeps_float(patterns, node.name, node.op_type)
            if pattern is not None:
                kept[node.name] = pattern
    return kept


# --- calibration -----------------------------------------------------------------------------------------


class WindowCalibrationReader:
    """A ``CalibrationDataReader`` over fixed batches of training windows, fed in the graph's input order.

    ``batches`` hold the model's four forward arguments each (numpy); ``export`` tells which ones the graph
    takes. ``yielded`` counts the batches handed out since the last ``rewind``.
    """

    def __init__(self, batches: Sequence[Sequence[np.ndarray]], export: ExportResult) -> None:
        if not batches:
            raise CellError("INT8 calibration needs at least one batch of training windows")
        self._feeds = [dict(zip(export.input_names, export.select(list(b)), strict=True)) for b in batches]
        self._next = 0
        self.yielded = 0

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._feeds):
            return None
        feed = self._feeds[self._next]
        self._next += 1
        self.yielded += 1
        return feed

    def rewind(self) -> None:
        self._next = 0
        self.yielded = 0


# --- quantization ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeResult:
    """A quantized graph and how it was made."""

    export: ExportResult  # the fp32 export's feeding info, with ``path`` pointing at the INT8 graph
    fp32_path: Path
    kept_float: dict[str, str]  # node name -> pattern
    quantized_nodes: int
    calibration_batches: int
    seconds: float
    op_counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.export.path

    def info(self) -> dict[str, Any]:
        return {
            **self.settings,
            "calibration_batches": self.calibration_batches,
            "quantized_nodes": self.quantized_nodes,
            "kept_float": dict(sorted(self.kept_float.items())),
            "qdq_nodes": {op: self.op_counts.get(op, 0) for op in QDQ_OP_TYPES},
            "quantize_seconds": round(self.seconds, 3),
        }


def quantize_onnx(export: ExportResult, out_path: Path, reader: WindowCalibrationReader, *,
                  keep_float: Sequence[str] = (), per_channel: bool = False,
                  symmetric_activations: bool = False) -> QuantizeResult:
    """Static INT8 QDQ quantization of ``export`` (fp32 ONNX) into ``out_path`` (written atomically)."""
    import onnx

    q = _quantization_module()
    proto = onnx.load(str(export.path))
    kept = float_nodes(proto, keep_float)
    constants = {t.name for t in proto.graph.initializer}
    constants |= {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    candidates = [n.name for n in proto.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in kept
                  and len(n.input) > 1 and n.input[1] in constants]
    if not candidates:
        raise CellError(f"INT8: nothing to quantize: every MatMul/Gemm with a constant weight is kept float by "
                        f"keep_float {list(keep_float)}")
    q.CalibrationDataReader.register(WindowCalibrationReader)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    settings = {"method": "static-int8", "format": "QDQ", "weights": "int8 symmetric",
                "activations": f"uint8 {'symmetric' if symmetric_activations else 'asymmetric'}",
                "per_channel": per_channel, "calibration": "minmax", "op_types": list(QUANTIZED_OP_TYPES),
                "matmul_const_b_only": True}
    start = time.perf_counter()
    reader.rewind()
    try:
        q.quantize_static(
            str(export.path), str(tmp), reader, quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=per_channel,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            nodes_to_exclude=sorted(kept), calibrate_method=q.CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                           "MatMulConstBOnly": True},
        )
        _store_raw(tmp)
        os.replace(tmp, out_path)
    except CellError:
        raise
    except Exception as exc:
        raise CellError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - start
    quantized = onnx.load(str(out_path))
    ops = Counter(node.op_type for node in quantized.graph.node)
    stored = {t.name for t in quantized.graph.initializer}
    dequantized_inputs = {n.output[0] for n in quantized.graph.node
                          if n.op_type == "DequantizeLinear" and n.input[0] in stored}  # weights, not activations
    quantized_nodes = sum(1 for n in quantized.graph.node if n.op_type in QUANTIZED_OP_TYPES
                          and len(n.input) > 1 and n.input[1] in dequantized_inputs)
    return QuantizeResult(export=replace(export, path=out_path), fp32_path=export.path, kept_float=kept,
                          quantized_nodes=quantized_nodes, calibration_batches=reader.yielded,
                          seconds=seconds, op_counts=dict(ops), settings=settings)


def _store_raw(path: Path) -> None:
    """Rewrite every initializer with its bytes in ``raw_data`` (the quantizer writes int8 tensors as varints in
    ``int32_data``, up to 10 bytes per element), so the file size reflects the tensors' real size."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    for index, tensor in enumerate(proto.graph.initializer):
        if not tensor.HasField("raw_data"):
            proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor),
                                                                            tensor.name))
    onnx.save(proto, str(path))


# --- sizes -----------------------------------------------------------------------------------------------


def _tensors(proto: Any) -> Iterable[Any]:
    """Every stored tensor: initializers and the values of Constant nodes."""
    yield from proto.graph.initializer
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    yield attr.t


def tensor_bytes(array: np.ndarray) -> tuple[int, int]:
    """(dense bytes, compressed bytes) of one tensor under the rule of ``model_sizes``."""
    dense = int(array.size * array.dtype.itemsize)
    if array.ndim < 2:
        return dense, dense
    bitmask = int(np.count_nonzero(array)) * array.dtype.itemsize + math.ceil(array.size / 8)
    return dense, min(dense, bitmask)


def model_sizes(path: str | Path) -> dict[str, int]:
    """``model_bytes``: the ONNX file's size. ``model_bytes_compressed``: the same file with every stored tensor
    of rank >= 2 (the weights) in a bitmask encoding when that is smaller — its nonzero values at their own
    dtype plus one bit per element (rounded up to whole bytes) — and everything else (graph, biases, scales,
    zero points, shapes) as it is: ``model_bytes - sum(dense bytes) + sum(encoded bytes)``."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    proto = onnx.load(str(path))
    dense_total = encoded_total = 0
    for tensor in _tensors(proto):
        dense, encoded = tensor_bytes(numpy_helper.to_array(tensor))
        dense_total += dense
        encoded_total += encoded
    size = path.stat().st_size
    return {"model_bytes": size, "model_bytes_compressed": size - dense_total + encoded_total,
            "tensor_bytes": dense_total}


def weight_zeros(path: str | Path) -> dict[str, int]:
    """Zeros and elements of the rank >= 2 tensors of a graph, by name (to check that zeros survive)."""
    import onnx
    from onnx import numpy_helper

    out = {}
    for tensor in onnx.load(str(path)).graph.initializer:
        if len(tensor.dims) >= 2:
            arr = numpy_helper.to_array(tensor)
            out[tensor.name] = int(arr.size - np.count_nonzero(arr))
    return out


# --- sessions on a given graph ---------------------------------------------------------------------------


def open_session(runtime: str, export: ExportResult, *, threads: int, batch_size: int,
                 graph_optimization: str = "all", diagnose_fallbacks: bool = True) -> Any:
    """An ONNX Runtime or DeepSparse session on ``export.path`` (e.g. a QDQ graph), with the runtime plugins'
    session classes and settings."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        from sparse_runtime.onnx_runtime import OrtSession, session_options

        opts = session_options(threads, graph_optimization)
        try:
            session = ort.InferenceSession(str(export.path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CellError(f"onnxruntime cannot load {export.path.name}: {exc}") from exc
        info = {"runtime": runtime, "device": "cpu", "threads": {"intra_op": threads, "inter_op": 1},
                "graph_optimization": graph_optimization, **export.info()}
        return OrtSession(session, export, info)
    if runtime == "deepsparse":
        os.environ["NM_DISABLE_ANALYTICS"] = "1"
        from deepsparse import compile_model

        from sparse_runtime.deepsparse_rt import DeepSparseSession
        from sparse_runtime.deepsparse_rt import diagnose_fallbacks as diagnose

        try:
            engine = compile_model(str(export.path), batch_size=batch_size, num_cores=threads)
        except Exception as exc:
            raise CellError(f"deepsparse could not compile {export.path.name}: {exc}") from exc
        fraction = float(engine.fraction_of_supported_ops)
        info = {"runtime": runtime, "device": "cpu", "threads": {"num_cores": engine.num_cores},
                "batch_size": batch_size, "fraction_of_supported_ops": fraction,
                "cpu_avx_type": getattr(engine, "cpu_avx_type", None),
                "cpu_vnni": getattr(engine, "cpu_vnni", None), **export.info()}
        if fraction < 1.0 and diagnose_fallbacks:
            info["fallbacks"] = diagnose(export.path, batch_size)
            if info["fallbacks"].get("crashed"):
                raise CellError(f"deepsparse: {info['fallbacks']['crash']} on {export.path.name} "
                                f"(fraction of supported ops {fraction:.4f})")
        return DeepSparseSession(engine, export, info)
    raise RuntimeUnavailable(f"runtime {runtime!r} cannot run an INT8 QDQ ONNX graph; quantized cells run on "
                             f"{' and '.join(ONNX_RUNTIMES)}")


# --- peak memory -----------------------------------------------------------------------------------------

_MEMORY_PROBE = r"""
import json, sys
import numpy as np

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None

runtime, path, npz, threads, batch_size, calls = sys.argv[1:7]
if runtime == "onnxruntime":
    import onnxruntime as ort
else:
    from deepsparse import compile_model
arrays = np.load(npz)
inputs = [np.ascontiguousarray(arrays[k]) for k in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))]
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) to the current resident size
    reset = True
except OSError:
    reset = False
baseline = status("VmRSS")
if runtime == "onnxruntime":
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    run = lambda: session.run(None, dict(zip(names, inputs)))
else:
    engine = compile_model(path, batch_size=int(batch_size), num_cores=int(threads))
    run = lambda: engine.run(inputs, val_inp=False)
loaded = status("VmRSS")
for _ in range(int(calls)):
    run()
print("TSBENCH_MEMORY " + json.dumps({"baseline_kb": baseline, "loaded_kb": loaded, "peak_kb": status("VmHWM"),
                                      "peak_reset": reset}), flush=True)
"""


def peak_rss(runtime: str, export: ExportResult, inputs: Sequence[np.ndarray], *, threads: int,
             batch_size: int, calls: int = 3, timeout: float = 900.0) -> dict[str, Any]:
    """Peak resident memory of loading ``export.path`` on ``runtime`` and running it ``calls`` times, measured
    in a fresh child process: VmHWM at the end minus VmRSS just before the session is created (after the
    runtime is imported and the inputs are loaded; the peak is reset there through ``/proc/self/clear_refs``
    where the kernel allows it). ``peak_rss_mb`` is that difference in MiB."""
    if runtime not in ONNX_RUNTIMES:
        raise ValueError(f"peak memory is measured for {ONNX_RUNTIMES}, not {runtime!r}")
    npz = export.path.with_suffix(".memory.npz")
    np.savez(npz, **{f"input_{i}": a for i, a in enumerate(export.select(list(inputs)))})
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
    args = [sys.executable, "-c", _MEMORY_PROBE, runtime, str(export.path), str(npz), str(threads),
            str(batch_size), str(calls)]
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f}s"}
    finally:
        npz.unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("TSBENCH_MEMORY ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"error": f"memory probe failed: {tail[0]}"}
    probe = json.loads(line.removeprefix("TSBENCH_MEMORY "))
    probe["peak_rss_mb"] = (probe["peak_kb"] - probe["baseline_kb"]) / 1024.0
    probe["process_peak_mb"] = probe["peak_kb"] / 1024.0
    return probe
