"""INT8 quantization step: calibration, the QDQ and MatMulInteger graphs, zeros surviving, the relative gate, size
accounting."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from runtime_toys import input_batches, make_inputs, open_graph, prune_linears

from sparse_runtime.export import export_onnx
from sparse_runtime.int8.graph import keeps_float, module_path
from sparse_runtime.quantize import WindowCalibrationReader, quantize_onnx
from sparse_runtime.sizes import model_sizes
from tsbench_core.data import Windows
from tsbench_core.errors import CellError
from tsbench_core.steps.measure import static_batches
from tsbench_core.verify import verify_session_relative


@pytest.fixture
def pruned_tiny(tiny):
    return prune_linears(tiny, 0.7)


@pytest.fixture
def exported(pruned_tiny, tmp_path):
    return export_onnx(pruned_tiny, make_inputs(0), tmp_path / "fp32.onnx")


def test_calibration_reader_yields_the_requested_training_batches(registry, tmp_path):
    plugin = registry.records["dataset"]["synthetic"].plugin
    splits = plugin.load(plugin.params_model.model_validate({"length": 300, "n_vars": 2}), Windows(16, 8, 8), None)
    batches = static_batches(splits.train, 4, 3)
    export = export_onnx(TinyForecasterFor(splits.shape.enc_in), tuple(torch.from_numpy(a) for a in batches[0]),
                         tmp_path / "cal.onnx")
    reader = WindowCalibrationReader(batches, export)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    assert len(feeds) == 3 == reader.yielded == len(reader)
    # the feeds are training windows, in graph-input order, at the cell's batch size
    first = splits.train.batch(torch.arange(4))
    np.testing.assert_array_equal(feeds[0]["x_enc"], first.x_enc.numpy())
    assert all(f["x_enc"].shape[0] == 4 for f in feeds)
    assert set(feeds[0]) == set(export.input_names)
    reader.rewind()
    assert reader.get_next() is not None and reader.yielded == 1
    with pytest.raises(CellError, match="at least one batch"):
        WindowCalibrationReader([], export)


class TinyForecasterFor(torch.nn.Module):
    """A linear forecaster for ``channels`` channels (time marks ignored)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(16, 8)
        self.mix = torch.nn.Linear(channels, channels)

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
        return self.mix(self.proj(x_enc.transpose(1, 2)).transpose(1, 2))


def test_quantized_graph_has_qdq_nodes_and_pruned_zeros_stay_zero(exported, tmp_path):
    reader = WindowCalibrationReader(input_batches(range(10, 14)), exported)
    result = quantize_onnx(exported, tmp_path / "int8.onnx", reader, quant_format="qdq")
    proto = onnx.load(str(result.path))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    assert result.calibration_batches == 4
    fp32 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(exported.path)).graph.initializer}
    int8 = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    checked = 0
    for name, weight in fp32.items():
        quantized = int8.get(f"{name}_quantized")
        if weight.ndim < 2 or quantized is None:
            continue
        assert quantized.dtype == np.int8
        assert np.all(quantized[weight == 0] == 0), name  # symmetric: zero point 0, so a zero maps to 0
        assert np.count_nonzero(weight == 0) >= 0.6 * weight.size
        checked += 1
    assert checked >= 4  # value, mark, mix, time, out are Linear weights
    # every MatMul with an initializer weight now takes it through a DequantizeLinear of an int8 initializer
    # (ONNX Runtime's quantizer leaves a weight reached through an Identity, i.e. used twice, in float)
    fp32_graph = onnx.load(str(exported.path)).graph
    weight_matmuls = [n for n in fp32_graph.node if n.op_type == "MatMul" and n.input[1] in fp32]
    assert result.quantized_nodes == len(weight_matmuls)
    assert checked == len({n.input[1] for n in weight_matmuls})


@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_keep_float_patterns_map_module_names_to_nodes(exported, tmp_path, quant_format):
    assert module_path("/encoder/layers.0/attention/query_projection/MatMul_1") == \
        "encoder.layers.0.attention.query_projection"
    assert keeps_float(["*.projection"], "/decoder/projection/MatMul", "MatMul") == "*.projection"
    assert keeps_float(["*.projection"], "/encoder/attention/out_projection/MatMul", "MatMul") is None
    assert keeps_float(["head"], "/head/linear/MatMul", "MatMul") == "head"  # modules inside a match too
    assert keeps_float(["op:Gemm"], "/x/Gemm", "Gemm") == "op:Gemm"
    result = quantize_onnx(exported, tmp_path / "int8.onnx", WindowCalibrationReader(input_batches(range(3)), exported),
                           keep_float=["out", "mix"], quant_format=quant_format)
    assert set(result.kept_float.values()) == {"out", "mix"}
    proto = onnx.load(str(result.path))
    dequantized = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    floats = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT}
    kept = [node for node in proto.graph.node if node.name in result.kept_float]
    assert len(kept) == 2
    for node in kept:
        assert node.op_type == "MatMul"  # still the float product ...
        assert node.input[1] not in dequantized and node.input[1] in floats  # ... of the fp32 initializer
    with pytest.raises(CellError, match="nothing to quantize"):
        quantize_onnx(exported, tmp_path / "none.onnx", WindowCalibrationReader(input_batches(range(2)), exported),
                      keep_float=["*"], quant_format=quant_format)


@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_relative_gate_passes_for_a_calibrated_model_and_fails_for_a_broken_one(pruned_tiny, exported, tmp_path,
                                                                                quant_format):
    gate = input_batches((20, 21))
    reader = WindowCalibrationReader(input_batches(range(10, 16)), exported)
    good = quantize_onnx(exported, tmp_path / "good.onnx", reader, quant_format=quant_format)
    session = open_graph("onnxruntime", good.export, threads=1, batch_size=4)
    max_err, rel = verify_session_relative(session, pruned_tiny, gate, tolerance=0.1)
    assert 0 < rel < 0.1 and max_err > 0  # INT8 is never exact, but close
    # calibrated on inputs 1000x too small: every activation saturates, the output is wrong
    broken = quantize_onnx(exported, tmp_path / "broken.onnx",
                           WindowCalibrationReader(input_batches(range(10, 16), scale=1e-3), exported),
                           quant_format=quant_format)
    session = open_graph("onnxruntime", broken.export, threads=1, batch_size=4)
    with pytest.raises(CellError, match="relative error") as info:
        verify_session_relative(session, pruned_tiny, gate, tolerance=0.1)
    assert info.value.columns["rel_err_vs_torch"] > 0.1


def test_size_accounting_on_a_hand_built_graph(tmp_path):
    w = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    w[w <= 10] = 0  # 6 nonzeros of 16
    bias = np.ones(4, dtype=np.float32)
    q = np.zeros((3, 8), dtype=np.int8)
    q[0, :5] = 7  # 5 nonzeros of 24
    const = np.full((2, 2), 3.0, dtype=np.float32)  # dense: the bitmask would be larger
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(const, "c")),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "bias"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              initializer=[numpy_helper.from_array(a, n) for a, n in ((w, "w"), (bias, "bias"),
                                                                                      (q, "q"))])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(path))
    dense = 16 * 4 + 4 * 4 + 24 * 1 + 4 * 4
    encoded = (6 * 4 + 2) + 4 * 4 + (5 * 1 + math.ceil(24 / 8)) + 4 * 4
    sizes = model_sizes(path)
    assert sizes["model_bytes"] == path.stat().st_size
    assert sizes["tensor_bytes"] == dense
    assert sizes["model_bytes_compressed"] == path.stat().st_size - dense + encoded


@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_int8_tensors_are_stored_raw_so_file_size_is_honest(exported, tmp_path, quant_format):
    result = quantize_onnx(exported, tmp_path / "int8.onnx", WindowCalibrationReader(input_batches(range(3)), exported),
                           quant_format=quant_format)
    proto = onnx.load(str(result.path))
    int8 = [t for t in proto.graph.initializer if t.data_type == TensorProto.INT8]
    assert int8 and all(t.HasField("raw_data") and not t.int32_data for t in int8)
    assert model_sizes(result.path)["tensor_bytes"] < model_sizes(exported.path)["tensor_bytes"]


def test_peak_memory_counts_the_session_not_the_runtime_library(exported, tmp_path, monkeypatch):
    """The probe opens the graph through the plugin's ``open_graph`` in a child process, after importing the
    plugin's ``graph_libraries``: a fake whose library holds 96 MiB and whose session holds 32 MiB measures ~32."""
    import os
    from pathlib import Path

    from sparse_runtime.memory import peak_rss

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    from memory_fakes.runtime import PLUGINS

    probe = peak_rss(PLUGINS[0], exported.path, [a.numpy() for a in make_inputs()], threads=1, batch_size=4)
    assert "error" not in probe, probe
    if probe["peak_reset"]:
        assert 31 < probe["peak_rss_mb"] < 48, probe
    assert probe["process_peak_mb"] > 96 + 32
