"""The MatMulInteger form: QuantizeLinear → MatMulInteger → Add(int32 bias) → Cast → Mul, written here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sparse_runtime.int8.calibration import WindowCalibrationReader, activation_ranges
from sparse_runtime.int8.graph import QUANTIZED_OP_TYPES, constant_values, static_shapes, weight_products
from sparse_runtime.int8.qparams import (
    DEFAULT_WEIGHTS,
    INT8_LEVELS,
    LinearQParams,
    activation_qparams,
    encode_weight,
    quantize_weight,
    weight_scale,
)
from tsbench_core.errors import CellError


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


def write_matmulinteger(proto: Any, tmp: Path, reader: WindowCalibrationReader, kept: dict[str, str], *,
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
    constants = constant_values(proto)
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    shapes = static_shapes(proto)
    plan, skipped = [], {}
    for node in weight_products(proto, kept):
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
