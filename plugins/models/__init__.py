"""Built-in model plugins: one module per model, each exposing ``PLUGIN``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tsbench_core.hookspecs import hookimpl

MODEL_MODULES: tuple[str, ...] = (
    "transformer", "informer", "autoformer", "fedformer", "dlinear", "crossformer", "patchtst", "itransformer",
)


@hookimpl
def tsbench_register_models(register: Callable[[Any], None]) -> None:
    for module in MODEL_MODULES:
        register(importlib.import_module(f"{__name__}.{module}").PLUGIN)
