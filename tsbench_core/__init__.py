"""tsbench: a plugin-based benchmark registry for pruning Transformer time-series forecasters.

Public API for users and plugin authors::

    from tsbench_core import load_plugins, build_model, load_dataset, load_spec, run, hookimpl
"""

from __future__ import annotations

from typing import Any

from tsbench_core.hookspecs import hookimpl
from tsbench_core.telemetry import block_openvino_telemetry, disable_neural_magic_analytics

disable_neural_magic_analytics()  # before any plugin can import the Neural Magic stack
block_openvino_telemetry()  # before any plugin can import openvino

__all__ = ["hookimpl", "load_plugins", "Registry", "build_model", "load_dataset", "load_spec", "run"]



def __getattr__(name: str) -> Any:
    # the registry imports torch; keep `import tsbench_core` (e.g. by the pytest plugin) light
    if name in ("load_plugins", "Registry"):
        from tsbench_core import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'tsbench_core' has no attribute {name!r}")


_SHAPE_FIELDS = ("enc_in", "dec_in", "c_out", "seq_len", "label_len", "pred_len", "freq")


def build_model(name: str, registry: Any = None, **hyperparams: Any):
    """Build a model plugin's ``nn.Module``. Data-shape fields (seq_len, label_len, pred_len, enc_in, dec_in,
    c_out, freq) may be given with the model's own hyperparameters; missing ones default to ETTh1 at 96/48/96."""
    from tsbench_core.data import DataShape
    from tsbench_core.embedding_dims import marks_dims
    from tsbench_core.registry import load_plugins

    registry = registry or load_plugins()
    plugin = registry.get("model", name)
    shape_args = {k: hyperparams.pop(k) for k in _SHAPE_FIELDS if k in hyperparams}
    enc_in = shape_args.get("enc_in", 7)
    freq = shape_args.get("freq", "h")
    timef, calendar = marks_dims(freq)
    shape = DataShape(
        enc_in=enc_in,
        dec_in=shape_args.get("dec_in", enc_in),
        c_out=shape_args.get("c_out", enc_in),
        seq_len=shape_args.get("seq_len", 96),
        label_len=shape_args.get("label_len", 48),
        pred_len=shape_args.get("pred_len", 96),
        freq=freq,
        n_marks_timef=timef,
        n_marks_calendar=calendar,
    )
    return plugin.build(plugin.params_model.model_validate(hyperparams), shape)


def load_dataset(name: str, *, seq_len: int = 96, label_len: int = 48, pred_len: int = 96,
                 data_dir: str | None = None, registry: Any = None, **params: Any):
    """Load a dataset plugin's windowed splits (``DatasetSplits``)."""
    from pathlib import Path

    from tsbench_core.data import Windows
    from tsbench_core.registry import load_plugins

    registry = registry or load_plugins()
    plugin = registry.get("dataset", name)
    return plugin.load(plugin.params_model.model_validate(params), Windows(seq_len, label_len, pred_len),
                       Path(data_dir) if data_dir else None)


def load_spec(path: str, registry: Any = None):
    """Read and validate a spec file against the installed plugins."""
    from tsbench_core.spec import load_spec as _load

    return _load(path, registry)


def run(spec: Any, store: Any = None, **kwargs: Any):
    """Run a spec (a ``Spec`` or a path); see ``tsbench_core.runner.run``."""
    from tsbench_core.runner import run as _run

    if not hasattr(spec, "datasets"):
        spec = load_spec(str(spec), kwargs.get("registry"))
    return _run(spec, store, **kwargs)
