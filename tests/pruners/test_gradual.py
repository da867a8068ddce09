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


def _real_context(registry, calls):
    """The cell's own training loop (train_model with best-epoch restore) on a small synthetic series."""
    from tsbench_core.data import Windows
    from tsbench_core.spec import TrainingConfig
    from tsbench_core.steps.prune import prune_context

    dataset = registry.records["dataset"]["synthetic"].plugin
    splits = dataset.load(dataset.params_model(length=400, n_vars=2, periods=[12]), Windows(16, 8, 8), None)
    model_plugin = registry.records["model"]["dlinear"].plugin
    params = model_plugin.params_model()
    training = TrainingConfig(epochs=1, batch_size=16, lr=1e-3, patience=5, max_train_batches=4)
    context = prune_context("dlinear", params, splits, training, 0, None)
    real_train = context.train

    def train(model, **kwargs):
        kept = {n: p.detach().clone() for n, p in model.named_parameters()}
        outcome = real_train(model, **kwargs)
        calls.append({"kwargs": kwargs, "outcome": outcome, "before": kept})
        return outcome

    context.train = train
    torch.manual_seed(0)
    return model_plugin.build(params, splits.shape), context


@pytest.mark.parametrize("end_epoch", [2.0, 3.0])
def test_the_stored_model_is_trained_under_its_final_mask(registry, one_torch_thread, monkeypatch, tmp_path,
                                                          end_epoch):
    monkeypatch.chdir(tmp_path)
    calls = []
    model, context = _real_context(registry, calls)
    params = PRUNER.params_model(epochs=3, lr=1e-3, end_epoch=end_epoch, init_sparsity=0.1)
    result = PRUNER.prune(model, 0.5, params, context)
    info = result.info
    zeros = {n: (p == 0) for n, p in model.named_parameters() if n in result.masks}
    total = sum(int(z.sum()) for z in zeros.values()) / sum(z.numel() for z in zeros.values())
    assert total == pytest.approx(0.5, abs=0.01)
    assert calls[0]["kwargs"]["select_from_epoch"] == 2  # candidates: epochs after the last sparsity update
    assert calls[0]["outcome"]["best_epoch"] >= 2
    if end_epoch == 2.0:  # a full epoch ran under the final mask: that is the model kept
        assert info["sparsity_of_kept_weights"] == pytest.approx(0.5, abs=0.01)
        assert info["masked_by_finalize"] is False and info["fine_tuned_under_final_mask"] is None
        assert len(calls) == 1
    else:  # the last update falls in the last epoch: fine-tuned again, under the final mask
        assert "no full epoch" in info["fine_tuned_under_final_mask_because"]
        assert len(calls) == 2
        retrain = calls[1]["kwargs"]
        assert retrain["epochs"] == params.final_epochs
        assert all(torch.equal(retrain["masks"][n], ~zeros[n]) for n in zeros)
        moved = any(not torch.equal(p.detach(), calls[1]["before"][n]) for n, p in model.named_parameters())
        assert moved and info["fine_tuned_under_final_mask"]["epochs_run"] == params.final_epochs


def test_bench_runs_gradual_magnitude_through_the_pipeline(capsys):
    """`tsbench bench` trains through the cell's loop now (#17): GMP reaches its target there."""
    import json

    from tsbench_core.cli import main

    code = main(["bench", "--model", "dlinear", "--pruner", "gradual-magnitude", "--sparsity", "0.5",
                 "--pruner-params", '{"epochs": 1, "end_epoch": 0.5, "max_train_batches": 2}', "--repeats", "1",
                 "--warmup", "0", "--batch-size", "2", "--seq-len", "16", "--label-len", "8", "--pred-len", "8",
                 "--json"])
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err
    (row,) = json.loads(out.out)
    assert row["status"] == "ok" and row["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert row["prune_info"]["candidate_epochs_from"] == 0  # a single epoch, after its last update
