"""Unstructured and N:M pruners on models with a shared module: a weight reachable under two module names is
selected, ranked, masked and reported once (a toy with one Linear used twice; FEDformer, whose encoder layers
share one Fourier block, and whose decoder layers share one FEB-f and one FEA-f)."""

from __future__ import annotations

import pytest
import torch
from pruner_toy import toy_context, toy_inputs
from torch import nn

from plugins.pruners.magnitude import MagnitudePruner, RandomPruner
from plugins.pruners.nm import NMPruner, is_nm_sparse
from tsbench_core.accounting import count_params
from tsbench_core.data import DataShape, example_inputs
from tsbench_core.protocols import PruneContext


class SharedLinearToy(nn.Module):
    """Conv1d embedding, one Linear applied twice (under the names ``first`` and ``second``), a Linear over
    time steps and the output projection."""

    def __init__(self, c_in: int = 3, d_model: int = 16, seq_len: int = 12, pred_len: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1)
        shared = nn.Linear(d_model, d_model)
        self.first = shared
        self.second = shared
        self.time = nn.Linear(seq_len, pred_len)
        self.projection = nn.Linear(d_model, c_in)

    def forward(self, x_enc, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        h = self.embed(x_enc.transpose(1, 2)).transpose(1, 2)
        h = h + self.first(h)
        h = h + torch.tanh(self.second(h))
        h = self.time(h.transpose(1, 2)).transpose(1, 2)
        return self.projection(h)


def _unique_selected_numel(model: SharedLinearToy, linear_only: bool = False) -> int:
    layers = [model.first, model.time] + ([] if linear_only else [model.embed])
    return sum(layer.weight.numel() for layer in layers)


@pytest.mark.parametrize("pruner", [MagnitudePruner(), RandomPruner()], ids=lambda p: p.name)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_one_shot_pruners_count_a_shared_weight_once(pruner, scope):
    torch.manual_seed(0)
    model = SharedLinearToy()
    target = 0.5
    result = pruner.prune(model, target, pruner.params_model(scope=scope), toy_context())
    assert "second.weight" not in result.masks and "first.weight" in result.masks
    total = _unique_selected_numel(model)
    assert result.info["selected_weights"] == total
    if scope == "global":
        assert result.info["pruned_weights"] == round(target * total)
    zeros = sum(int((w == 0).sum()) for w in (model.first.weight, model.time.weight, model.embed.weight))
    assert zeros == result.info["pruned_weights"]
    counted = count_params(model, prunable=list(result.masks))
    assert counted["prunable_total"] == total
    assert counted["sparsity_prunable"] == pytest.approx(result.info["achieved_sparsity"])
    assert torch.isfinite(model(*toy_inputs())).all()


def test_nm_prunes_a_shared_weight_once():
    torch.manual_seed(0)
    model = SharedLinearToy()
    result = NMPruner().prune(model, 0.5, NMPruner().params_model(), toy_context())
    assert "second.weight" not in result.masks and is_nm_sparse(model.second.weight)
    assert result.info["selected_weights"] == _unique_selected_numel(model, linear_only=True)
    assert result.info["achieved_sparsity"] == pytest.approx(0.5)


SHAPE = DataShape(enc_in=3, dec_in=3, c_out=3, seq_len=32, label_len=16, pred_len=8)
FEDFORMER = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2, "d_layers": 1, "modes": 4}


def _fedformer(**overrides: object) -> nn.Module:
    from tsbench_core import build_model

    torch.manual_seed(0)
    shape = {k: getattr(SHAPE, k) for k in ("enc_in", "dec_in", "c_out", "seq_len", "label_len", "pred_len")}
    return build_model("fedformer", **shape, **(FEDFORMER | overrides)).eval()


def _fedformer_context() -> PruneContext:
    return PruneContext("fedformer", example_inputs(SHAPE, 2), lambda: iter(()), nn.functional.mse_loss,
                        train=None)


@pytest.mark.parametrize("d_layers", [1, 2], ids=["d1", "d2"])
@pytest.mark.parametrize("pruner", [MagnitudePruner(), RandomPruner(), NMPruner()], ids=lambda p: p.name)
def test_sparsity_of_the_shared_block_fedformer(pruner, d_layers):
    model = _fedformer(d_layers=d_layers)
    before = count_params(model)
    assert before["params_total"] == sum(p.numel() for p in model.parameters())  # each shared block once
    unshared = count_params(_fedformer(d_layers=d_layers, share_blocks=False))["params_total"]
    block = 2 * 2 * 8 * 8 * 4  # real and imaginary [2 heads, 8, 8, 4 modes]
    assert unshared - before["params_total"] == (1 + 2 * (d_layers - 1)) * block
    result = pruner.prune(model, 0.5, pruner.params_model(), _fedformer_context())
    selected = result.info["selected_weights"]
    assert set(result.masks) <= dict(model.named_parameters()).keys()  # a shared tensor under its first name
    assert selected == sum(p.numel() for n, p in model.named_parameters() if n in result.masks)
    assert result.info["pruned_weights"] == selected // 2  # even sizes: exactly half, globally or 2 of 4
    counted = count_params(model, prunable=list(result.masks))
    assert counted["prunable_total"] == selected
    assert counted["sparsity_prunable"] == pytest.approx(result.info["achieved_sparsity"]) == pytest.approx(0.5)
    # new zeros over all parameters (every one, the shared block too, counted once): the pruned weights
    assert counted["params_total"] == before["params_total"]
    assert before["params_nonzero"] - counted["params_nonzero"] == result.info["pruned_weights"]
    blocks = [layer.attention.inner_attention for layer in model.encoder.layers]
    assert blocks[0] is blocks[1]
    for role in ("self_attention", "cross_attention"):
        decoder = [getattr(layer, role).inner_attention for layer in model.decoder.layers]
        assert all(b is decoder[0] for b in decoder)
    assert torch.isfinite(model(*_fedformer_context().example_inputs)).all()
