"""Property-based spec fuzzing: every mutated spec is accepted or rejected with exit 2 and located lines, never a
traceback; and whatever the JSON Schema of `tsbench schema` rejects, `tsbench validate` rejects too.

The default suite runs 30 cases; the fault figure of docs/reliability.md (``-m long``) runs 1000.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from tsbench_testing import tiny_spec

from tsbench_core.cli import main
from tsbench_core.registry import load_plugins
from tsbench_core.spec import spec_json_schema


def rich_spec() -> dict[str, Any]:
    """A valid spec touching most fields: grid sparsities, fine-tuning, INT8, plugin params of every kind."""
    spec = tiny_spec(name="rich")
    spec["models"] = [{"plugin": "dlinear", "params": {"moving_avg": 5}, "training": {"lr": 0.01}}]
    spec["pruning"] = [
        {"pruner": "magnitude", "sparsities": {"density_base": 0.8, "n_from": 1, "n_to": 2},
         "params": {"scope": "layer"}, "fine_tune": {"epochs": 1, "lr": 1e-4}},
        {"pruner": "gradual-magnitude", "sparsities": [0.5], "params": {"epochs": 2, "scope": "global"}},
        {"pruner": "nm", "sparsities": [0.5], "quantize": {"method": "static-int8", "calibration_batches": 2}},
    ]
    spec["runtimes"] = [{"plugin": "torch-eager", "params": {"deploy_form": False}}, {"plugin": "onnxruntime"}]
    return spec


BASES = [tiny_spec(), rich_spec()]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every member path of a JSON document (dict keys and list indices)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*prefix, i))
    return found


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated_specs(draw) -> str:
    """The text of a spec file: a valid spec with one to three members replaced, deleted or added, or the
    text itself damaged."""
    spec = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(spec) or [()]))
        parent: Any = spec
        for part in where[:-1]:
            parent = parent[part]
        last = where[-1] if where else None
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if last is None or action == "add":
            target = parent if isinstance(parent, dict) else spec
            target[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
        elif action == "replace":
            parent[last] = draw(JSON_VALUES)
        elif isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    text = json.dumps(spec)
    damage = draw(st.sampled_from(["none"] * 8 + ["truncate", "garbage", "top-level"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text) - 1))]
    elif damage == "garbage":
        text = draw(st.text(max_size=40))
    elif damage == "top-level":
        text = json.dumps(draw(JSON_VALUES))
    return text


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(spec_json_schema(load_plugins()))


def validate(text: str) -> tuple[Any, str, Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed.json"
        path.write_text(text)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code: Any = main(["validate", str(path)])
            except BaseException as exc:  # would reach the user as a traceback
                code = f"raised {type(exc).__name__}: {exc}"
        return code, err.getvalue(), path


def check(text: str, validator) -> None:
    code, err, path = validate(text)
    event(f"validate exit {code}")  # the split shown by --hypothesis-show-statistics (docs/reliability.md)
    assert code in (0, 2), f"validate gave {code!r} for {text!r}"
    assert "Traceback" not in err
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and lines[0].startswith("error: ")
        lines[0] = lines[0][len("error: "):]
        for line in lines:  # every problem located: file, then where in it, then what
            assert line.startswith(f"{path}: "), line
            assert len(line[len(f"{path}: "):].split(": ", 1)) == 2, line
    try:
        data = json.loads(text)
    except ValueError:
        assert code == 2
        return
    schema_rejects = isinstance(data, dict) and not validator.is_valid(data)
    event(f"JSON Schema {'rejects' if schema_rejects else 'accepts'}")
    if schema_rejects:
        assert code == 2, f"the JSON Schema rejects {text!r} but validate accepts it"


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                derandomize=True, database=None)


def with_member(key: str, value: Any) -> str:
    return json.dumps({**tiny_spec(), key: value})


@settings(FUZZ, max_examples=30)
@given(text=mutated_specs())
@example(text=with_member("\n", None))  # found by the 1000-case run: a key with a newline split its location
@example(text=with_member("[/]", 1))  # rich markup in a key
@example(text=json.dumps({**tiny_spec(), "models": [{"plugin": "dlinear", "params": {"a\nb: c": 1}}]}))
def test_fuzzed_specs_are_accepted_or_rejected_with_located_lines(text, validator):
    check(text, validator)


@pytest.mark.long
@settings(FUZZ, max_examples=1000)
@given(text=mutated_specs())
def test_a_thousand_fuzzed_specs(text, validator):
    check(text, validator)


def test_the_base_specs_are_valid(validator):
    for spec in BASES:
        assert validator.is_valid(spec)
        assert validate(json.dumps(spec))[0] == 0
