"""gradual-magnitude: the SparseML GMP schedule reaches the target through the training loop, zeros are kept,
torch.compile is left as it was, recipes from params or from a file, bad params rejected."""

from __future__ import annotations

import pytest
import torch
from pruner_toy import ToyForecaster, toy_context, toy_inputs, toy_train, train_with_masks

from plugins.pruners.gradual import GradualMagnitudePruner, build_recipe

PRUNER = GradualMagnitudePruner()
pytestmark = pytest.mark.skipif(not PRUNER.availability().available, reason=PRUNER.availability().reason)


def _prunable(model):
    return [p for n, p in model.named_parameters() if n.endswith("weight") and not n.startswith("projection")]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_schedule_reaches_target_during_training(scope, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    compile_before = torch.compile
    steps = []

    def train(model, **kwargs):
        return toy_train(model, on_step=steps.append, **kwargs)

    model = ToyForecaster()
    result = PRUNER.prune(model, 0.6, PRUNER.params_model(epochs=3, scope=scope), toy_context(train=train))
    assert torch.compile is compile_before
    assert not (tmp_path / "sparse_logs").exists()
    assert len(steps) == 3 * 6  # the whole fine-tuning ran through context.train
    weights = _prunable(model)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.6, abs=0.01)
    assert result.info["achieved_sparsity"] == pytest.approx(0.6, abs=0.01)
    if scope == "layer":
        assert all(abs(float((w == 0).float().mean()) - 0.6) < 0.02 for w in weights)
    assert int((model.projection.weight == 0).sum()) == 0
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    out = model(*toy_inputs())
    assert out.shape == (2, 4, 3) and torch.isfinite(out).all()
    train_with_masks(model, result.masks, steps=3)
    params = dict(model.named_parameters())
    assert all(torch.all(params[n][~m] == 0) for n, m in result.masks.items())


def test_user_recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names = ["body.0.weight", "body.2.weight"]
    recipe = tmp_path / "recipe.yaml"
    params = GradualMagnitudePruner.params_model(epochs=2, end_epoch=1.5, scope="layer")
    recipe.write_text(build_recipe(names, 0.5, params))
    model = ToyForecaster()
    user = PRUNER.params_model(epochs=2, recipe=str(recipe))
    result = PRUNER.prune(model, 0.5, user, toy_context(train=toy_train))
    assert result.info["recipe"] == str(recipe)
    assert float((model.body[0].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.02)
    assert int((model.time.weight == 0).sum()) == 0  # not named in the user's recipe


def test_bad_params():
    with pytest.raises(ValueError, match="does not exist"):
        PRUNER.params_model(recipe="/nonexistent/recipe.yaml")
    with pytest.raises(ValueError, match="beyond"):
        PRUNER.params_model(epochs=2, end_epoch=3)
    with pytest.raises(ValueError, match="after"):
        PRUNER.params_model(epochs=3, start_epoch=2, end_epoch=1)
