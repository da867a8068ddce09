"""Quantization-aware fine-tuning through a SparseML recipe: zeros held, learned scales written, the gate."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from runtime_toys import TinyForecaster, make_inputs, open_graph
from tsbench_testing import tiny_spec

from sparse_runtime.export import export_onnx
from sparse_runtime.quantize import WindowCalibrationReader, quantize_onnx
from tsbench_core.cells import expand
from tsbench_core.cpu import cpu_facts
from tsbench_core.data import Windows
from tsbench_core.errors import CellError
from tsbench_core.protocols import availability_of, int8_plan_of
from tsbench_core.spec import SpecProblems, TrainingConfig, parse_spec, validate_against
from tsbench_core.steps.measure import static_batches
from tsbench_core.steps.train import train_model
from tsbench_core.verify import verify_session_relative

pytest.importorskip("sparseml")


def _pruned_tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = TinyForecaster().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w[w.abs() <= w.abs().flatten().kthvalue(int(0.7 * w.numel())).values] = 0.0
    return model


@pytest.fixture
def splits(registry):
    plugin = registry.records["dataset"]["synthetic"].plugin
    return plugin.load(plugin.params_model.model_validate({"length": 400, "n_vars": 3}), Windows(16, 8, 8), None)


@pytest.fixture
def train(splits):
    config = TrainingConfig(epochs=1, batch_size=4, device="cpu", patience=5, max_train_batches=12, max_eval_batches=4)

    def run(model, **kwargs):
        return train_model(model, splits, config, seed=0, **kwargs).as_dict()

    return run


def test_generated_recipe_quantizes_the_selected_linears_only():
    from sparse_runtime.qat import build_qat_recipe, quantized_linear_names

    model = TinyForecaster()
    assert quantized_linear_names(model, ["out"]) == ["value", "mark", "mix", "time"]
    recipe = build_qat_recipe(model, ["out"], epochs=3, symmetric_activations=False)
    assert "!ConstantPruningModifier" in recipe and "params: __ALL_PRUNABLE__" in recipe  # zeros held
    assert "!QuantizationModifier" in recipe and "disable_quantization_observer_epoch: 2.0" in recipe
    assert "      - out\n" in recipe  # the kept-float Linear, by name
    with pytest.raises(CellError, match="every Linear layer is kept float"):
        build_qat_recipe(model, ["*"], epochs=1, symmetric_activations=False)


def test_qat_holds_zeros_and_its_int8_graph_computes_what_was_trained(registry, splits, train, tmp_path):
    from sparse_runtime.qat import qat_finetune

    model = _pruned_tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = qat_finetune(model, train, keep_float=["out"], epochs=2, lr=1e-3)
    # calibration and fine-tuning happened: observers saw data, the weights moved, the pruned zeros did not
    assert [q.name for q in result.qparams] == ["value", "mark", "mix", "time"]
    assert all(q.act_scale > 0 and 0 <= q.act_zero_point <= 255 and q.weight_scale > 0 for q in result.qparams)
    assert result.info["training"]["epochs_run"] == 2 and result.info["zeros_held"] > 0
    after = dict(result.model.named_parameters())
    for name, old in before.items():
        if old.dim() == 2:
            assert torch.all(after[name][old == 0] == 0), name
            assert not torch.equal(after[name], old), name
    assert torch.equal(after["out.weight"][before["out.weight"] == 0], torch.zeros(int((before["out.weight"] == 0)
                                                                                       .sum())))
    # the fine-tuned float model in the original structure, exported as usual, then written with QAT's scales
    example = tuple(torch.from_numpy(a) for a in static_batches(splits.test, 4, 1)[0])
    export = export_onnx(result.model, example, tmp_path / "fp32.onnx")
    calibration = WindowCalibrationReader(static_batches(splits.train, 4, 2), export)
    gate = static_batches(splits.test, 4, 2)
    runtimes = ["onnxruntime"] + (["deepsparse"] if availability_of(registry.get("runtime", "deepsparse")).available
                                  else [])
    for runtime in runtimes:
        # the weight encoding the runtime chooses for this CPU: uint8 weights (int8 + 128) write the learned
        # integers exactly where ONNX Runtime's uint8 x int8 kernels would saturate
        weights = int8_plan_of(registry.get("runtime", runtime), cpu_facts(), "matmulinteger").weights
        quantized = quantize_onnx(export, tmp_path / f"qat.{runtime}.onnx", calibration, keep_float=["out"],
                                  qparams=result.qparams, weights=weights)
        assert quantized.info()["learned_qparams_nodes"] == quantized.quantized_nodes == 6  # value/mark used twice
        assert quantized.info()["calibrated_nodes"] == 0
        proto = onnx.load(str(quantized.path))
        inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
        for node in proto.graph.node:
            if node.op_type == "MatMulInteger":  # zero point 0 (int8) or 128 (uint8): zeros stay zeros
                assert inits[node.input[3]] == {"int8": 0, "uint8": 128}[weights]
        session = open_graph(runtime, quantized.export, threads=1, batch_size=4)
        try:
            _, rel_float = verify_session_relative(session, result.model, gate, tolerance=0.1)  # the gate
            _, rel_qat = verify_session_relative(session, result.qat_model, gate, tolerance=2e-3)
            # the integer graph computes QAT's fake quantization, up to the biases rounded to the int32 grid
            assert rel_qat * 5 < rel_float
            if runtime == "deepsparse":
                assert session.info["fraction_of_supported_ops"] == 1.0
        finally:
            session.close()


def test_qat_refuses_a_recipe_that_lets_pruned_zeros_move(train, tmp_path):
    from sparse_runtime.qat import qat_finetune

    recipe = tmp_path / "qat.yaml"  # quantization without a pruning modifier: Adam moves the zeros
    recipe.write_text("modifiers:\n  - !EpochRangeModifier\n    start_epoch: 0.0\n    end_epoch: 1.0\n"
                      "  - !QuantizationModifier\n    start_epoch: 0.0\n    ignore: [ReLU, Dropout, GELU]\n"
                      "    strict: False\n", encoding="utf-8")
    with pytest.raises(CellError, match="pruned zeros moved"):
        qat_finetune(_pruned_tiny(), train, keep_float=[], epochs=1, lr=1e-2, recipe=str(recipe))


def test_quantize_config_methods_and_formats(registry, tmp_path):
    qat_config = registry.quantizers["sparseml-qat"].params_model  # the method's rules are its quantizer's
    qat = qat_config(method="sparseml-qat")
    assert (qat.epochs, qat.lr, qat.format) == (2, 1e-5, "matmulinteger")
    assert registry.quantizers["static-int8"].params_model().model_dump(mode="json").keys() == {
        "method", "format", "calibration_batches", "keep_float", "per_channel", "symmetric_activations",
        "tolerance"}  # post-training configs dump without the QAT fields
    assert qat_config(method="sparseml-qat", epochs=3).model_dump(mode="json")["epochs"] == 3
    spec = tiny_spec(name="q")  # the cells carry the quantizer's config, its defaults filled in
    spec["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5], "quantize": {"method": "sparseml-qat"}}]
    cells = expand(parse_spec(json.dumps(spec), "s.json"), registry)
    assert {(c.quantize.epochs, c.quantize.lr) for c in cells if c.quantize is not None} == {(2, 1e-5)}

    def problems(**quantize):
        spec = tiny_spec(name="q")
        spec["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5], "quantize": quantize}]
        with pytest.raises(SpecProblems) as info:
            validate_against(parse_spec(json.dumps(spec), "s.json"), registry, "s.json")
        return info.value.problems

    assert any("matmulinteger format only" in p for p in problems(method="sparseml-qat", format="qdq"))
    assert any("only for method 'sparseml-qat'" in p for p in problems(epochs=2))
    assert any("does not exist" in p for p in problems(method="sparseml-qat", recipe=str(tmp_path / "no.yaml")))
    assert any("pruning[0].quantize.format" in p for p in problems(format="qoperator"))


def test_int8_weights_of_a_qat_export_hold_the_masks(train, tmp_path):
    """The integer weights of every product are zero wherever the pruned model had a zero."""
    from sparse_runtime.qat import qat_finetune

    model = _pruned_tiny()
    result = qat_finetune(model, train, keep_float=[], epochs=1, lr=1e-3)
    export = export_onnx(result.model, make_inputs(0), tmp_path / "fp32.onnx")
    quantized = quantize_onnx(export, tmp_path / "q.onnx",
                              WindowCalibrationReader([tuple(t.numpy() for t in make_inputs(1))], export),
                              qparams=result.qparams)
    proto = onnx.load(str(quantized.path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    masks = {q.name: (getattr(model, q.name).weight.detach().numpy().T == 0) for q in result.qparams}
    for node in proto.graph.node:
        if node.op_type == "MatMulInteger":
            weight = inits[node.input[1]]
            layer = node.name.strip("/").split("/")[0].split("_")[0]  # /value_1/MatMul -> value
            assert np.all(weight[masks[layer]] == 0), node.name
