"""structured: reduction within 2 pp on every built-in model it can prune, physically smaller models that
run forward/backward/export, restore + strict state_dict round trip, head pruning, Taylor, bad input."""

from __future__ import annotations

import io
from functools import lru_cache

import pytest
import torch
from torch import nn

from plugins.pruners.structured import StructuredPruner
from tsbench_core.data import DataShape, example_inputs
from tsbench_core.errors import CellError, UserError
from tsbench_core.protocols import PruneContext

pytest.importorskip("torch_pruning")

SHAPE = DataShape(enc_in=3, dec_in=3, c_out=3, seq_len=32, label_len=16, pred_len=8)
ENC_DEC = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2, "d_layers": 1}
SMALL = {
    "transformer": ENC_DEC, "informer": ENC_DEC, "autoformer": ENC_DEC, "fedformer": {**ENC_DEC, "modes": 4},
    "crossformer": {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "seg_len": 8},
    "patchtst": {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1},
    "itransformer": {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2},
}
PRUNER = StructuredPruner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@lru_cache(maxsize=1)
def _models() -> dict:
    from tsbench_core.registry import load_plugins

    return load_plugins().models


def _build(name: str, seed: int = 0) -> nn.Module:
    plugin = _models()[name]
    torch.manual_seed(seed)
    return plugin.build(plugin.params_model(**SMALL.get(name, {})), SHAPE).eval()


def _context(name: str) -> PruneContext:
    inputs = example_inputs(SHAPE, 2)

    def batches():
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            x = example_inputs(SHAPE, 4, seed=int(torch.randint(0, 100, (1,), generator=g)))
            yield (*x, torch.randn(4, SHAPE.pred_len, SHAPE.c_out, generator=g))

    return PruneContext(name, inputs, batches, nn.functional.mse_loss, train=None, seed=0)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _deploy(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "set_deploy_form"):
            module.set_deploy_form(True)


def _available(name: str) -> None:
    if name not in _models():
        pytest.skip(f"model plugin {name} is not registered yet")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_reduction_shape_backward_export_restore(name):
    _available(name)
    model = _build(name)
    dense_params = _params(model)
    context = _context(name)
    dense_out = model(*context.example_inputs)
    result = PRUNER.prune(model, 0.5, PRUNER.params_model(), context)
    pruned = result.model
    info = result.info
    # the reduction is measured independently of the pruner's own bookkeeping: the parameters of the
    # prunable layers it lists fell from prunable_params_dense by the target, within 2 pp
    assert abs(info["achieved_reduction"] - 0.5) <= 0.02, info["search"]
    assert _params(pruned) == info["params"] < dense_params
    assert dense_params - _params(pruned) == info["prunable_params_dense"] - info["prunable_params"]
    out = pruned(*context.example_inputs)
    assert out.shape == dense_out.shape
    pruned.train()
    loss = nn.functional.mse_loss(pruned(*context.example_inputs), torch.zeros_like(dense_out))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in pruned.parameters())
    pruned.eval()
    # restore on a fresh dense build, strict reload, identical outputs
    fresh = PRUNER.restore(_build(name, seed=1), result.structure)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    fresh.eval()
    torch.testing.assert_close(fresh(*context.example_inputs), pruned(*context.example_inputs))
    _deploy(pruned)
    torch.onnx.export(pruned, context.example_inputs, io.BytesIO(), dynamo=False)


def test_whole_head_pruning_updates_heads():
    model = _build("transformer")
    context = _context("transformer")
    result = PRUNER.prune(model, 0.5, PRUNER.params_model(attention="heads", scope="uniform"), context)
    layer = result.model.encoder.layers[0].attention
    assert layer.n_heads == 1
    assert layer.query_projection.out_features == 8  # one head of 16 / 2 dims left
    assert result.model(*context.example_inputs).shape == (2, SHAPE.pred_len, 3)
    fresh = PRUNER.restore(_build("transformer"), result.structure)
    assert fresh.encoder.layers[0].attention.n_heads == 1


def test_head_dims_keep_dense_softmax_scale():
    model = _build("transformer")
    result = PRUNER.prune(model, 0.5, PRUNER.params_model(), _context("transformer"))
    inner = result.model.encoder.layers[0].attention.inner_attention
    assert inner.scale == pytest.approx(1 / (16 // 2) ** 0.5)
    assert result.model.encoder.layers[0].attention.query_projection.out_features < 16


def test_taylor_iterative_round_to():
    model = _build("itransformer")
    params = PRUNER.params_model(importance="taylor", iterative_steps=2, round_to=4, tolerance=0.05)
    result = PRUNER.prune(model, 0.5, params, _context("itransformer"))
    for layer in result.model.encoder.layers:
        assert layer.ff_in.out_features % 4 == 0
    assert abs(result.info["achieved_reduction"] - 0.5) <= 0.05


def test_model_without_inner_groups_is_a_cell_error():
    _available("dlinear")
    plugin = _models()["dlinear"]
    model = plugin.build(plugin.params_model(), SHAPE)
    with pytest.raises(CellError, match="no inner channel group"):
        PRUNER.prune(model, 0.5, PRUNER.params_model(), _context("dlinear"))


def test_bad_input():
    with pytest.raises(ValueError):
        PRUNER.params_model(max_layer_ratio=1.0)  # would remove every channel
    with pytest.raises(UserError, match="every"):
        PRUNER.prune(_build("transformer"), 0.95, PRUNER.params_model(scope="uniform"), _context("transformer"))
    with pytest.raises(CellError, match="matches no module"):
        PRUNER.prune(_build("transformer"), 0.5, PRUNER.params_model(exclude=["nothing.*"]),
                     _context("transformer"))


def test_highest_study_target_is_reached():
    # 0.8**9 density: global ranking must not stall when whole groups fall below the threshold
    model = _build("transformer")
    result = PRUNER.prune(model, 1 - 0.8**9, PRUNER.params_model(), _context("transformer"))
    assert abs(result.info["achieved_reduction"] - (1 - 0.8**9)) <= 0.02, result.info["search"]
    for layer in result.model.encoder.layers:
        assert layer.feed_forward.linear1.out_features >= 1
        assert layer.attention.query_projection.out_features >= layer.attention.n_heads
