"""Registers the built-in runtime plugins through the ``tsbench`` hooks."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tsbench_core.hookspecs import hookimpl

MODULES: tuple[str, ...] = (
    "eager", "compiled", "onnx_runtime", "deepsparse_rt", "semi_structured", "openvino_rt",
)


@hookimpl
def tsbench_register_runtimes(register: Callable[[Any], None]) -> None:
    for module in MODULES:
        for plugin in importlib.import_module(f"sparse_runtime.{module}").PLUGINS:
            register(plugin)
