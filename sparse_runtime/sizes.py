"""Model size on disk of an ONNX graph, dense and with its weights in a bitmask encoding, and its zeros."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from sparse_runtime.int8.graph import constant_values


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


def weight_zero_points(proto: Any) -> dict[str, int]:
    """Stored weight -> its constant scalar zero point (MatMulInteger's B, DequantizeLinear's x)."""
    from onnx import numpy_helper

    constants = constant_values(proto)
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
    zero_points = weight_zero_points(proto)
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
    zero_points = weight_zero_points(proto)
    out = {}
    for tensor in proto.graph.initializer:
        if len(tensor.dims) >= 2:
            arr = numpy_helper.to_array(tensor)
            out[tensor.name] = int(np.count_nonzero(arr == zero_points.get(tensor.name, 0)))
    return out
