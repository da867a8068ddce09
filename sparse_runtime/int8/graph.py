"""ONNX graph facts the INT8 writers share: op types, which nodes stay float (``keep_float``), constants, static shapes,
and storing tensors as raw bytes."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZED_OP_TYPES = ("MatMul", "Gemm")
QDQ_OP_TYPES = ("QuantizeLinear", "DequantizeLinear")
INT8_OP_TYPES = ("QuantizeLinear", "DequantizeLinear", "MatMulInteger")
FORMATS = ("matmulinteger", "qdq")
DEFAULT_FORMAT = "matmulinteger"


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


def constant_values(proto: Any) -> dict[str, Any]:
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


def weight_products(proto: Any, kept: dict[str, str]) -> list[Any]:
    """MatMul/Gemm nodes with a constant second input that are not kept float."""
    constants = constant_values(proto)
    return [n for n in proto.graph.node if n.op_type in QUANTIZED_OP_TYPES and n.name not in kept
            and len(n.input) > 1 and n.input[1] in constants]


def static_shapes(proto: Any) -> dict[str, list[int | None]]:
    """The inferred shape of every value of ``proto`` (None for a dimension that is not a fixed number)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    out: dict[str, list[int | None]] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            out[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return out


def store_raw(path: Path, *, shift_int8_weights: bool = False) -> None:
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
