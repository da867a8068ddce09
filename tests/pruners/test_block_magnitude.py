"""magnitude/random with ``block`` > 1: whole 1×b input-channel groups zeroed (remainder group included), target
reached globally and per layer, block 1 unchanged (masks and cell keys), exclusions kept, masks through training,
params validation, and a block-4 Transformer that exports to ONNX with its blocks and matches torch eager."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from pruner_toy import ToyForecaster, toy_context, toy_inputs, train_with_masks
from pydantic import ValidationError
from torch import nn

from plugins.pruners.magnitude import MagnitudePruner, RandomPruner
from plugins.pruners.scoring import block_means, masks_from_scores
from tsbench_core.data import DataShape, example_inputs
from tsbench_core.errors import CellError, UserError
from tsbench_core.protocols import PruneContext

PRUNERS = [MagnitudePruner(), RandomPruner()]
LINEARS = ("body.0.weight", "body.2.weight", "time.weight")  # the toy's prunable Linears (in = 16, 32, 12)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_whole_blocks(weight: torch.Tensor, block: int) -> None:
    """Every group of ``block`` consecutive input channels of a row (the last one possibly shorter) is all zero
    or all nonzero."""
    zero = (weight.detach() == 0).float()
    cols = weight.shape[1]
    for start in range(0, cols, block):
        share = zero[:, start : start + block].mean(dim=1)
        assert torch.all((share == 0) | (share == 1)), f"columns {start}..{min(start + block, cols) - 1}"


def _zeros(model: nn.Module, names) -> tuple[int, int]:
    params = dict(model.named_parameters())
    return sum(int((params[n] == 0).sum()) for n in names), sum(params[n].numel() for n in names)


@pytest.mark.parametrize("pruner", PRUNERS, ids=lambda p: p.name)
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("target", [0.5, 0.9])
@pytest.mark.parametrize("block", [4, 5])  # 5: every toy Linear has a shorter remainder group
def test_whole_blocks_and_target(pruner, scope, target, block):
    torch.manual_seed(0)
    model = ToyForecaster()
    conv_before = model.embed.weight.detach().clone()
    result = pruner.prune(model, target, pruner.params_model(scope=scope, block=block), toy_context())
    assert set(result.masks) == set(LINEARS)
    params = dict(model.named_parameters())
    for name in LINEARS:
        assert_whole_blocks(params[name], block)
        assert torch.equal(params[name] == 0, ~result.masks[name])
    zeros, total = _zeros(model, LINEARS)
    assert abs(zeros / total - target) < 0.01
    assert result.info["achieved_sparsity"] == pytest.approx(zeros / total)
    assert result.info["block"] == block
    assert result.info["skipped_layers"] == ["embed.weight"] and "Conv" in result.info["skipped_reason"]
    assert torch.equal(model.embed.weight, conv_before)
    assert int((model.projection.weight == 0).sum()) == 0
    if scope == "layer":
        for name in LINEARS:
            w = params[name]
            # nearest whole number of groups: off by at most half a group
            assert abs(float((w == 0).float().mean()) - target) <= block / (2 * w.numel()) + 1e-9
    assert torch.isfinite(model(*toy_inputs())).all()


@pytest.mark.parametrize("block", [4, 5])
def test_global_removes_groups_of_lowest_mean(block):
    torch.manual_seed(0)
    model = ToyForecaster()
    before = {n: block_means(p.detach().abs(), block) for n, p in model.named_parameters() if n in LINEARS}
    MagnitudePruner().prune(model, 0.5, MagnitudePruner.params_model(block=block), toy_context())
    params = dict(model.named_parameters())
    removed, kept = [], []
    for name, means in before.items():
        gone = block_means((params[name] == 0).float(), block) == 1
        removed.append(means[gone])
        kept.append(means[~gone])
    assert torch.cat(removed).max() <= torch.cat(kept).min()


def test_remainder_group_is_scored_by_its_mean():
    values = torch.arange(10.0).view(1, 10)
    assert torch.equal(block_means(values, 4), torch.tensor([[1.5, 5.5, 8.5]]))


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("target", [0.5, 0.9])
def test_block_one_is_unstructured_as_before(scope, target):
    torch.manual_seed(0)
    model = ToyForecaster()
    names = ["embed.weight", *LINEARS]  # named_modules order
    params = dict(model.named_parameters())
    expected = masks_from_scores({n: params[n].detach().abs() for n in names}, target, scope)
    g = torch.Generator().manual_seed(0)
    expected_random = masks_from_scores({n: torch.rand(params[n].shape, generator=g) for n in names}, target, scope)
    for pruner, reference in ((MagnitudePruner(), expected), (RandomPruner(), expected_random)):
        clone = ToyForecaster()
        clone.load_state_dict(model.state_dict())
        result = pruner.prune(clone, target, pruner.params_model(scope=scope, block=1), toy_context())
        assert set(result.masks) == set(reference)
        assert all(torch.equal(result.masks[n], reference[n]) for n in reference)
        assert "block" not in result.info and "skipped_layers" not in result.info


def test_block_one_leaves_the_params_dump_and_cell_keys_unchanged():
    params = MagnitudePruner.params_model(scope="layer")
    assert "block" not in params.model_dump(mode="json")
    assert params.model_dump(mode="json") == MagnitudePruner.params_model(scope="layer", block=1).model_dump()
    blocked = MagnitudePruner.params_model(block=4).model_dump(mode="json")
    assert blocked["block"] == 4
    assert MagnitudePruner.params_model.model_validate(blocked).block == 4
    assert "block" in MagnitudePruner.params_model.model_json_schema()["properties"]


def test_exclusions_respected():
    model = ToyForecaster()
    params = MagnitudePruner.params_model(block=4, exclude=["time", "projection"])
    result = MagnitudePruner().prune(model, 0.9, params, toy_context())
    assert set(result.masks) == {"body.0.weight", "body.2.weight"}
    assert int((model.time.weight == 0).sum()) == 0 and int((model.projection.weight == 0).sum()) == 0
    model = ToyForecaster()
    result = MagnitudePruner().prune(model, 0.5, MagnitudePruner.params_model(block=4, exclude=[]), toy_context())
    assert "projection.weight" in result.masks
    assert_whole_blocks(model.projection.weight, 4)
    result = MagnitudePruner().prune(ToyForecaster(), 0.5, MagnitudePruner.params_model(block=4, include=["body.*"]),
                                     toy_context())
    assert set(result.masks) == {"body.0.weight", "body.2.weight"}


@pytest.mark.parametrize("pruner", PRUNERS, ids=lambda p: p.name)
def test_blocks_survive_fine_tuning(pruner):
    torch.manual_seed(0)
    model = ToyForecaster()
    result = pruner.prune(model, 0.9, pruner.params_model(block=4), toy_context())
    losses = train_with_masks(model, result.masks, steps=5)
    assert all(np.isfinite(losses))
    params = dict(model.named_parameters())
    for name, mask in result.masks.items():
        assert torch.all(params[name][~mask] == 0)
        assert torch.all(params[name][mask] != 0)
        assert_whole_blocks(params[name], 4)


def test_params_validation():
    for bad in (0, -4):
        with pytest.raises(ValidationError, match="block must be an integer >= 1"):
            MagnitudePruner.params_model(block=bad)
    with pytest.raises(ValidationError):
        RandomPruner.params_model(block=2.5)
    from tsbench_core.bench import _validate  # the --pruner-params path of ``tsbench bench``

    assert _validate(MagnitudePruner(), {"block": 4}, "--pruner-params").block == 4
    with pytest.raises(UserError, match="--pruner-params for 'magnitude': block: .*block must be an integer"):
        _validate(MagnitudePruner(), {"block": 0}, "--pruner-params")


def test_conv_only_selection_with_blocks_is_an_error():
    params = MagnitudePruner.params_model(block=4, module_types=["Conv1d"])
    with pytest.raises(UserError, match="no selected Linear weight"):
        MagnitudePruner().validate_for_model(ToyForecaster(), params)
    with pytest.raises(CellError, match="no selected Linear weight"):
        MagnitudePruner().prune(ToyForecaster(), 0.5, params, toy_context())
    MagnitudePruner().validate_for_model(ToyForecaster(), MagnitudePruner.params_model(block=4))


# --- a tiny Transformer: block-4 at 90 %, ONNX export (deploy form) against torch eager ---

SHAPE = DataShape(enc_in=3, dec_in=3, c_out=3, seq_len=32, label_len=16, pred_len=8)
TINY = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2, "d_layers": 1}


@lru_cache(maxsize=1)
def _models() -> dict:
    from tsbench_core.registry import load_plugins

    return load_plugins().models


def _transformer() -> tuple[nn.Module, PruneContext]:
    if "transformer" not in _models():
        pytest.skip("model plugin transformer is not registered")
    plugin = _models()["transformer"]
    torch.manual_seed(0)
    model = plugin.build(plugin.params_model(**TINY), SHAPE).eval()
    return model, PruneContext("transformer", example_inputs(SHAPE, 2), lambda: iter(()), nn.functional.mse_loss,
                               train=None, seed=0)


def _weight_inputs(proto) -> list[np.ndarray]:
    """Constant weights of the MatMul/Gemm nodes of an ONNX graph, as ``[in, out]`` arrays."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    found = []
    for node in proto.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        if w.ndim == 2:
            found.append(w.T if trans_b else w)
    return found


def test_block4_transformer_exports_and_matches_eager(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from sparse_runtime.export import export_onnx

    model, context = _transformer()
    result = MagnitudePruner().prune(model, 0.9, MagnitudePruner.params_model(block=4), context)
    assert abs(result.info["achieved_sparsity"] - 0.9) < 0.01
    params = dict(model.named_parameters())
    for name in result.masks:
        assert_whole_blocks(params[name], 4)
    inputs = example_inputs(SHAPE, 2, seed=5)
    with torch.no_grad():
        eager = model(*inputs).numpy()
    path = tmp_path / "transformer.onnx"
    export = export_onnx(model, inputs, path)
    sparse = [w for w in _weight_inputs(onnx.load(str(path))) if (w == 0).mean() > 0.5]
    assert len(sparse) >= 8  # the pruned products, in the layout the runtimes read: [in, out]
    for w in sparse:
        assert_whole_blocks(torch.from_numpy(np.ascontiguousarray(w.T)), 4)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = dict(zip(export.input_names, export.select([t.numpy() for t in inputs]), strict=True))
    (onnx_out,) = session.run(None, feeds)
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-4, atol=1e-5)


SMALL = {
    "transformer": TINY, "informer": TINY, "autoformer": TINY, "fedformer": {**TINY, "modes": 4},
    "crossformer": {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "seg_len": 8},
    "patchtst": {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1},
    "itransformer": {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2}, "dlinear": {},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_block4_on_every_model(name):
    if name not in _models():
        pytest.skip(f"model plugin {name} is not registered")
    plugin = _models()[name]
    torch.manual_seed(0)
    model = plugin.build(plugin.params_model(**SMALL[name]), SHAPE).eval()
    inputs = example_inputs(SHAPE, 2)
    shape = model(*inputs).shape
    context = PruneContext(name, inputs, lambda: iter(()), nn.functional.mse_loss, train=None, seed=0)
    result = MagnitudePruner().prune(model, 0.9, MagnitudePruner.params_model(block=4), context)
    zeros, total = _zeros(model, result.masks)
    assert zeros / total == pytest.approx(0.9, abs=0.01)
    params = dict(model.named_parameters())
    for n in result.masks:
        assert_whole_blocks(params[n], 4)
    out = model(*inputs)
    assert out.shape == shape and torch.isfinite(out).all()
