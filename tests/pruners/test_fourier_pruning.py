"""Structured pruning of FEDformer's Fourier blocks: removing input head dimensions is exact (equals zeroing
them in the dense model), the pruned model is physically smaller, its deploy form equals its training form,
it exports (legacy exporter, opset 14) and it restores from its structure. With two layers per stack sharing
one block per role (the default), a shared FEB-f's input dims and the query projections of all its layers are
one group; a shared FEA-f's input dims, the query and the key projections of all its layers are one group."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plugins.models.layers.fourier_blocks import FourierCrossAttention
from plugins.pruners import fourier_groups as fourier
from plugins.pruners.structured import StructuredPruner
from tsbench_core.data import DataShape, example_inputs
from tsbench_core.protocols import PruneContext

pytest.importorskip("torch_pruning")

SHAPE = DataShape(enc_in=3, dec_in=3, c_out=3, seq_len=32, label_len=16, pred_len=8)
SMALL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "d_layers": 1, "modes": 4}
PRUNER = StructuredPruner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SHARED = {"e_layers": 2}  # two encoder layers, one shared block (the default)
UNSHARED = {"e_layers": 2, "share_blocks": False}
SHARED_2X2 = {"e_layers": 2, "d_layers": 2}  # one encoder FEB-f, one decoder FEB-f, one FEA-f (the default)
UNSHARED_2X2 = {"e_layers": 2, "d_layers": 2, "share_blocks": False}


def _build(seed: int = 0, **overrides: object) -> nn.Module:
    from tsbench_core import build_model

    torch.manual_seed(seed)
    shape = {k: getattr(SHAPE, k) for k in ("enc_in", "dec_in", "c_out", "seq_len", "label_len", "pred_len")}
    return build_model("fedformer", **shape, **(SMALL | overrides)).eval()


def _encoder_blocks(model: nn.Module) -> list[nn.Module]:
    return [layer.attention.inner_attention for layer in model.encoder.layers]


def _all_blocks(model: nn.Module) -> list[list[nn.Module]]:
    """The inner attention of every layer: encoder, decoder self, decoder cross."""
    return [_encoder_blocks(model), [layer.self_attention.inner_attention for layer in model.decoder.layers],
            [layer.cross_attention.inner_attention for layer in model.decoder.layers]]


def _assert_shared(model: nn.Module) -> None:
    for blocks in _all_blocks(model):
        assert all(b is blocks[0] for b in blocks)


def _context() -> PruneContext:
    def batches():
        for seed in (1, 2):
            yield (*example_inputs(SHAPE, 4, seed=seed), torch.randn(4, SHAPE.pred_len, SHAPE.c_out))

    return PruneContext("fedformer", example_inputs(SHAPE, 2), batches, nn.functional.mse_loss, train=None)


def _deploy(model: nn.Module, enabled: bool = True) -> None:
    for module in model.modules():
        if hasattr(module, "set_deploy_form"):
            module.set_deploy_form(enabled)


def test_groups_cover_every_fourier_block():
    groups = fourier.fourier_groups(_build())
    assert len(groups) == SMALL["e_layers"] + 2 * SMALL["d_layers"]
    cross = [g for g in groups if isinstance(g.block, FourierCrossAttention)]
    assert len(cross) == SMALL["d_layers"]
    assert [n.rsplit(".", 1)[1] for n, _ in cross[0].projections] == ["query_projection", "key_projection"]
    assert all(g.head_dim == SMALL["d_model"] // SMALL["n_heads"] for g in groups)


def test_a_shared_block_is_one_group_with_every_layers_query_projection():
    groups = fourier.fourier_groups(_build(**SHARED))
    assert len(groups) == 1 + 2  # the shared encoder block, the decoder's self and cross blocks
    encoder = groups[0]
    assert [n for n, _ in encoder.layers] == ["encoder.layers.0.attention", "encoder.layers.1.attention"]
    assert [n for n, _ in encoder.projections] == [f"encoder.layers.{i}.attention.query_projection"
                                                   for i in (0, 1)]
    assert encoder.member_names()[-1] == encoder.block_name == "encoder.layers.0.attention.inner_attention"
    assert len(fourier.fourier_groups(_build(**UNSHARED))) == 2 + 2


def test_shared_decoder_blocks_are_one_group_each():
    """A shared decoder FEB-f goes with every decoder layer's self-attention query projection; a shared FEA-f
    with every decoder layer's cross-attention query projection (its query side) and key projection (its key
    side): one weight axis ``E`` serves both sides."""
    groups = fourier.fourier_groups(_build(**SHARED_2X2))
    assert len(groups) == 3
    encoder, decoder_self, cross = groups
    assert isinstance(cross.block, FourierCrossAttention) and not isinstance(decoder_self.block,
                                                                             FourierCrossAttention)
    assert [n for n, _ in encoder.projections] == [f"encoder.layers.{i}.attention.query_projection"
                                                   for i in (0, 1)]
    assert [n for n, _ in decoder_self.layers] == [f"decoder.layers.{i}.self_attention" for i in (0, 1)]
    assert [n for n, _ in decoder_self.projections] == [f"decoder.layers.{i}.self_attention.query_projection"
                                                        for i in (0, 1)]
    assert [n for n, _ in cross.layers] == [f"decoder.layers.{i}.cross_attention" for i in (0, 1)]
    assert [n for n, _ in cross.projections] == [f"decoder.layers.{i}.cross_attention.{side}_projection"
                                                 for i in (0, 1) for side in ("query", "key")]
    assert cross.block_name == "decoder.layers.0.cross_attention.inner_attention"
    assert cross.member_names() == [n for n, _ in cross.projections] + [cross.block_name]
    assert len({id(linear) for _, linear in cross.projections}) == 4  # projections are per layer
    assert len(fourier.fourier_groups(_build(**UNSHARED_2X2))) == 2 + 2 * 2


def test_a_group_refuses_projections_of_another_width():
    model = _build(**SHARED_2X2)
    layer = model.decoder.layers[1].cross_attention
    layer.key_projection = nn.Linear(SMALL["d_model"], SMALL["d_model"] - 2)
    with pytest.raises(ValueError, match="decoder.layers.1.cross_attention.key_projection has 14 outputs"):
        fourier.fourier_groups(model)


@pytest.mark.parametrize("overrides", [{}, SHARED, UNSHARED, SHARED_2X2, UNSHARED_2X2],
                         ids=["one-layer", "shared", "unshared", "shared-2x2", "unshared-2x2"])
@torch.no_grad()
def test_removing_head_dims_equals_zeroing_them(overrides):
    model = _build(**overrides)
    inputs = example_inputs(SHAPE, 2)
    removed = torch.tensor([1, 4, 6])  # of 8 dims per head
    for group in fourier.fourier_groups(model):
        heads, dim = group.heads, group.head_dim
        rows = (torch.arange(heads)[:, None] * dim + removed[None, :]).reshape(-1)
        for _, linear in group.projections:
            linear.weight[rows] = 0.0
            linear.bias[rows] = 0.0
        group.block.weights1[:, removed] = 0.0
        group.block.weights2[:, removed] = 0.0
    zeroed = model(*inputs)
    dense_params = sum(p.numel() for p in model.parameters())
    for group in fourier.fourier_groups(model):
        assert fourier.prune_group(group, 3 / 8, round_to=None) == 5  # the zeroed dims score lowest
    pruned = model(*inputs)
    torch.testing.assert_close(pruned, zeroed, atol=1e-6, rtol=1e-5)
    groups = fourier.fourier_groups(model)
    # each group: 3 of 8 dims in each of 2 heads, from every projection (weight rows + biases) and the
    # [H, E, O, M] spectral weights
    per_group = [len(g.projections) * 6 * (SMALL["d_model"] + 1) + 2 * 2 * 3 * 8 * SMALL["modes"] for g in groups]
    assert dense_params - sum(p.numel() for p in model.parameters()) == sum(per_group)
    for group in groups:
        assert group.block.weights1.shape == (2, 5, 8, SMALL["modes"])
        assert all(linear.out_features == 10 for _, linear in group.projections)
    for blocks in _all_blocks(model):
        assert (blocks[0] is blocks[-1]) == (overrides.get("share_blocks", True) or len(blocks) == 1)


def test_kept_dims_round_to():
    assert fourier.kept_dims(8, 2, 0.5, None) == 4
    assert fourier.kept_dims(8, 2, 0.99, None) == 1
    assert fourier.kept_dims(8, 2, 0.5, 8) == 4  # 2 heads x 4 = 8
    assert fourier.kept_dims(8, 2, 0.6, 8) == 4  # rounded up to a multiple of 4 per head
    assert fourier.kept_dims(8, 3, 0.5, 4) == 4  # 3 x 4 = 12, a multiple of 4


@pytest.mark.parametrize("attention", ["head_dims", "heads"])
def test_structured_fedformer_shrinks_fourier_blocks(attention, tmp_path):
    model = _build()
    context = _context()
    result = PRUNER.prune(model, 0.5, PRUNER.params_model(attention=attention, tolerance=0.05), context)
    pruned = result.model
    groups = fourier.fourier_groups(pruned)
    assert any(g.head_dim < 8 for g in groups)
    for group in groups:
        assert group.layer.n_heads == SMALL["n_heads"]  # whole heads never leave a Fourier block
        assert group.block.weights1.shape[2] == 8  # output dims tied to the out-projection
        for _, linear in group.projections:
            assert linear.out_features == group.heads * group.head_dim
    if attention == "head_dims":
        assert abs(result.info["achieved_reduction"] - 0.5) <= 0.02, result.info["search"]
    out = pruned(*context.example_inputs)
    _deploy(pruned)
    torch.testing.assert_close(pruned(*context.example_inputs), out, atol=1e-4, rtol=0)
    from sparse_runtime.export import export_onnx

    export_onnx(pruned, context.example_inputs, tmp_path / "fedformer.onnx", opset=14)
    assert (tmp_path / "fedformer.onnx").stat().st_size > 0
    fresh = PRUNER.restore(_build(seed=3), result.structure)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    _deploy(fresh, False)
    torch.testing.assert_close(fresh.eval()(*context.example_inputs), out)


def test_taylor_and_uniform_on_fedformer():
    model = _build()
    params = PRUNER.params_model(importance="taylor", scope="uniform", round_to=4, tolerance=0.1)
    result = PRUNER.prune(model, 0.5, params, _context())
    for group in fourier.fourier_groups(result.model):
        assert (group.heads * group.head_dim) % 4 == 0
        assert group.head_dim < 8
    loss = result.model.train()(*_context().example_inputs).pow(2).mean()
    loss.backward()
    assert torch.isfinite(loss)


def test_highest_study_target_on_fedformer():
    result = PRUNER.prune(_build(), 1 - 0.8**9, PRUNER.params_model(), _context())
    assert abs(result.info["achieved_reduction"] - (1 - 0.8**9)) <= 0.02, result.info["search"]
    assert all(g.head_dim >= 1 for g in fourier.fourier_groups(result.model))
    assert torch.isfinite(result.model(*_context().example_inputs)).all()


def test_structured_pruning_with_the_shared_block(tmp_path):
    model = _build(**SHARED)
    context = _context()
    target = 0.5
    result = PRUNER.prune(model, target, PRUNER.params_model(), context)
    pruned = result.model
    assert abs(result.info["achieved_reduction"] - target) <= 0.02, result.info["search"]
    blocks = _encoder_blocks(pruned)
    assert blocks[0] is blocks[1]
    head_dim = blocks[0].weights1.shape[1]
    assert head_dim < 8
    for layer in pruned.encoder.layers:  # both layers' queries keep the block's input dims
        assert layer.attention.query_projection.out_features == SMALL["n_heads"] * head_dim
    # the parameter total counts the shared block once
    assert result.info["params"] == sum(p.numel() for p in pruned.parameters())
    out = pruned(*context.example_inputs)
    fresh = PRUNER.restore(_build(seed=3, **SHARED), result.structure)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    assert _encoder_blocks(fresh)[0] is _encoder_blocks(fresh)[1]
    torch.testing.assert_close(fresh.eval()(*context.example_inputs), out)
    from sparse_runtime.export import export_onnx

    export_onnx(pruned, context.example_inputs, tmp_path / "fedformer.onnx", opset=14)
    assert (tmp_path / "fedformer.onnx").stat().st_size > 0


@pytest.mark.parametrize("overrides", [SHARED, SHARED_2X2], ids=["shared-encoder", "shared-2x2"])
def test_pruned_shared_model_equals_the_dense_one_with_the_removed_dims_zeroed(overrides):
    """The whole pruner, not one group: every removed head dimension of each shared block (rows of all its
    layers' coupled projections, the block's input axis) zeroed in the dense model gives the pruned outputs;
    the structure restores a fresh model that loads the pruned weights and computes the same."""
    dense = _build(**overrides)
    context = _context()
    only_fourier = PRUNER.params_model(exclude=["*.feed_forward.linear1", "decoder.projection"])
    result = PRUNER.prune(dense, 0.3, only_fourier, context)
    pruned = result.model
    _assert_shared(pruned)
    groups = fourier.fourier_groups(pruned)
    assert all(g.head_dim < 8 for g in groups)  # every block (encoder, decoder self, cross) lost dims
    for group in groups:  # every layer's coupled projections keep the block's dims
        assert all(linear.out_features == group.heads * group.head_dim for _, linear in group.projections)
    zeroed = _build(**overrides)  # the same weights as ``dense``
    with torch.no_grad():
        _zero_removed_dims(zeroed, pruned)
        want = pruned(*context.example_inputs)
        torch.testing.assert_close(want, zeroed(*context.example_inputs), atol=1e-6, rtol=1e-5)
    fresh = PRUNER.restore(_build(seed=3, **overrides), result.structure)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    _assert_shared(fresh)
    assert sum(p.numel() for p in fresh.parameters()) == result.info["params"]
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(*context.example_inputs), want)


def test_structured_pruning_with_shared_decoder_blocks():
    """The full pruner (feed-forward channels too) on two layers per stack: the shared blocks stay shared and
    lose dims together with all their layers' projections, the target is reached and the model restores."""
    model = _build(**SHARED_2X2)
    context = _context()
    result = PRUNER.prune(model, 0.5, PRUNER.params_model(), context)
    pruned = result.model
    assert abs(result.info["achieved_reduction"] - 0.5) <= 0.02, result.info["search"]
    _assert_shared(pruned)
    groups = fourier.fourier_groups(pruned)
    assert len(groups) == 3 and all(g.head_dim < 8 for g in groups)
    for layer in pruned.decoder.layers:  # FEA-f: query and key projections of both layers keep the block's input dims
        width = SMALL["n_heads"] * layer.cross_attention.inner_attention.weights1.shape[1]
        assert layer.cross_attention.query_projection.out_features == width
        assert layer.cross_attention.key_projection.out_features == width
    assert result.info["params"] == sum(p.numel() for p in pruned.parameters())
    fresh = PRUNER.restore(_build(seed=3, **SHARED_2X2), result.structure)
    fresh.load_state_dict(pruned.state_dict(), strict=True)
    _assert_shared(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(*context.example_inputs), pruned(*context.example_inputs))


def _zero_removed_dims(dense: nn.Module, pruned: nn.Module) -> None:
    """Zero in ``dense`` the Fourier head dims that ``pruned`` no longer has (found by matching the block's
    input slices)."""
    dim = SMALL["d_model"] // SMALL["n_heads"]
    dense_groups, pruned_groups = fourier.fourier_groups(dense), fourier.fourier_groups(pruned)
    assert any(g.head_dim < dim for g in pruned_groups)
    for dense_group, pruned_group in zip(dense_groups, pruned_groups, strict=True):
        kept = [e for e in range(dim)
                if any(torch.equal(dense_group.block.weights1[:, e], pruned_group.block.weights1[:, k])
                       for k in range(pruned_group.head_dim))]
        assert len(kept) == pruned_group.head_dim
        removed = torch.tensor([e for e in range(dim) if e not in kept], dtype=torch.long)
        if removed.numel() == 0:
            continue
        rows = (torch.arange(dense_group.heads)[:, None] * dim + removed[None, :]).reshape(-1)
        for _, linear in dense_group.projections:
            linear.weight[rows] = 0.0
            linear.bias[rows] = 0.0
        dense_group.block.weights1[:, removed] = 0.0
        dense_group.block.weights2[:, removed] = 0.0
