"""INT8 graph formats: MatMulInteger (the default) and QDQ, on ONNX Runtime and DeepSparse; the weight encodings
(int8, uint8, int8-7bit) each runtime chooses from the detected CPU, checked against exact integer arithmetic (the
ONNX reference evaluator)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from runtime_toys import input_batches, make_inputs, open_graph, prune_linears

from sparse_runtime.export import export_onnx
from sparse_runtime.int8.graph import DEFAULT_FORMAT
from sparse_runtime.int8.qparams import activation_qparams
from sparse_runtime.quantize import WEIGHT_ENCODINGS, LinearQParams, WindowCalibrationReader, quantize_onnx
from sparse_runtime.sizes import model_sizes, weight_zeros
from tsbench_core.cpu import cpu_facts
from tsbench_core.protocols import availability_of, int8_plan_of
from tsbench_core.verify import verify_session_relative


def _runtimes(registry) -> list[str]:
    return ["onnxruntime"] + (["deepsparse"] if availability_of(registry.get("runtime", "deepsparse")).available
                              else [])


class Flat(torch.nn.Module):
    """Linear layers on 2-D inputs (exported as Gemm with transB=1) around a 3-D one (MatMul)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(3, 12)
        self.flat = torch.nn.Linear(16 * 12, 24)
        self.out = torch.nn.Linear(24, 24)

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
        h = torch.relu(self.inner(x_enc)).flatten(1)
        return self.out(torch.relu(self.flat(h))).view(-1, 8, 3)


@pytest.fixture
def pruned(tiny):
    return prune_linears(tiny, 0.7)


def test_default_format_is_matmulinteger_with_int8_weights_whose_zeros_stay_zero(pruned, tmp_path):
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    result = quantize_onnx(export, tmp_path / "int8.onnx", WindowCalibrationReader(input_batches(range(4)), export))
    assert DEFAULT_FORMAT == "matmulinteger" and result.info()["format"] == "matmulinteger"
    fp32 = onnx.load(str(export.path))
    proto = onnx.load(str(result.path))
    ops = [n.op_type for n in proto.graph.node]
    assert "DequantizeLinear" not in ops
    # every weight product, also those whose weight reaches them through an Identity (a weight used twice)
    weight_products = [n for n in fp32.graph.node if n.op_type == "MatMul" and not n.input[1].startswith("/")]
    assert ops.count("MatMulInteger") == result.quantized_nodes == len(weight_products) == 7
    assert ops.count("MatMul") == 2  # the two attention products (activation x activation) stay float
    # every QuantizeLinear feeds MatMulIntegers only; each MatMulInteger is followed by the Linear's bias added
    # in int32, then Cast and the rescaling Mul (SparseML's form), and the fp32 bias Add is gone
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    int32 = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.INT32}
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear":
            assert {n.op_type for n in consumers[node.output[0]]} == {"MatMulInteger"}
        if node.op_type == "MatMulInteger":
            (add,) = consumers[node.output[0]]
            assert add.op_type == "Add" and add.input[1] in int32
            assert [n.op_type for n in consumers[add.output[0]]] == ["Cast"]
            (cast,) = consumers[add.output[0]]
            assert [n.op_type for n in consumers[cast.output[0]]] == ["Mul"]
    assert ops.count("Add") == [n.op_type for n in fp32.graph.node].count("Add")  # bias Adds replaced one for one
    assert result.info()["int32_biases"] == 7
    # zeros: the int8 weight of each product is zero exactly where the fp32 weight is
    f32 = {t.name: numpy_helper.to_array(t) for t in fp32.graph.initializer}
    i8 = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    identities = {n.output[0]: n.input[0] for n in fp32.graph.node if n.op_type == "Identity"}
    for original, node in zip(weight_products, (n for n in proto.graph.node if n.op_type == "MatMulInteger"),
                              strict=True):
        weight = f32[identities.get(original.input[1], original.input[1])]
        quantized = i8[node.input[1]]
        assert quantized.dtype == np.int8 and quantized.shape == weight.shape
        assert i8[node.input[3]] == 0  # weight zero point
        assert np.all(quantized[weight == 0] == 0)  # zero point 0: a pruned zero stays exactly 0
        assert np.count_nonzero(weight == 0) >= 0.6 * weight.size
    assert all(t.HasField("raw_data") for t in proto.graph.initializer if t.data_type == TensorProto.INT8)
    # the replaced fp32 weights (and the Identity nodes that passed them on) are gone
    assert not any(t.data_type == TensorProto.FLOAT and len(t.dims) == 2 for t in proto.graph.initializer)
    assert "Identity" not in ops


def test_a_bias_too_large_for_the_accumulator_is_added_in_float(registry, tmp_path):
    torch.manual_seed(5)
    model = prune_linears(Flat().eval(), 0.5)
    with torch.no_grad():
        model.out.bias[0] = 1e9  # / (sx * sw) is far beyond 2**30
    export = export_onnx(model, make_inputs(0), tmp_path / "fp32.onnx")
    result = quantize_onnx(export, tmp_path / "q.onnx", WindowCalibrationReader(input_batches(range(3)), export))
    assert result.info()["int32_biases"] == 2  # inner and flat; out's bias stays float
    proto = onnx.load(str(result.path))
    floats = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT}
    assert any(a.shape == (24,) and a[0] == np.float32(1e9) for a in floats.values())
    session = open_graph("onnxruntime", result.export, threads=1, batch_size=4)
    try:
        out = session.run(list(input_batches((9,))[0]))
    finally:
        session.close()
    with torch.no_grad():
        ref = model(*make_inputs(9)).numpy()
    flat_out, flat_ref = out.reshape(4, -1), ref.reshape(4, -1)
    np.testing.assert_allclose(flat_out[:, 0], flat_ref[:, 0], rtol=1e-6)  # the huge bias, added in float
    np.testing.assert_allclose(flat_out[:, 1:], flat_ref[:, 1:], atol=0.05)  # the rest: INT8 noise only


def _weights_for(registry, runtime: str, quant_format: str) -> str:
    """The weight encoding ``runtime`` chooses for this process's CPU."""
    return int8_plan_of(registry.get("runtime", runtime), cpu_facts(), quant_format).weights


def _exact(path, export, batch) -> np.ndarray:
    """The graph's output in exact integer arithmetic (the ONNX reference evaluator, numpy)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(onnx.load(str(path))).run(None, dict(zip(export.input_names,
                                                                       export.select(list(batch)), strict=True)))[0]


@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_each_format_passes_the_gate_on_both_runtimes(registry, pruned, tmp_path, quant_format):
    """Each runtime gets the weight encoding it chooses for this CPU; both compute the same integer arithmetic
    (uint8 weights are the int8 ones plus 128), so their outputs agree whatever each chose."""
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    gate = input_batches((20, 21))
    outputs = {}
    for runtime in _runtimes(registry):
        weights = _weights_for(registry, runtime, quant_format)
        result = quantize_onnx(export, tmp_path / f"{quant_format}.{runtime}.onnx",
                               WindowCalibrationReader(input_batches(range(10, 16)), export),
                               quant_format=quant_format, weights=weights)
        assert result.info()["weights_encoding"] == weights
        session = open_graph(runtime, result.export, threads=1, batch_size=4)
        try:
            _, rel = verify_session_relative(session, pruned, gate, tolerance=0.1)
            assert 0 < rel < 0.1
            outputs[runtime] = session.run(list(gate[0]))
            if runtime == "deepsparse":
                assert session.info["fraction_of_supported_ops"] == 1.0  # the whole INT8 graph in the engine
        finally:
            session.close()
    if len(outputs) == 2:  # the two runtimes compute the same integer arithmetic
        np.testing.assert_allclose(outputs["onnxruntime"], outputs["deepsparse"], atol=1e-4)


@pytest.mark.parametrize("weights", WEIGHT_ENCODINGS)
@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_onnxruntime_computes_each_weight_encoding_exactly(registry, pruned, tmp_path, quant_format, weights):
    """Forced, whatever this CPU would choose: ONNX Runtime's output is the exact integer arithmetic of the graph
    and passes the gate. ``int8`` (U8S8) is exact only with VNNI: without it ONNX Runtime uses VPMADDUBSW, which
    saturates (its documentation) — the reason the other two encodings exist."""
    facts = cpu_facts()
    if weights == "int8" and facts.x86_64 and not facts.vnni:
        pytest.skip(f"needs avx512_vnni, avx_vnni or amx_int8 (this CPU: {', '.join(facts.features) or 'none'}): "
                    f"ONNX Runtime's uint8 x int8 kernels saturate without them")
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    result = quantize_onnx(export, tmp_path / "q.onnx", WindowCalibrationReader(input_batches(range(10, 16)), export),
                           quant_format=quant_format, weights=weights)
    gate = input_batches((20, 21))
    session = open_graph("onnxruntime", result.export, threads=1, batch_size=4)
    try:
        _, rel = verify_session_relative(session, pruned, gate, tolerance=0.1)
        assert 0 < rel < 0.1
        for batch in gate:
            np.testing.assert_allclose(session.run(list(batch)), _exact(result.path, export, batch), atol=1e-5)
    finally:
        session.close()


@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_uint8_weights_are_the_int8_integers_shifted_by_128(pruned, tmp_path, quant_format):
    """The U8U8 remedy changes no number: stored weight - zero point equals the int8 weight, pruned zeros are
    stored as the zero point, the exact outputs are identical, and so are the bytes the compressed size saves."""
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    graphs = {w: quantize_onnx(export, tmp_path / f"{w}.onnx",
                               WindowCalibrationReader(input_batches(range(10, 16)), export),
                               quant_format=quant_format, weights=w) for w in ("int8", "uint8")}
    weights = {}
    for name, result in graphs.items():
        proto = onnx.load(str(result.path))
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        slots = (1, 3) if quant_format == "matmulinteger" else (0, 2)
        op = "MatMulInteger" if quant_format == "matmulinteger" else "DequantizeLinear"
        weights[name] = [(inits[n.input[slots[0]]], inits[n.input[slots[1]]]) for n in proto.graph.node
                         if n.op_type == op and n.input[slots[0]] in inits and inits[n.input[slots[0]]].ndim == 2]
        assert weight_zeros(result.path) and all(v > 0 for v in weight_zeros(result.path).values())
    assert len(weights["int8"]) == len(weights["uint8"]) >= 5  # (QDQ: a weight used twice is dequantized once)
    for (q8, zp8), (u8, zpu) in zip(weights["int8"], weights["uint8"], strict=True):
        assert q8.dtype == np.int8 and u8.dtype == np.uint8 and int(zp8) == 0 and int(zpu) == 128
        np.testing.assert_array_equal(u8.astype(np.int16) - 128, q8.astype(np.int16))
    for batch in input_batches((20,)):
        np.testing.assert_array_equal(_exact(graphs["uint8"].path, export, batch),
                                      _exact(graphs["int8"].path, export, batch))
    sizes = {w: model_sizes(r.path) for w, r in graphs.items()}
    saved = {w: size["model_bytes"] - size["model_bytes_compressed"] for w, size in sizes.items()}
    assert saved["uint8"] == saved["int8"] > 0  # the same zeros, found through the zero point


def test_seven_bit_weights_stay_within_63_and_refuse_learned_parameters(pruned, tmp_path):
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    reader = WindowCalibrationReader(input_batches(range(3)), export)
    result = quantize_onnx(export, tmp_path / "q.onnx", reader, weights="int8-7bit")
    proto = onnx.load(str(result.path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    stored = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "MatMulInteger"]
    assert len(stored) == 7 and all(np.abs(w.astype(np.int16)).max() == 63 for w in stored)
    learned = [LinearQParams("mix", pruned.mix.weight.detach().numpy().T.copy(), weight_scale=0.01, act_scale=0.05,
                             act_zero_point=7)]
    with pytest.raises(ValueError, match="8-bit"):
        quantize_onnx(export, tmp_path / "x.onnx", reader, qparams=learned, weights="int8-7bit")
    with pytest.raises(ValueError, match="unknown INT8 weight encoding"):
        quantize_onnx(export, tmp_path / "x.onnx", reader, weights="int4")


def test_gemm_with_bias_per_channel_and_symmetric_activations(registry, tmp_path):
    torch.manual_seed(3)
    model = prune_linears(Flat().eval(), 0.8)
    export = export_onnx(model, make_inputs(0), tmp_path / "fp32.onnx")
    assert export.op_counts.get("Gemm") == 2
    gate = input_batches((30, 31))
    reader = WindowCalibrationReader(input_batches(range(6)), export)
    for per_channel, symmetric in ((False, False), (True, False), (False, True)):
        result = quantize_onnx(export, tmp_path / f"q{per_channel}{symmetric}.onnx", reader, per_channel=per_channel,
                               symmetric_activations=symmetric)
        proto = onnx.load(str(result.path))
        ops = [n.op_type for n in proto.graph.node]
        assert "Gemm" not in ops and ops.count("MatMulInteger") == 3
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        quantize_nodes = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
        if symmetric:
            assert all(inits[n.input[2]] == 128 for n in quantize_nodes)  # uint8, zero point in the middle
        casts = {n.output[0] for n in proto.graph.node if n.op_type == "Cast"}
        rescales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "Mul" and n.input[0] in casts]
        assert len(rescales) == 3 and all(r.ndim == (1 if per_channel else 0) for r in rescales)  # per column
        for runtime in _runtimes(registry):
            weights = _weights_for(registry, runtime, "matmulinteger")
            chosen = result if weights == "int8" else quantize_onnx(
                export, tmp_path / f"q{per_channel}{symmetric}{weights}.onnx", reader, per_channel=per_channel,
                symmetric_activations=symmetric, weights=weights)
            session = open_graph(runtime, chosen.export, threads=1, batch_size=4)
            try:
                _, rel = verify_session_relative(session, model, gate, tolerance=0.1)
                assert rel < 0.1
                if runtime == "deepsparse":
                    assert session.info["fraction_of_supported_ops"] == 1.0
            finally:
                session.close()


def test_learned_parameters_are_written_as_given(pruned, tmp_path):
    """QAT's scales replace calibrated ones for every product whose weight they match (also as a block of
    columns); products they do not match are calibrated."""
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    mix = pruned.mix.weight.detach().numpy().T
    learned = [LinearQParams("mix", mix.copy(), weight_scale=0.01, act_scale=0.05, act_zero_point=7)]
    result = quantize_onnx(export, tmp_path / "q.onnx", WindowCalibrationReader(input_batches(range(3)), export),
                           qparams=learned)
    assert result.info()["learned_qparams_nodes"] == 1 and result.info()["calibrated_nodes"] == 6
    proto = onnx.load(str(result.path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    node = next(n for n in proto.graph.node if n.op_type == "MatMulInteger" and n.name == "/mix/MatMul")
    np.testing.assert_array_equal(inits[node.input[1]], np.clip(np.round(mix / 0.01), -128, 127).astype(np.int8))
    assert inits[node.input[2]] == 7
    quantize = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == node.input[0])
    assert inits[quantize.input[1]] == np.float32(0.05)
    with pytest.raises(ValueError, match="matmulinteger"):
        quantize_onnx(export, tmp_path / "x.onnx", WindowCalibrationReader(input_batches(range(2)), export),
                      quant_format="qdq", qparams=learned)
    with pytest.raises(ValueError, match="unknown INT8 format"):
        quantize_onnx(export, tmp_path / "x.onnx", WindowCalibrationReader(input_batches(range(2)), export),
                      quant_format="qoperator")


def test_activation_parameters_cover_the_range_and_zero():
    scale, zero = activation_qparams(-1.0, 3.0, symmetric=False)
    assert scale == pytest.approx(4.0 / 255) and zero == 64  # round(1 / (4/255))
    assert activation_qparams(0.5, 2.0, symmetric=False) == (pytest.approx(2.0 / 255), 0)  # widened to 0
    assert activation_qparams(-2.0, 1.0, symmetric=True) == (pytest.approx(2.0 / 127), 128)
    assert activation_qparams(0.0, 0.0, symmetric=False) == (1.0, 0)  # a constant-zero input


class FourD(torch.nn.Module):
    """A Linear on a 4-D tensor (as Crossformer's segment merge), between two 3-D ones."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(3, 16)
        self.merge = torch.nn.Linear(16, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
        h = torch.relu(self.inner(x_enc))  # [B, 16, 16]
        h = torch.relu(self.merge(h.view(-1, 4, 4, 16)))  # [B, 4, 4, 16]: a 4-D product
        return self.out(h.reshape(-1, 16, 16))[:, :8]


def test_a_four_d_product_is_viewed_as_three_d_and_passes_the_gate(registry, tmp_path):
    """DeepSparse's integer kernels reject a 4-D input ("requires 2D input or 3D stacked input"): the writer
    views it as 3-D around MatMulInteger, and the whole graph then runs in the engine."""
    torch.manual_seed(3)
    model = prune_linears(FourD().eval(), 0.5)
    export = export_onnx(model, make_inputs(0), tmp_path / "fp32.onnx")
    result = quantize_onnx(export, tmp_path / "q.onnx", WindowCalibrationReader(input_batches(range(4)), export))
    proto = onnx.load(str(result.path))
    inferred = onnx.shape_inference.infer_shapes(proto)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.graph.value_info, *inferred.graph.input)}
    integer = [n for n in proto.graph.node if n.op_type == "MatMulInteger"]
    assert len(integer) == 3 and all(ranks[n.input[0]] <= 3 for n in integer)
    assert sum(n.op_type == "Reshape" for n in proto.graph.node) >= 2 + sum(
        n.op_type == "Reshape" for n in onnx.load(str(export.path)).graph.node)
    gate = input_batches((30, 31))
    for runtime in _runtimes(registry):
        weights = _weights_for(registry, runtime, "matmulinteger")
        chosen = result if weights == "int8" else quantize_onnx(
            export, tmp_path / f"q.{weights}.onnx", WindowCalibrationReader(input_batches(range(4)), export),
            weights=weights)
        session = open_graph(runtime, chosen.export, threads=1, batch_size=4)
        try:
            _, rel = verify_session_relative(session, model, gate, tolerance=0.1)
            assert 0 < rel < 0.1
            if runtime == "deepsparse":
                assert session.info["fraction_of_supported_ops"] == 1.0
        finally:
            session.close()


def test_a_deepsparse_abort_in_the_subprocess_probe_fails_the_int8_session(registry, pruned, tmp_path,
                                                                           monkeypatch):
    """The INT8 session is compiled in a child process first; an engine abort there is a CellError quoting it
    and the engine is never compiled in this process."""
    available = availability_of(registry.get("runtime", "deepsparse"))
    if not available.available:
        pytest.skip(f"deepsparse unavailable here: {available.reason}")
    import deepsparse

    import sparse_runtime.deepsparse_rt as ds_module
    from tsbench_core.errors import CellError

    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    result = quantize_onnx(export, tmp_path / "q.onnx", WindowCalibrationReader(input_batches(range(3)), export))
    seen = {}

    def aborting(path, batch_size, inputs=None, **kwargs):
        seen["inputs"] = [a.shape for a in inputs]
        return {"crashed": True, "crash": "engine aborted while compiling (exit code -6): Assertion at x.hpp:43"}

    monkeypatch.setattr(ds_module, "diagnose_fallbacks", aborting)
    monkeypatch.setattr(deepsparse, "compile_model", lambda *a, **k: pytest.fail("compiled in-process"))
    with pytest.raises(CellError, match="Assertion at x.hpp:43"):
        open_graph("deepsparse", result.export, threads=1, batch_size=4)
    assert seen["inputs"] == [tuple(s) for s in result.export.input_shapes]


def test_learned_parameters_in_uint8_weights_compute_the_same_integers(pruned, tmp_path):
    """QAT's learned scales written with the U8U8 remedy: the stored weights are the learned int8 integers + 128
    and the graph computes exactly what the int8 one does (the reference evaluator), on any CPU."""
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    mix = pruned.mix.weight.detach().numpy().T
    learned = [LinearQParams("mix", mix.copy(), weight_scale=0.01, act_scale=0.05, act_zero_point=7)]
    graphs = {w: quantize_onnx(export, tmp_path / f"{w}.onnx",
                               WindowCalibrationReader(input_batches(range(3)), export), qparams=learned, weights=w)
              for w in ("int8", "uint8")}
    proto = onnx.load(str(graphs["uint8"].path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    node = next(n for n in proto.graph.node if n.op_type == "MatMulInteger" and n.name == "/mix/MatMul")
    expected = np.clip(np.round(mix / 0.01), -128, 127).astype(np.int16)
    np.testing.assert_array_equal(inits[node.input[1]].astype(np.int16) - 128, expected)
    assert inits[node.input[3]] == 128 and graphs["uint8"].info()["learned_qparams_nodes"] == 1
    for batch in input_batches((5, 6)):
        np.testing.assert_array_equal(_exact(graphs["uint8"].path, export, batch),
                                      _exact(graphs["int8"].path, export, batch))


@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_per_channel_uint8_weights_are_exact_on_onnxruntime(pruned, tmp_path, quant_format):
    """The remedy with one scale (and, in QDQ, one zero point) per output column: still exact, on any CPU."""
    export = export_onnx(pruned, make_inputs(0), tmp_path / "fp32.onnx")
    result = quantize_onnx(export, tmp_path / "q.onnx", WindowCalibrationReader(input_batches(range(4)), export),
                           quant_format=quant_format, weights="uint8", per_channel=True)
    proto = onnx.load(str(result.path))
    zero_points = [numpy_helper.to_array(t) for t in proto.graph.initializer
                   if t.data_type == TensorProto.UINT8 and t.name.endswith(("zero_point", "_zero_point"))]
    assert zero_points and any(z.ndim == 1 and np.all(z == 128) for z in zero_points) == (quant_format == "qdq")
    session = open_graph("onnxruntime", result.export, threads=1, batch_size=4)
    try:
        for batch in input_batches((20, 21)):
            np.testing.assert_allclose(session.run(list(batch)), _exact(result.path, export, batch), atol=1e-5)
    finally:
        session.close()
