"""`tsbench schema` enforces plugin params: the same bad specs are rejected by `tsbench validate` and `jsonschema`."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from tsbench_testing import REPO, tiny_spec

from tsbench_core.cli import main
from tsbench_core.spec import spec_json_schema


def edited(path: str, value, spec=None):
    """``tiny_spec`` with the member at dotted ``path`` (list items as numbers) set to ``value``."""
    spec = copy.deepcopy(spec or tiny_spec())
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = spec
    for part in parents:
        node = node[part]
    node[last] = value
    return spec


def transformer(**params):
    return edited("models", [{"plugin": "transformer", "params": params}])


def gradual(**params):
    return edited("pruning", [{"pruner": "gradual-magnitude", "sparsities": [0.5], "params": params}])


# (bad spec, where `tsbench validate` must locate the problem)
BAD_SPECS = {
    "model param of the wrong type": (transformer(d_model="wide"), "models[0].params.d_model"),
    "unknown model param": (transformer(d_modle=64), "models[0].params.d_modle"),
    "pruner param outside its choices": (gradual(scope="galactic"), "pruning[0].params.scope"),
    "pruner param out of range": (gradual(init_sparsity=1.5), "pruning[0].params.init_sparsity"),
    "unknown runtime param": (edited("runtimes", [{"plugin": "torch-eager", "params": {"fast": True}}]),
                              "runtimes[0].params.fast"),
    "dataset param of the wrong type": (edited("datasets.0.params.length", "long"), "datasets[0].params.length"),
    "unknown plugin": (edited("models", [{"plugin": "dlinearr"}]), "models[0].plugin"),
    "unknown top-level key": (edited("seedz", 3), "seedz"),
    "sparsity of 1.5": (edited("pruning.0.sparsities", [1.5]), "pruning[0].sparsities"),
    "missing seq_len": ({**tiny_spec(), "datasets": [{"plugin": "synthetic", "label_len": 8, "pred_len": 8}]},
                        "datasets[0].seq_len"),
    "model training override of the wrong type": (edited("models.0.training", {"epochs": "many"}),
                                                  "models[0].training.epochs"),
}


@pytest.fixture(scope="module")
def validator(registry):
    schema = spec_json_schema(registry)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_names_its_dialect_and_discriminates_on_the_plugin(registry):
    schema = spec_json_schema(registry)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    models = schema["$defs"]["ModelEntry"]
    assert models["discriminator"]["propertyName"] == "plugin"
    assert sorted(models["discriminator"]["mapping"]) == sorted(registry.records["model"])


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_validate_and_jsonschema_both_reject_the_same_bad_spec(case, validator, write_spec, capsys):
    spec, location = BAD_SPECS[case]
    assert not validator.is_valid(spec)
    assert main(["validate", str(write_spec(spec))]) == 2
    err = capsys.readouterr().err
    assert location in err and "Traceback" not in err


def test_every_shipped_spec_is_valid_for_the_schema(validator):
    """Every spec in specs/ (which `tsbench validate` accepts, see test_spec.py) passes the schema too."""
    paths = sorted((REPO / "specs").rglob("*.json"))
    assert paths
    for path in paths:
        assert [e.message for e in validator.iter_errors(json.loads(path.read_text()))] == [], path


def test_a_horizon_given_as_a_bare_integer_is_valid_for_both(validator, write_spec):
    spec = edited("datasets.0.pred_len", 8)
    assert validator.is_valid(spec)
    assert main(["validate", str(write_spec(spec))]) == 0
