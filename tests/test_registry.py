"""The plugin host: built-ins, entry points, broken and duplicate plugins, autoload switches."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tsbench_core.errors import PluginError, UserError
from tsbench_core.registry import load_plugins


def make_distribution(root: Path, dist: str, module: str, body: str, entry_name: str | None = None) -> None:
    """A minimal installed distribution on ``root``: a module and a dist-info with a tsbench entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[tsbench]\n{entry_name or module} = {module}\n")


GOOD_PLUGIN = """
    from torch import nn
    from tsbench_core import hookimpl
    from tsbench_core.protocols import NoParams

    class Mean:
        name = "{name}"
        description = "mean of the history"
        params_model = NoParams

        def build(self, params, shape):
            return nn.Identity()

    @hookimpl
    def tsbench_register_models(register):
        register(Mean())
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TSBENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("TSBENCH_PLUGINS", raising=False)
    monkeypatch.delenv("TSBENCH_BLOCK_PLUGINS", raising=False)
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("tsb_test_")]:
        del sys.modules[name]


def test_builtins_cover_every_kind(registry):
    assert {"synthetic", "etth1"} <= set(registry.datasets)
    assert {"dlinear", "transformer"} <= set(registry.models)
    assert "magnitude" in registry.pruners
    assert "torch-eager" in registry.runtimes
    record = registry.records["model"]["dlinear"]
    assert record.distribution == "tsbench" and record.source == "built-in plugins.models"


def test_entry_point_plugin_is_found_with_its_distribution(site):
    make_distribution(site, "tsb-good", "tsb_test_good", GOOD_PLUGIN.format(name="mean-model"))
    registry = load_plugins()
    record = registry.records["model"]["mean-model"]
    assert (record.distribution, record.version) == ("tsb-good", "1.2.3")
    assert not registry.load_errors


def test_broken_plugin_is_reported_and_skipped(site):
    make_distribution(site, "tsb-broken", "tsb_test_broken", "raise RuntimeError('boom at import')\n")
    make_distribution(site, "tsb-good", "tsb_test_good2", GOOD_PLUGIN.format(name="still-here"))
    registry = load_plugins()
    assert "still-here" in registry.models
    assert "dlinear" in registry.models
    [error] = registry.load_errors
    assert error.distribution == "tsb-broken"
    assert "tsb_test_broken" in error.entry_point
    assert "RuntimeError: boom at import" in error.error


def test_plugin_object_missing_its_protocol_is_reported(site):
    body = """
        from tsbench_core import hookimpl

        class NotAModel:
            name = "half"
            description = "no build()"
            params_model = dict

        @hookimpl
        def tsbench_register_models(register):
            register(NotAModel())
    """
    make_distribution(site, "tsb-half", "tsb_test_half", body)
    registry = load_plugins()
    assert "half" not in registry.models
    error = registry.load_errors[0].error
    assert "the model plugin 'half' (tsb_test_half.NotAModel) does not implement ModelPlugin: missing build" in error
    assert " at 0x" not in error


def test_protocol_members_are_what_the_protocols_declare():
    from tsbench_core.protocols import ModelPlugin, RuntimePlugin
    from tsbench_core.registry import protocol_members

    assert {"name", "description", "params_model", "build"} <= set(protocol_members(ModelPlugin))
    assert {"prepare", "versions", "device"} <= set(protocol_members(RuntimePlugin))
    assert "availability" not in protocol_members(RuntimePlugin)  # optional: HasAvailability


def test_duplicate_names_name_both_distributions(site):
    make_distribution(site, "tsb-dup", "tsb_test_dup", GOOD_PLUGIN.format(name="dlinear"))
    with pytest.raises(PluginError) as err:
        load_plugins()
    assert "tsbench" in str(err.value) and "tsb-dup" in str(err.value) and "'dlinear'" in str(err.value)


def test_autoload_can_be_disabled_and_restricted(site, monkeypatch):
    make_distribution(site, "tsb-a", "tsb_test_a", GOOD_PLUGIN.format(name="model-a"), entry_name="a")
    make_distribution(site, "tsb-b", "tsb_test_b", GOOD_PLUGIN.format(name="model-b"), entry_name="b")
    monkeypatch.setenv("TSBENCH_PLUGINS", "a")
    assert "model-a" in load_plugins().models and "model-b" not in load_plugins().models
    monkeypatch.setenv("TSBENCH_PLUGINS", "tsb-b")
    assert "model-b" in load_plugins().models and "model-a" not in load_plugins().models
    monkeypatch.delenv("TSBENCH_PLUGINS")
    monkeypatch.setenv("TSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = load_plugins()
    assert not {"model-a", "model-b"} & set(registry.models)
    assert "dlinear" in registry.models  # built-ins are not entry-point autoloading


def test_unknown_name_lists_valid_ones_and_closest(registry):
    with pytest.raises(UserError) as err:
        registry.get("model", "trasformer")
    assert "did you mean 'transformer'?" in str(err.value)
    assert "dlinear" in str(err.value)


def test_public_api_builds_a_model_and_loads_a_dataset():
    import torch

    from tsbench_core import build_model, load_dataset

    model = build_model("dlinear", seq_len=24, pred_len=12, enc_in=3)
    out = model(torch.randn(2, 24, 3), torch.zeros(2, 24, 4), torch.zeros(2, 18, 3), torch.zeros(2, 18, 4))
    assert out.shape == (2, 12, 3)
    splits = load_dataset("synthetic", seq_len=24, label_len=12, pred_len=12, length=300, n_vars=3)
    assert splits.shape.enc_in == 3 and len(splits.train) > 0


def test_a_builtin_can_be_blocked_by_name_like_a_third_party(site, monkeypatch):
    monkeypatch.setenv("TSBENCH_BLOCK_PLUGINS", "plugins.pruners")
    registry = load_plugins()
    assert not registry.pruners
    assert "dlinear" in registry.models  # the other built-ins still load
    assert registry.blocked == ["plugins.pruners (built-in)"]


def test_a_blocked_entry_point_is_never_imported(site, monkeypatch):
    make_distribution(site, "tsb-broken2", "tsb_test_broken2", "raise RuntimeError('must not be imported')\n")
    make_distribution(site, "tsb-good3", "tsb_test_good3", GOOD_PLUGIN.format(name="kept-model"))
    monkeypatch.setenv("TSBENCH_BLOCK_PLUGINS", " tsb-broken2 , ")
    registry = load_plugins()
    assert not registry.load_errors
    assert "tsb_test_broken2" not in sys.modules
    assert "kept-model" in registry.models
    assert registry.blocked == ["tsb-broken2 (entry point tsb_test_broken2 = tsb_test_broken2)"]
