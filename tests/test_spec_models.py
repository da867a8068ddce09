"""Validation-time checks of pruning entries against built models (tsbench_core.spec_models)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest

from tsbench_core.spec import parse_spec
from tsbench_core.spec_models import _data_shape, check_pruners_against_models

SPECS = Path(__file__).resolve().parents[1] / "specs"
TRANSFORMER = {"plugin": "transformer", "params": {"d_model": 16, "n_heads": 2, "e_layers": 1, "d_layers": 1,
                                                   "d_ff": 32}}


@lru_cache(maxsize=1)
def _registry():
    from tsbench_core.registry import load_plugins

    return load_plugins()


def _spec(pruning: list[dict], models: list[dict] | None = None, dataset_params: dict | None = None):
    raw = {
        "name": "t",
        "datasets": [{"plugin": "synthetic", "params": dataset_params or {"n_vars": 3}, "seq_len": 32,
                      "label_len": 16, "pred_len": [8, 16]}],
        "models": models or [TRANSFORMER],
        "pruning": pruning,
    }
    # Structure only: validate_against itself runs the model checks these tests call directly.
    return parse_spec(json.dumps(raw), "t.json")


def _problems(spec) -> list[str]:
    return check_pruners_against_models(spec, _registry(), "t.json")


def test_valid_entries_give_no_problem():
    spec = _spec([
        {"pruner": "magnitude", "sparsities": [0.5], "params": {"exclude": ["*.projection"]}},
        {"pruner": "structured", "sparsities": {"density_base": 0.8, "n_from": 1, "n_to": 9}},
        {"pruner": "nm", "sparsities": [0.5]},
    ], models=[TRANSFORMER, {"plugin": "fedformer", "params": {"d_model": 16, "n_heads": 2, "modes": 4}}])
    assert _problems(spec) == []


def test_pattern_matching_nothing_is_located_with_the_model():
    spec = _spec([
        {"pruner": "magnitude", "sparsities": [0.5]},
        {"pruner": "magnitude", "sparsities": [0.5], "params": {"exclude": ["encoder.nothing.*"]}},
    ])
    problems = _problems(spec)
    assert len(problems) == 1
    assert problems[0].startswith("pruning[1].params.exclude: with models[0] (transformer): ")
    assert "'encoder.nothing.*' matches no module" in problems[0]


def test_selection_leaving_nothing_to_prune():
    spec = _spec([{"pruner": "random", "sparsities": [0.5], "params": {"include": ["*.projection"]}}])
    problems = _problems(spec)
    assert len(problems) == 1 and "left to prune" in problems[0], problems


def test_structured_on_a_model_without_inner_channels():
    spec = _spec([{"pruner": "structured", "sparsities": [0.5]}],
                 models=[TRANSFORMER, {"plugin": "dlinear", "params": {}}])
    problems = _problems(spec)
    assert len(problems) == 1, problems
    assert problems[0].startswith("pruning[0].pruner: with models[1] (dlinear): structured pruning finds no "
                                  "inner channel group")


def test_structured_excluding_every_group_of_a_model_is_traced():
    # the shortcut (an attention layer that exclude leaves alone) does not apply: the model is traced
    # (q/k head dims, v head dims and feed-forward channels are the transformer's inner groups)
    excluded = ["*.query_projection", "*.value_projection", "*.linear1"]
    spec = _spec([{"pruner": "structured", "sparsities": [0.5], "params": {"exclude": excluded}}])
    problems = _problems(spec)
    assert len(problems) == 1, problems
    assert problems[0].startswith("pruning[0].pruner: with models[0] (transformer): structured pruning finds no "
                                  "inner channel group")
    spec = _spec([{"pruner": "structured", "sparsities": [0.5], "params": {"exclude": excluded[:2]}}])
    assert _problems(spec) == []  # the feed-forward channels are left


def test_targets_a_pruner_cannot_reach():
    spec = _spec([
        {"pruner": "structured", "sparsities": [0.5, 0.95], "params": {"scope": "uniform"}},
        {"pruner": "nm", "sparsities": [0.5, 0.75]},
        {"pruner": "nm", "sparsities": {"density_base": 0.5, "n_from": 3, "n_to": 3}, "params": {"n": None}},
    ])
    problems = _problems(spec)
    assert problems[0].startswith("pruning[0].sparsities[1]: structured pruning with scope 'uniform' at 0.95")
    assert problems[1].startswith("pruning[1].sparsities[1]: pruner nm with n=2, m=4 gives sparsity 0.5")
    assert problems[2].startswith("pruning[2].sparsities: target sparsity 0.875 leaves 0 of every 4")
    assert len(problems) == 3


def test_invalid_names_and_params_are_left_to_validate_against():
    spec = _spec([{"pruner": "magnitude", "sparsities": [0.5]}])
    spec.pruning[0].pruner = "no-such-pruner"
    assert _problems(spec) == []
    spec.pruning[0].pruner = "magnitude"
    spec.pruning[0].params = {"scope": "galactic"}
    assert _problems(spec) == []


def test_shapes_without_reading_data():
    registry = _registry()
    synthetic = _spec([], dataset_params={"n_vars": 5, "features": "MS", "freq": "t"}).datasets[0]
    shape = _data_shape(synthetic, registry)
    assert (shape.enc_in, shape.c_out, shape.seq_len, shape.pred_len, shape.freq) == (5, 1, 32, 8, "t")
    etth1 = parse_spec(json.dumps({"name": "e", "datasets": [{"plugin": "etth1", "seq_len": 96, "label_len": 48,
                                                              "pred_len": 96}], "models": [TRANSFORMER]}),
                       "e.json").datasets[0]
    shape = _data_shape(etth1, registry)
    assert (shape.enc_in, shape.c_out, shape.freq) == (7, 7, "h")


@pytest.mark.parametrize("path", sorted(SPECS.glob("**/*.json")), ids=lambda p: p.name)
def test_shipped_specs_pass(path):
    from tsbench_core.spec import read_spec_file

    spec = read_spec_file(path)
    assert check_pruners_against_models(spec, _registry(), str(path)) == []


def test_a_check_failing_on_meta_runs_again_on_the_cpu():
    from tsbench_core.errors import UserError
    from tsbench_core.spec_models import _Models, _problem

    devices = []

    class MetaShy:
        def validate_for_model(self, model, params, example_inputs=None):
            device = next(model.parameters()).device
            devices.append((device.type, example_inputs[0].device.type))
            if device.type == "meta":
                raise NotImplementedError("no meta kernel")
            raise UserError("checked on the cpu")

    spec = _spec([])
    shape = _data_shape(spec.datasets[0], _registry())
    model_params = _registry().models["transformer"].params_model.model_validate(spec.models[0].params)
    assert _problem(MetaShy(), None, _Models(_registry()), spec.models[0], model_params, shape) == "checked on the cpu"
    assert devices == [("meta", "meta"), ("cpu", "cpu")]
