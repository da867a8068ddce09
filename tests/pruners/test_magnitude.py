"""magnitude and random: exact sparsity, excluded output projection, baked zeros, masks through training."""

from __future__ import annotations

import pytest
import torch
from pruner_toy import ToyForecaster, toy_context, toy_inputs, train_with_masks

from plugins.pruners.magnitude import MagnitudePruner, RandomPruner
from tsbench_core.errors import CellError, UserError

PRUNERS = [MagnitudePruner(), RandomPruner()]


def _prunable(model):
    names = model.named_parameters()
    return {n: p for n, p in names if n.endswith("weight") and not n.startswith("projection")}


@pytest.mark.parametrize("pruner", PRUNERS, ids=lambda p: p.name)
@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("target", [0.2, 0.5, 0.9])
def test_sparsity_reached_and_projection_kept(pruner, scope, target):
    torch.manual_seed(0)
    model = ToyForecaster()
    result = pruner.prune(model, target, pruner.params_model(scope=scope), toy_context())
    weights = _prunable(model)
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert abs(zeros / total - target) < 0.01
    assert abs(result.info["achieved_sparsity"] - target) < 0.01
    assert int((model.projection.weight == 0).sum()) == 0
    assert set(result.masks) == set(weights)
    if scope == "layer":
        for w in weights.values():
            assert abs(float((w == 0).float().mean()) - target) <= 1.0 / w.numel() + 1e-9
    out = model(*toy_inputs())
    assert out.shape == (2, 4, 3) and torch.isfinite(out).all()
    assert not any("orig" in n for n, _ in model.named_parameters())


def test_global_magnitude_removes_smallest_weights():
    torch.manual_seed(0)
    model = ToyForecaster()
    before = torch.cat([w.detach().abs().flatten() for w in _prunable(model).values()])
    MagnitudePruner().prune(model, 0.5, MagnitudePruner.params_model(), toy_context())
    after = torch.cat([w.detach().flatten() for w in _prunable(model).values()])
    removed, kept = before[after == 0], before[after != 0]
    assert removed.max() <= kept.min()


def test_random_depends_on_seed():
    masks = []
    for seed in (0, 0, 1):
        model = ToyForecaster()
        result = RandomPruner().prune(model, 0.5, RandomPruner.params_model(), toy_context(seed=seed))
        masks.append(result.masks)
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    assert not all(torch.equal(masks[0][n], masks[2][n]) for n in masks[0])


@pytest.mark.parametrize("pruner", PRUNERS, ids=lambda p: p.name)
def test_zeros_survive_fine_tuning(pruner):
    torch.manual_seed(0)
    model = ToyForecaster()
    result = pruner.prune(model, 0.6, pruner.params_model(), toy_context())
    losses = train_with_masks(model, result.masks, steps=5)
    assert all(torch.isfinite(torch.tensor(losses)))
    params = dict(model.named_parameters())
    for name, mask in result.masks.items():
        assert torch.all(params[name][~mask] == 0)
        assert torch.any(params[name][mask] != 0)


def test_exclude_empty_prunes_projection_and_module_types():
    model = ToyForecaster()
    params = MagnitudePruner.params_model(exclude=[], module_types=["Linear"])
    result = MagnitudePruner().prune(model, 0.5, params, toy_context())
    assert "projection.weight" in result.masks and "embed.weight" not in result.masks


def test_pattern_matching_nothing_is_an_error():
    params = MagnitudePruner.params_model(exclude=["decoder.nothing*"])
    with pytest.raises(CellError, match="matches no module"):
        MagnitudePruner().prune(ToyForecaster(), 0.5, params, toy_context())


def test_nothing_left_to_prune_is_an_error():
    params = MagnitudePruner.params_model(include=["projection"])
    with pytest.raises(CellError, match="left to prune"):
        MagnitudePruner().prune(ToyForecaster(), 0.5, params, toy_context())


def test_bad_params_and_target():
    with pytest.raises(ValueError):
        MagnitudePruner.params_model(scope="row")
    with pytest.raises(ValueError):
        MagnitudePruner.params_model(include=[""])
    with pytest.raises(ValueError):
        MagnitudePruner.params_model(bogus=1)
    with pytest.raises(UserError):
        MagnitudePruner().prune(ToyForecaster(), 1.0, MagnitudePruner.params_model(), toy_context())


def test_onnx_export_after_pruning(tmp_path):
    pytest.importorskip("onnx")
    model = ToyForecaster().eval()
    MagnitudePruner().prune(model, 0.7, MagnitudePruner.params_model(), toy_context())
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, toy_inputs(), str(path), dynamo=False)
    assert path.stat().st_size > 0


def test_validate_for_model_reports_user_error():
    with pytest.raises(UserError, match="exclude"):
        MagnitudePruner().validate_for_model(ToyForecaster(), MagnitudePruner.params_model(exclude=["nope"]))
    MagnitudePruner().validate_for_model(ToyForecaster(), MagnitudePruner.params_model(exclude=["time"]))
