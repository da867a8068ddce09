"""Spec validation: structure, plugin names, plugin params, all located as file: json.path: message."""

from __future__ import annotations

from pathlib import Path

import pytest
from tsbench_testing import REPO, tiny_spec

from tsbench_core.cells import DENSE, expand
from tsbench_core.spec import SpecProblems, load_spec


def problems_of(path: Path, registry) -> list[str]:
    with pytest.raises(SpecProblems) as err:
        load_spec(path, registry)
    assert all(line.startswith(f"{path}: ") for line in str(err.value).splitlines())
    return err.value.problems


def test_every_shipped_spec_is_valid(registry):
    paths = sorted((REPO / "specs").rglob("*.json"))
    assert paths, "specs/ holds no spec"
    for path in paths:
        load_spec(path, registry)


def test_unknown_plugin_names_are_located_with_closest_match(write_spec, registry):
    spec = tiny_spec(models=[{"plugin": "dlinear"}, {"plugin": "transfomer"}],
                     runtimes=[{"plugin": "onnx-runtime"}])
    problems = problems_of(write_spec(spec), registry)
    assert any(p.startswith("models[1].plugin: unknown model 'transfomer'; did you mean 'transformer'?")
               for p in problems)
    assert any(p.startswith("runtimes[0].plugin: unknown runtime 'onnx-runtime'") for p in problems)


def test_plugin_params_are_validated_before_anything_runs(write_spec, registry):
    spec = tiny_spec(models=[{"plugin": "transformer", "params": {"d_model": "wide", "n_layers": 3}}])
    problems = problems_of(write_spec(spec), registry)
    assert any(p.startswith("models[0].params.d_model:") and "'wide'" in p for p in problems)
    assert any(p.startswith("models[0].params.n_layers: Extra inputs are not permitted") for p in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "file is empty"),
        ("[1, 2]", "a spec must be a JSON object, got list"),
        ('{"name": "x",', "line 1 column 14: not valid JSON"),
    ],
)
def test_not_a_spec_at_all(write_spec, registry, text, expected):
    assert expected in problems_of(write_spec(text), registry)[0]


def test_structural_mistakes_are_all_reported(write_spec, registry):
    spec = tiny_spec(pruning=[{"pruner": "magnitude", "sparsities": [0.5, 1.0]}], colour="blue")
    spec["datasets"][0]["label_len"] = 99
    problems = problems_of(write_spec(spec), registry)
    assert "pruning[0].sparsities[1]: Input should be less than 1 (got 1.0)" in problems
    assert "colour: Extra inputs are not permitted (got 'blue')" in problems
    assert any(p.startswith("datasets[0]: Value error, label_len (99) cannot exceed seq_len (16)") for p in problems)


def test_geometric_grid_gives_the_study_densities(write_spec, registry):
    spec = tiny_spec(pruning=[{"pruner": "magnitude", "sparsities": {"density_base": 0.8, "n_from": 1, "n_to": 9}}])
    loaded = load_spec(write_spec(spec), registry)
    sparsities = loaded.pruning[0].sparsity_list()
    assert len(sparsities) == 9
    assert sparsities[0] == pytest.approx(0.2) and sparsities[-1] == pytest.approx(1 - 0.8**9, abs=1e-6)


def test_expansion_adds_dense_references_and_keys_are_stable(write_spec, registry):
    spec = tiny_spec(sparsities=[0.3, 0.6], models=[{"plugin": "dlinear"}, {"plugin": "dlinear", "params": {}}])
    spec["datasets"][0]["pred_len"] = [4, 8]
    spec["timing"]["batch_sizes"] = [1, 4]
    loaded = load_spec(write_spec(spec), registry)
    cells = expand(loaded, registry)
    # 2 horizons x 1 distinct model x (dense + 2 sparsities) x 1 runtime x 2 batch sizes; the duplicate model
    # entry (same validated params) collapses into the same cells
    assert len(cells) == 2 * 3 * 2
    assert sum(c.prune.pruner == DENSE for c in cells) == 4
    again = expand(load_spec(write_spec(spec, "copy.json"), registry), registry)
    assert [c.key for c in cells] == [c.key for c in again]
    pruned = next(c for c in cells if c.prune.pruner != DENSE)
    assert pruned.dense_key in {c.key for c in cells}
    assert pruned.prune.train.key == pruned.prune.dense.key


def test_per_model_training_overrides_are_validated_and_applied(write_spec, registry):
    spec = tiny_spec(models=[{"plugin": "dlinear", "training": {"lr": 0.005}}, {"plugin": "transformer"}])
    loaded = load_spec(write_spec(spec), registry)
    trainings = {c.prune.train.model: c.prune.train.training for c in expand(loaded, registry)}
    assert trainings["dlinear"].lr == 0.005 and trainings["transformer"].lr == 0.001
    assert trainings["dlinear"].epochs == trainings["transformer"].epochs == 1
    bad = tiny_spec(models=[{"plugin": "dlinear", "training": {"lr": -1, "epoch": 3}}])
    problems = problems_of(write_spec(bad, "bad.json"), registry)
    assert "models[0].training.lr: Input should be greater than 0 (got -1)" in problems
    assert "models[0].training.epoch: Extra inputs are not permitted (got 3)" in problems
