"""A cell's variant label: its non-default plugin params, so rows of one plugin with different options stay apart.

``magnitude`` with ``{"block": 4}`` is variant ``block=4``; model, runtime and quantize options carry their kind
(``model.d_model=64``, ``runtime.opset=17``, ``int8.per_channel=true``). A cell whose options are all defaults has
the empty label. Values are written as JSON, options in the order of the params model.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from pydantic import BaseModel

from tsbench_core.cells import Cell
from tsbench_core.registry import Registry
from tsbench_core.spec import QuantizeConfig


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def non_default(params_model: type[BaseModel], values: dict[str, Any] | BaseModel) -> dict[str, Any]:
    """The members of validated ``values`` (a params object, or its JSON dump) that differ from ``params_model``'s
    defaults; a required option is always listed."""
    if isinstance(values, BaseModel):
        values = values.model_dump(mode="json")
    out = {}
    for name, info in params_model.model_fields.items():
        if name not in values:
            continue
        if info.is_required():
            out[name] = values[name]
            continue
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump(mode="json")
        if _json(values[name]) != _json(default):
            out[name] = values[name]
    return out


def _part(prefix: str, options: dict[str, Any]) -> list[str]:
    shown = {k: (v if isinstance(v, str) and _PLAIN.fullmatch(v) else _json(v)) for k, v in options.items()}
    return [f"{prefix}{k}={v}" for k, v in shown.items()]


_PLAIN = re.compile(r"[\w.:/+*-]+")  # a string option shown bare; anything else as JSON (quoted, no spaces lost)


def pruning_part(variant: str | None) -> str:
    """The pruner's and the INT8 options of a variant label (what tells apart rows a report names by pruner)."""
    parts = shlex.split(variant or "", posix=False)
    return " ".join(p for p in parts if not p.startswith(("model.", "runtime.")))


def variant_label(cell: Cell, registry: Registry, *, with_model: bool = True) -> str:
    """The non-default options of the cell's model (unless not ``with_model``), pruner, runtime and quantize
    config, as one label."""
    train = cell.prune.train
    model = registry.records["model"][train.model].plugin.params_model
    runtime = registry.records["runtime"][cell.runtime].plugin.params_model
    parts = _part("model.", non_default(model, train.model_params)) if with_model else []
    if cell.prune.pruner in registry.records["pruner"]:  # "dense" is no plugin and has no options
        pruner = registry.records["pruner"][cell.prune.pruner].plugin.params_model
        parts += _part("", non_default(pruner, cell.prune.pruner_params))
    parts += _part("runtime.", non_default(runtime, cell.runtime_params))
    if cell.quantize is not None:
        dumped = cell.quantize.model_dump(mode="json")
        parts += _part("int8.", {k: v for k, v in non_default(QuantizeConfig, dumped).items() if k != "method"})
    return " ".join(parts)
