"""Quantizers are a plugin kind: registered through their hook, named by ``quantize.method``, blockable, in the
schema; and existing INT8 specs keep their cell keys (pinned with the code before quantizers were plugins)."""

from __future__ import annotations

import hashlib
import json

import pytest
from tsbench_testing import REPO, tiny_spec

from tsbench_core.cells import expand
from tsbench_core.hookspecs import hookimpl
from tsbench_core.pipeline import fine_tune_key, quantizer_of
from tsbench_core.protocols import FineTuningQuantizer, QuantizerPlugin
from tsbench_core.registry import load_plugins
from tsbench_core.spec import SpecProblems, load_spec, parse_spec, spec_json_schema, validate_against


def _digest(items: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(items)).encode()).hexdigest()


# sha256 of the sorted cell keys (and QAT keys), computed with main at dc974ed, before this change
PINNED_CELL_KEYS = {
    "specs/paper/etth1_int8.json": (96, "588c31e82e6aa671b78aead55ae75a76aec9da25247eec88dc552c770306b57f"),
    "specs/paper/etth1_int8_transformer.json": (32, "c8d51577099439ce97217e59f478a9776e8b97eaacdbb28ab28f067f462fe1ca"),
}
PINNED_QAT_KEYS = {  # etth1_int8_transformer: the pruned model's and the dense INT8 reference's QAT steps
    "specs/paper/etth1_int8_transformer.json": (2, "22b7ae7eecb2f33cbdca29dc638b16320d670b79549188e9f91f71b2e6468579"),
}


def test_the_builtin_quantizers_are_plugins_of_their_own_kind(registry) -> None:
    assert sorted(registry.quantizers) == ["sparseml-qat", "static-int8"]
    assert all(isinstance(p, QuantizerPlugin) for p in registry.quantizers.values())
    assert isinstance(registry.quantizers["sparseml-qat"], FineTuningQuantizer)
    assert not isinstance(registry.quantizers["static-int8"], FineTuningQuantizer)
    sources = {rec.source for rec in registry.records["quantizer"].values()}
    assert sources == {"built-in sparse_runtime.quantizers"}


@pytest.mark.parametrize("path", sorted(PINNED_CELL_KEYS))
def test_existing_int8_specs_keep_their_cell_keys(registry, path) -> None:
    cells = expand(load_spec(REPO / path, registry), registry)
    count, digest = PINNED_CELL_KEYS[path]
    assert (len(cells), _digest([c.key for c in cells])) == (count, digest)


def test_qat_steps_keep_their_keys(registry) -> None:
    path = "specs/paper/etth1_int8_transformer.json"
    cells = expand(load_spec(REPO / path, registry), registry)
    ws = _Ws(registry)
    keys = {fine_tune_key(c, quantizer_of(ws, c)) for c in cells
            if c.quantize is not None and isinstance(quantizer_of(ws, c), FineTuningQuantizer)}
    count, digest = PINNED_QAT_KEYS[path]
    assert (len(keys), _digest(list(keys))) == (count, digest)


class _Ws:  # the one thing ``quantizer_of`` asks of a workspace
    def __init__(self, registry) -> None:
        self._registry = registry

    def plugins(self):
        return self._registry


def _int8_spec(method: str) -> dict:
    spec = tiny_spec(name="q")
    spec["pruning"].append({"pruner": "magnitude", "sparsities": [0.5], "quantize": {"method": method}})
    return spec


def test_an_unknown_method_is_located_with_the_closest_quantizer(registry) -> None:
    spec = parse_spec(json.dumps(_int8_spec("static-int9")), "s.json")
    with pytest.raises(SpecProblems) as info:
        validate_against(spec, registry, "s.json")
    assert info.value.problems == ["pruning[1].quantize.method: unknown quantizer 'static-int9'; did you mean "
                                   "'static-int8'? (valid: sparseml-qat, static-int8)"]


def test_blocking_the_builtin_quantizers_leaves_the_runtimes(monkeypatch) -> None:
    monkeypatch.setenv("TSBENCH_BLOCK_PLUGINS", "sparse_runtime.quantizers")
    blocked = load_plugins()
    assert not blocked.quantizers and "onnxruntime" in blocked.runtimes
    assert blocked.blocked == ["sparse_runtime.quantizers (built-in)"]
    spec = parse_spec(json.dumps(_int8_spec("static-int8")), "s.json")
    with pytest.raises(SpecProblems, match=r"pruning\[1\]\.quantize\.method: unknown quantizer 'static-int8'"):
        validate_against(spec, blocked, "s.json")


class _Rounding:
    """A third-party quantizer (it only has to be registered to be a valid ``method``)."""

    name = "rounding"
    description = "test quantizer"

    def __init__(self, params_model) -> None:
        self.params_model = params_model

    def quantize(self, config, job):
        raise NotImplementedError


def test_a_third_party_quantizer_is_a_valid_method_and_in_the_schema(registry) -> None:
    params_model = registry.quantizers["static-int8"].params_model

    class Plugin:
        @hookimpl
        def tsbench_register_quantizers(self, register) -> None:
            register(_Rounding(params_model))

    extended = load_plugins(extra=(Plugin(),))
    assert not extended.load_errors and "rounding" in extended.quantizers
    validate_against(parse_spec(json.dumps(_int8_spec("rounding")), "s.json"), extended, "s.json")
    schema = spec_json_schema(extended)
    assert schema["$defs"]["QuantizeConfig"]["properties"]["method"]["enum"] == ["rounding", "sparseml-qat",
                                                                                 "static-int8"]
    assert set(schema["x-tsbench-plugins"]["quantizer"]) == {"rounding", "sparseml-qat", "static-int8"}


def test_a_quantizer_without_quantize_is_a_load_error(registry) -> None:
    class Broken:
        name, description = "broken", "no quantize method"
        params_model = registry.quantizers["static-int8"].params_model

    class Plugin:
        @hookimpl
        def tsbench_register_quantizers(self, register) -> None:
            register(Broken())

    loaded = load_plugins(extra=(Plugin(),))
    assert "broken" not in loaded.quantizers
    assert any("does not implement QuantizerPlugin: missing quantize" in e.error for e in loaded.load_errors)


def test_which_fields_a_method_takes_is_its_quantizers_rule(registry) -> None:
    from tsbench_core.spec import QuantizeConfig

    class Plugin:
        @hookimpl
        def tsbench_register_quantizers(self, register) -> None:
            register(_Rounding(QuantizeConfig))  # takes every field

    extended = load_plugins(extra=(Plugin(),))
    for method, problems in (("rounding", []), ("static-int8", ["only for method 'sparseml-qat'"])):
        spec = tiny_spec(name="q")
        spec["pruning"].append({"pruner": "magnitude", "sparsities": [0.5],
                                "quantize": {"method": method, "epochs": 3}})
        parsed = parse_spec(json.dumps(spec), "s.json")
        if not problems:
            validate_against(parsed, extended, "s.json")
            assert {c.quantize.epochs for c in expand(parsed, extended) if c.quantize is not None} == {3}
            continue
        with pytest.raises(SpecProblems) as info:
            validate_against(parsed, extended, "s.json")
        assert len(info.value.problems) == 1 and info.value.problems[0].startswith("pruning[1].quantize: ")
        assert problems[0] in info.value.problems[0]
