"""Built-in pruner plugins: one module per plugin family, each exposing ``PLUGINS`` (a tuple)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tsbench_core.hookspecs import hookimpl

MODULES: tuple[str, ...] = ("magnitude", "nm", "structured", "gradual")


@hookimpl
def tsbench_register_pruners(register: Callable[[Any], None]) -> None:
    for module in MODULES:
        for plugin in importlib.import_module(f"{__name__}.{module}").PLUGINS:
            register(plugin)
