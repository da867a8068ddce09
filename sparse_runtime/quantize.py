"""Static INT8 quantization of an exported (pruned) ONNX graph, and what it costs in bytes and memory.

Two graph formats (``quant_format``), both run by ONNX Runtime and DeepSparse:

* ``matmulinteger`` (default): each weight product ``x·W`` becomes QuantizeLinear(x) → MatMulInteger(int8 W) →
  Cast → Mul(sx·sw) (→ Add for a Gemm's bias), written here; the weight is stored as int8, so DeepSparse sees a
  constant quantized kernel and runs its INT8 kernels. This is the form SparseML's QAT export writes for Linear
  layers (SparseML stores uint8 weights with zero point 128; here int8 with zero point 0, which ONNX Runtime also
  runs fast). One QuantizeLinear per activation tensor, however many products read it;
* ``qdq``: ONNX Runtime's ``quantize_static`` (QuantizeLinear → DequantizeLinear pairs). DeepSparse 1.8 keeps it
  inside its engine but does not fold the weights' DequantizeLinear: it dequantizes the weight at run time and
  runs a generic dense GEMM, slower than fp32 (measured, docs/runtimes.md).

In both: weights int8 symmetric (zero point 0, so a pruned zero stays exactly 0), one scale per tensor unless
``per_channel`` (one per output column; in the QDQ format DeepSparse 1.8 then leaves the weights' DequantizeLinear
outside its engine); activations uint8, asymmetric (or symmetric, zero point 128), min/max calibrated on training
windows — SparseML 1.8's defaults (symmetric weights, asymmetric activations); only MatMul/Gemm with a constant
weight are quantized: products of two activations (attention scores) stay float, as do the nodes matched by
``keep_float`` patterns. Conv (the token embeddings) stays float: DeepSparse 1.8 rejects a quantized Conv of this
graph ("kernel is not constant") and then runs the whole graph outside its engine.

The MatMulInteger writer also takes learned parameters (``LinearQParams``, from QAT in ``sparse_runtime/qat.py``):
a product whose weight equals a learned layer's weight (or several side by side, as in the fused q/k/v product of
the deploy form) uses its scales, so the integer graph computes what QAT trained.

``keep_float`` patterns name modules (``fnmatch`` on the dotted module path the legacy exporter writes into node
names, ``/decoder/projection/MatMul`` → ``decoder.projection``; a pattern matching a module keeps all nodes inside
it), or op types as ``op:TYPE``.

Weight encodings (``weights``), for CPUs whose integer kernels differ. ONNX Runtime documents that on x86-64 with
AVX2 or AVX-512 but no VNNI it computes uint8 x int8 (U8S8) products with VPMADDUBSW, which adds two products in a
saturating 16-bit integer (255 * 127 * 2 > 32767), and that the remedies are 7-bit weights (``reduce_range``) or
uint8 weights (U8U8, no saturation); VNNI machines and ARM are not affected (ONNX Runtime docs, "Quantize ONNX
models": data type selection and FAQ). Which encoding a cell uses is the runtime's choice for the detected CPU
(``int8_plan`` of the runtime plugins), recorded in the quantize info:

* ``int8``: int8 symmetric, zero point 0 (U8S8) — the default;
* ``uint8``: the same integer weights plus 128, zero point 128 (U8U8): the integer products, and so the output,
  are exactly those of ``int8`` (learned QAT scales included); a pruned zero is stored as 128;
* ``int8-7bit``: int8 symmetric over [-63, 63] (ONNX Runtime's ``reduce_range``): one bit less precision; not for
  learned (8-bit) QAT parameters.

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
INT8_OP_TYPES = ("QuantizeLinear", "DequantizeLinear", "MatMulInteger")
ONNX_RUNTIMES = ("onnxruntime", "deepsparse")
FORMATS = ("matmulinteger", "qdq")
DEFAULT_FORMAT = "matmulinteger"
# how the weights are stored (activations are uint8 in every case), see "Weight encodings" above
WEIGHT_ENCODINGS = ("int8", "uint8", "int8-7bit")
DEFAULT_WEIGHTS = "int8"
INT8_LEVELS = {"int8": 127, "uint8": 127, "int8-7bit": 63}  # largest |q| of a symmetric weight


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
    for pattern in patterns:
        if (op_type == pattern[3:]) if pattern.startswith("op:") else module_keeps_float([pattern], path):
            return pattern
    return None


def module_keeps_float(patterns: Sequence[str], path: str) -> str | None:
    """The first module pattern matching the dotted module ``path`` or one of the modules containing it."""
    parts = path.split(".") if path else []
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        if not pattern.startswith("op:") and any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
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
            "int8_ops": {op: self.op_counts.get(op, 0) for op in INT8_OP_TYPES},
            "quantize_seconds": round(self.seconds, 3),
        }


def _constant_values(proto: Any) -> dict[str, Any]:
    """Tensor name -> TensorProto of every initializer, Constant node output and Identity of a constant (the
    legacy exporter passes a weight used twice through an Identity)."""
    values = {t.name: t for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    values[node.output[0]] = attr.t
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _weight_products(proto: Any, kept: dict[str, str]) -> list[Any]:
    """MatMul/Gemm nodes with a constant second input that are not kept float."""
    constants = _constant_values(proto)
    return [n for n in proto.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in kept
            and len(n.input) > 1 and n.input[1] in constants]


def quantize_onnx(export: ExportResult, out_path: Path, reader: WindowCalibrationReader, *,
                  keep_float: Sequence[str] = (), per_channel: bool = False,
                  symmetric_activations: bool = False, quant_format: str = DEFAULT_FORMAT,
                  qparams: Sequence[LinearQParams] | None = None, weights: str = DEFAULT_WEIGHTS,
                  weights_reason: str | None = None) -> QuantizeResult:
    """Static INT8 quantization of ``export`` (fp32 ONNX) into ``out_path`` (written atomically).

    ``quant_format`` is ``matmulinteger`` (the default: what DeepSparse runs fast) or ``qdq`` (ONNX Runtime's
    ``quantize_static``). ``qparams`` (MatMulInteger only) are quantization parameters learned elsewhere (QAT):
    a weight product whose weight they match uses them instead of calibrated ones. ``weights`` is the weight
    encoding (``WEIGHT_ENCODINGS``; see the module docstring), ``weights_reason`` why it was chosen (recorded).
    """
    import onnx

    if quant_format not in FORMATS:
        raise ValueError(f"unknown INT8 format {quant_format!r}; expected one of {FORMATS}")
    if weights not in WEIGHT_ENCODINGS:
        raise ValueError(f"unknown INT8 weight encoding {weights!r}; expected one of {WEIGHT_ENCODINGS}")
    if qparams and quant_format != "matmulinteger":
        raise ValueError("learned quantization parameters (QAT) are written in the matmulinteger format only")
    if qparams and weights == "int8-7bit":
        raise ValueError("learned quantization parameters (QAT) are 8-bit: write them with weights 'int8' or "
                         "'uint8', not 'int8-7bit'")
    proto = onnx.load(str(export.path))
    kept = float_nodes(proto, keep_float)
    if not _weight_products(proto, kept):
        raise CellError(f"INT8: nothing to quantize: every MatMul/Gemm with a constant weight is kept float by "
                        f"keep_float {list(keep_float)}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    start = time.perf_counter()
    reader.rewind()
    try:
        if quant_format == "qdq":
            settings = _write_qdq(export, tmp, reader, kept, per_channel=per_channel,
                                  symmetric_activations=symmetric_activations, weights=weights)
        else:
            settings = _write_matmulinteger(proto, tmp, reader, kept, per_channel=per_channel,
                                            symmetric_activations=symmetric_activations, qparams=qparams or (),
                                            weights=weights)
        settings["weights_encoding"] = weights
        if weights_reason:
            settings["weights_reason"] = weights_reason
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
    if quant_format == "qdq":
        stored = {t.name for t in quantized.graph.initializer}
        dequantized_inputs = {n.output[0] for n in quantized.graph.node
                              if n.op_type == "DequantizeLinear" and n.input[0] in stored}  # weights only
        quantized_nodes = sum(1 for n in quantized.graph.node if n.op_type in QUANTIZED_OP_TYPES
                              and len(n.input) > 1 and n.input[1] in dequantized_inputs)
    else:
        quantized_nodes = ops.get("MatMulInteger", 0)
    return QuantizeResult(export=replace(export, path=out_path), fp32_path=export.path, kept_float=kept,
                          quantized_nodes=quantized_nodes, calibration_batches=reader.yielded,
                          seconds=seconds, op_counts=dict(ops), settings=settings)


def _write_qdq(export: ExportResult, tmp: Path, reader: WindowCalibrationReader, kept: dict[str, str], *,
               per_channel: bool, symmetric_activations: bool, weights: str = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """ONNX Runtime's ``quantize_static`` in the QDQ format; returns the settings used."""
    q = _quantization_module()
    q.CalibrationDataReader.register(WindowCalibrationReader)
    q.quantize_static(
        str(export.path), str(tmp), reader, quant_format=q.QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=per_channel, reduce_range=weights == "int8-7bit",
        activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
        nodes_to_exclude=sorted(kept), calibrate_method=q.CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                       "MatMulConstBOnly": True},
    )
    _store_raw(tmp, shift_int8_weights=weights == "uint8")
    described = {"int8": "int8 symmetric", "uint8": "uint8 symmetric (int8 + 128, zero point 128)",
                 "int8-7bit": "int8 symmetric, 7-bit range (reduce_range)"}[weights]
    return {"method": "static-int8", "format": "qdq", "weights": described,
            "activations": f"uint8 {'symmetric' if symmetric_activations else 'asymmetric'}",
            "per_channel": per_channel, "calibration": "minmax", "op_types": list(QUANTIZED_OP_TYPES),
            "matmul_const_b_only": True}


# --- the MatMulInteger form ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearQParams:
    """Quantization parameters learned for one Linear layer (by QAT), in the ONNX layout.

    ``weight`` is the float weight as a MatMul stores it (``[in, out]``, the transpose of torch's); the writer
    finds it (or it as a block of columns, as in a fused q/k/v product) among the graph's weights.
    ``act_zero_point`` is in the uint8 domain."""

    name: str
    weight: np.ndarray
    weight_scale: float | np.ndarray  # one, or one per output column
    act_scale: float
    act_zero_point: int


def activation_qparams(low: float, high: float, symmetric: bool) -> tuple[float, int]:
    """(scale, uint8 zero point) covering ``[low, high]`` (widened to include 0)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        bound = max(-low, high)
        return (bound / 127.0 if bound > 0 else 1.0), 128
    scale = (high - low) / 255.0 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def weight_scale(weight: np.ndarray, per_channel: bool, levels: int = 127) -> np.ndarray:
    """Symmetric scale(s) of a ``[in, out]`` weight over ``[-levels, levels]``: one, or one per output column."""
    bound = np.abs(weight).max(axis=0) if per_channel else np.abs(weight).max()
    return np.where(bound > 0, bound / float(levels), 1.0).astype(np.float64)


def quantize_weight(weight: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """``round(w / scale)`` as int8 (zero point 0: a zero weight stays exactly 0)."""
    return np.clip(np.round(weight / scale), -128, 127).astype(np.int8)


def encode_weight(q: np.ndarray, weights: str) -> tuple[np.ndarray, np.ndarray]:
    """(stored weight, zero point) of int8 weights ``q`` in the encoding ``weights``: for ``uint8`` the same
    integers plus 128 with zero point 128, so ``stored - zero point == q`` exactly."""
    if weights == "uint8":
        return (q.astype(np.int16) + 128).astype(np.uint8), np.array(128, dtype=np.uint8)
    return q, np.array(0, dtype=np.int8)


def activation_ranges(proto: Any, names: Sequence[str], reader: WindowCalibrationReader) -> dict[str, tuple[float,
                                                                                                          float]]:
    """(min, max) of each named tensor over the calibration batches, run through ONNX Runtime in fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    graph_inputs = {i.name for i in probe.graph.input}
    outputs = {o.name for o in probe.graph.output}
    fetch = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    for name in fetch:
        if name not in outputs:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    low = dict.fromkeys(names, math.inf)
    high = dict.fromkeys(names, -math.inf)
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        values = dict(zip(fetch, session.run(fetch, feed), strict=True)) if fetch else {}
        for name in low:
            value = feed[name] if name in graph_inputs else values[name]
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    if reader.yielded == 0:
        raise CellError("INT8 calibration got no batches")
    return {name: (low[name], high[name]) for name in names}


def _match_qparams(weight: np.ndarray, learned: Sequence[LinearQParams]) -> list[LinearQParams] | None:
    """The learned layers whose weights, side by side, are exactly ``weight`` (``[in, out]``), or None."""
    blocks: list[LinearQParams] = []
    column = 0
    while column < weight.shape[1]:
        for item in learned:
            width = item.weight.shape[1]
            if (item.weight.shape[0] == weight.shape[0] and column + width <= weight.shape[1]
                    and np.array_equal(item.weight, weight[:, column:column + width])):
                blocks.append(item)
                column += width
                break
        else:
            return None
    return blocks


INT32_BIAS_LIMIT = 2**30  # a bias folded into the int32 accumulator must leave it room


def _bias_add(node: Any, consumers: dict[str, list[Any]], constants: dict[str, Any],
              graph_outputs: set[str]) -> tuple[Any, np.ndarray] | None:
    """The Add of a constant bias that alone consumes a MatMul's output (a Linear layer's bias), if any."""
    from onnx import numpy_helper

    out = node.output[0]
    users = consumers.get(out, [])
    if out in graph_outputs or len(users) != 1 or users[0].op_type != "Add":
        return None
    add = users[0]
    other = add.input[1] if add.input[0] == out else add.input[0]
    if other not in constants:
        return None
    bias = numpy_helper.to_array(constants[other]).astype(np.float32)
    return (add, bias) if bias.ndim == 1 else None


def _write_matmulinteger(proto: Any, tmp: Path, reader: WindowCalibrationReader, kept: dict[str, str], *,
                         per_channel: bool, symmetric_activations: bool,
                         qparams: Sequence[LinearQParams], weights: str = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """Rewrite every weight product as QuantizeLinear → MatMulInteger → Add(int32 bias) → Cast → Mul.

    ``y = x·W + b`` becomes ``((q(x) − zx)·Wq + round(b / (sx·sw)))`` in int32, cast to float and multiplied by
    ``sx·sw`` — SparseML's form for a quantized Linear, which DeepSparse fuses into one kernel. The activation is
    quantized once per tensor however many products read it. Weights are int8 with zero point 0. A bias that is
    not a constant vector, or too large for the accumulator, is added in float after the rescale.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    constants = _constant_values(proto)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    shapes = _static_shapes(proto)
    plan, skipped = [], {}
    for node in _weight_products(proto, kept):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if len(constants[node.input[1]].dims) != 2:
            skipped[node.name] = "weight is not 2-D"
            continue
        if node.op_type == "Gemm" and attrs.get("transA", 0):
            skipped[node.name] = "Gemm with transA"
            continue
        input_shape = shapes.get(node.input[0])
        if input_shape is not None and len(input_shape) > 3 and None in input_shape:
            skipped[node.name] = "input of rank > 3 without a static shape"  # cannot be viewed as 3-D
            continue
        weight = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
        bias_add, bias, bias_name = None, None, None
        if node.op_type == "Gemm":
            weight = weight.T if attrs.get("transB", 0) else weight
            if len(node.input) > 2 and node.input[2]:
                bias_name = node.input[2]
                if bias_name in constants:
                    c = numpy_helper.to_array(constants[bias_name]).astype(np.float32) * float(attrs.get("beta", 1.0))
                    bias = c.reshape(-1) if c.size == weight.shape[1] and c.ndim <= 2 else None
        else:
            found = _bias_add(node, consumers, constants, graph_outputs)
            if found is not None:
                bias_add, bias = found
        plan.append((node, attrs, weight, bias_add, bias, bias_name, input_shape,
                     _match_qparams(weight, qparams) if qparams else None))
    if not plan:
        raise CellError(f"INT8: no weight product can be written as MatMulInteger ({skipped})")
    to_calibrate = [item[0].input[0] for item in plan if item[-1] is None]
    ranges = activation_ranges(proto, to_calibrate, reader) if to_calibrate else {}
    if not to_calibrate:
        reader.rewind()  # nothing calibrated: the learned parameters cover every product

    taken = {v for n in graph.node for v in (*n.input, *n.output)} | {t.name for t in graph.initializer}

    def fresh(base: str) -> str:
        name, index = base, 1
        while name in taken:
            name, index = f"{base}_{index}", index + 1
        taken.add(name)
        return name

    new_inits: list[Any] = []

    def constant(array: np.ndarray, base: str) -> str:
        name = fresh(base)
        new_inits.append(numpy_helper.from_array(array, name))
        return name

    quantized_inputs: dict[tuple[str, float, int], tuple[str, str]] = {}  # -> (quantized tensor, zero point)
    replaced: dict[int, list[Any]] = {}
    learned_nodes = int_biases = 0
    stacked_inputs: dict[str, str] = {}  # quantized tensor -> its 3-D view
    for node, attrs, weight, bias_add, bias, bias_name, input_shape, match in plan:
        base = node.name or node.output[0]
        if match is None:
            act_scale, act_zp = activation_qparams(*ranges[node.input[0]], symmetric_activations)
            w_scale = weight_scale(weight, per_channel, INT8_LEVELS[weights])
        else:
            learned_nodes += 1
            low = min(-m.act_zero_point * m.act_scale for m in match)
            high = max((255 - m.act_zero_point) * m.act_scale for m in match)
            act_scale, act_zp = ((match[0].act_scale, match[0].act_zero_point) if len(match) == 1
                                 else activation_qparams(low, high, symmetric=False))
            scales = np.concatenate([np.broadcast_to(np.asarray(m.weight_scale, dtype=np.float64), m.weight.shape[1:])
                                     for m in match])
            w_scale = scales if np.any(scales != scales[0]) else np.float64(scales[0])
        act_scale = float(np.float32(act_scale))
        nodes: list[Any] = []
        key = (node.input[0], act_scale, act_zp)
        if key not in quantized_inputs:
            scale_name = constant(np.array(act_scale, dtype=np.float32), f"{base}_x_scale")
            zp_name = constant(np.array(act_zp, dtype=np.uint8), f"{base}_x_zero_point")
            q_name = fresh(f"{base}_xq")
            nodes.append(helper.make_node("QuantizeLinear", [node.input[0], scale_name, zp_name], [q_name],
                                          name=fresh(f"{base}_quantize")))
            quantized_inputs[key] = (q_name, zp_name)
        q_input, zp_name = quantized_inputs[key]
        # DeepSparse's integer kernels take 2-D or 3-D ("stacked") inputs only: a 4-D input is viewed as 3-D
        # for the product and the result viewed back (exact: only leading dimensions are merged)
        unstack = input_shape is not None and len(input_shape) > 3
        if unstack:
            if q_input not in stacked_inputs:
                view = fresh(f"{q_input}_3d")
                nodes.append(helper.make_node("Reshape", [q_input, constant(np.array(
                    [-1, *input_shape[-2:]], dtype=np.int64), f"{base}_3d_shape")], [view], name=fresh(f"{base}_3d")))
                stacked_inputs[q_input] = view
            q_input = stacked_inputs[q_input]
        stored, w_zero_point = encode_weight(quantize_weight(weight, w_scale), weights)
        w_name = constant(stored, f"{base}_w_{weights.replace('-', '_')}")
        wzp_name = constant(w_zero_point, f"{base}_w_zero_point")
        rescale = act_scale * np.asarray(w_scale, dtype=np.float64) * float(attrs.get("alpha", 1.0))
        output = bias_add.output[0] if bias_add is not None else node.output[0]
        final_output = output
        if unstack:
            output = fresh(f"{base}_3d_output")
        int_bias = None
        if bias is not None:
            candidate = np.round(bias.astype(np.float64) / np.broadcast_to(rescale, bias.shape))
            if np.all(np.isfinite(candidate)) and np.abs(candidate).max(initial=0) < INT32_BIAS_LIMIT:
                int_bias = candidate.astype(np.int32)
        acc = fresh(f"{base}_int32")
        nodes.append(helper.make_node("MatMulInteger", [q_input, w_name, zp_name, wzp_name], [acc], name=node.name))
        if int_bias is not None:
            int_biases += 1
            biased = fresh(f"{base}_int32_bias")
            nodes.append(helper.make_node("Add", [acc, constant(int_bias, f"{base}_bias_int32")], [biased],
                                          name=fresh(f"{base}_bias")))
            acc = biased
        acc_f = fresh(f"{base}_int32_float")
        float_bias = int_bias is None and (bias_add is not None or bias_name is not None)
        product = fresh(f"{base}_product") if float_bias else output
        nodes += [helper.make_node("Cast", [acc], [acc_f], to=TensorProto.FLOAT, name=fresh(f"{base}_cast")),
                  helper.make_node("Mul", [acc_f, constant(rescale.astype(np.float32), f"{base}_rescale")],
                                   [product], name=fresh(f"{base}_rescale"))]
        if float_bias:
            if bias is not None:
                float_bias_name = constant(bias, f"{base}_bias")
            else:  # a Gemm's non-constant C
                float_bias_name = bias_name
                beta = float(attrs.get("beta", 1.0))
                if beta != 1.0:
                    scaled = fresh(f"{base}_bias_scaled")
                    nodes.append(helper.make_node("Mul", [bias_name, constant(np.array(beta, dtype=np.float32),
                                                                               f"{base}_beta")], [scaled],
                                                  name=fresh(f"{base}_beta_mul")))
                    float_bias_name = scaled
            nodes.append(helper.make_node("Add", [product, float_bias_name], [output], name=fresh(f"{base}_add")))
        if unstack:
            out_shape = np.array([*input_shape[:-1], weight.shape[1]], dtype=np.int64)
            nodes.append(helper.make_node("Reshape", [output, constant(out_shape, f"{base}_4d_shape")],
                                          [final_output], name=fresh(f"{base}_4d")))
        replaced[id(node)] = nodes
        if bias_add is not None:
            replaced[id(bias_add)] = []

    rewritten = []
    for node in graph.node:
        rewritten.extend(replaced.get(id(node), [node]))
    used = {name for node in rewritten for name in node.input} | graph_outputs
    while True:  # drop Constant/Identity nodes (and then initializers) that fed only the replaced products
        dead = {id(n) for n in rewritten if n.op_type in ("Constant", "Identity") and n.output[0] not in used}
        if not dead:
            break
        rewritten = [n for n in rewritten if id(n) not in dead]
        used = {name for node in rewritten for name in node.input} | graph_outputs
    initializers = [t for t in graph.initializer if t.name in used] + new_inits
    del graph.node[:]
    graph.node.extend(rewritten)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    described = {"int8": "int8 symmetric (zero point 0)", "uint8": "uint8 symmetric (int8 + 128, zero point 128)",
                 "int8-7bit": "int8 symmetric over [-63, 63] (reduce_range)"}[weights]
    return {"method": "static-int8", "format": "matmulinteger", "weights": described,
            "activations": f"uint8 {'symmetric' if symmetric_activations else 'asymmetric'}",
            "per_channel": per_channel, "calibration": "minmax", "op_types": list(QUANTIZED_OP_TYPES),
            "matmul_const_b_only": True, "int32_biases": int_biases, "learned_qparams_nodes": learned_nodes,
            "calibrated_nodes": len(plan) - learned_nodes, "skipped": dict(sorted(skipped.items()))}


def _static_shapes(proto: Any) -> dict[str, list[int | None]]:
    """The inferred shape of every value of ``proto`` (None for a dimension that is not a fixed number)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    out: dict[str, list[int | None]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            out[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return out


def _store_raw(path: Path, *, shift_int8_weights: bool = False) -> None:
    """Rewrite every initializer with its bytes in ``raw_data`` (the quantizer writes int8 tensors as varints in
    ``int32_data``, up to 10 bytes per element), so the file size reflects the tensors' real size.

    ``shift_int8_weights``: every int8 weight a DequantizeLinear reads (with its int8 zero point) is stored as
    uint8, ``q + 128`` with zero point ``zp + 128`` — the same dequantized values (the U8U8 encoding)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    shifted: set[str] = set()
    if shift_int8_weights:
        stored = {t.name: t for t in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "DequantizeLinear" and len(node.input) > 2 and node.input[0] in stored \
                    and node.input[2] in stored and stored[node.input[0]].data_type == onnx.TensorProto.INT8:
                shifted.update(node.input[0:3:2])
    for index, tensor in enumerate(proto.graph.initializer):
        array = numpy_helper.to_array(tensor)
        if tensor.name in shifted:
            array = (array.astype(np.int16) + 128).astype(np.uint8)
        elif tensor.HasField("raw_data"):
            continue
        proto.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, tensor.name))
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


def tensor_bytes(array: np.ndarray, zero: int = 0) -> tuple[int, int]:
    """(dense bytes, compressed bytes) of one tensor under the rule of ``model_sizes``; ``zero`` is the stored
    value that means 0 (a quantized weight's zero point)."""
    dense = int(array.size * array.dtype.itemsize)
    if array.ndim < 2:
        return dense, dense
    bitmask = int(np.count_nonzero(array != zero)) * array.dtype.itemsize + math.ceil(array.size / 8)
    return dense, min(dense, bitmask)


def _weight_zero_points(proto: Any) -> dict[str, int]:
    """Stored weight -> its constant scalar zero point (MatMulInteger's B, DequantizeLinear's x)."""
    from onnx import numpy_helper

    constants = _constant_values(proto)
    out: dict[str, int] = {}
    for node in proto.graph.node:
        slots = {"MatMulInteger": (1, 3), "DequantizeLinear": (0, 2)}.get(node.op_type)
        if slots is None or len(node.input) <= slots[1] or node.input[slots[1]] not in constants:
            continue
        zero_point = numpy_helper.to_array(constants[node.input[slots[1]]])
        if zero_point.size == 1 or np.all(zero_point == zero_point.reshape(-1)[0]):
            out[node.input[slots[0]]] = int(zero_point.reshape(-1)[0]) if zero_point.size else 0
    return out


def model_sizes(path: str | Path) -> dict[str, int]:
    """``model_bytes``: the ONNX file's size. ``model_bytes_compressed``: the same file with every stored tensor
    of rank >= 2 (the weights) in a bitmask encoding when that is smaller — its values other than zero (the zero
    point, for a quantized weight) at their own dtype plus one bit per element (rounded up to whole bytes) — and
    everything else (graph, biases, scales, zero points, shapes) as it is:
    ``model_bytes - sum(dense bytes) + sum(encoded bytes)``."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    proto = onnx.load(str(path))
    zero_points = _weight_zero_points(proto)
    dense_total = encoded_total = 0
    for tensor in _tensors(proto):
        dense, encoded = tensor_bytes(numpy_helper.to_array(tensor), zero_points.get(tensor.name, 0))
        dense_total += dense
        encoded_total += encoded
    size = path.stat().st_size
    return {"model_bytes": size, "model_bytes_compressed": size - dense_total + encoded_total,
            "tensor_bytes": dense_total}


def weight_zeros(path: str | Path) -> dict[str, int]:
    """Zeros (stored zero points, for a quantized weight) of the rank >= 2 tensors of a graph, by name (to check
    that zeros survive)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    zero_points = _weight_zero_points(proto)
    out = {}
    for tensor in proto.graph.initializer:
        if len(tensor.dims) >= 2:
            arr = numpy_helper.to_array(tensor)
            out[tensor.name] = int(np.count_nonzero(arr == zero_points.get(tensor.name, 0)))
    return out


# --- sessions on a given graph ---------------------------------------------------------------------------


def open_session(runtime: str, export: ExportResult, *, threads: int, batch_size: int,
                 graph_optimization: str = "all", diagnose_fallbacks: bool = True) -> Any:
    """An ONNX Runtime or DeepSparse session on ``export.path`` (e.g. an INT8 graph), with the runtime plugins'
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

        # compile and run once in a subprocess first: the engine can abort the process on a graph it takes
        # in part (e.g. an assertion in its element-wise fusion), which must fail this cell, not the run
        zeros = [np.zeros(shape, dtype=np.float32) for shape in export.input_shapes]
        probe = diagnose(export.path, batch_size, zeros, num_cores=threads)
        if probe.get("error") or probe.get("crashed"):
            raise CellError(f"deepsparse: {probe.get('error') or probe['crash']} on {export.path.name} "
                            f"(subprocess probe)")
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
            info["fallbacks"] = {k: v for k, v in probe.items() if k not in ("crashed", "crash")}
        return DeepSparseSession(engine, export, info)
    raise RuntimeUnavailable(f"runtime {runtime!r} cannot run an INT8 ONNX graph; quantized cells run on "
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
