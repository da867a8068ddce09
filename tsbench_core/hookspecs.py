"""All hook specifications of tsbench, in one module.

A plugin module implements any of these with ``@hookimpl`` and calls ``register`` once per plugin object it
provides. Built-in plugins (``plugins/``, ``sparse_runtime/``) use exactly the same hooks as third parties.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "tsbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def tsbench_register_models(register: Callable[[Any], None]) -> None:
    """Register model plugins: call ``register(plugin)`` for each (see ``protocols.ModelPlugin``)."""


@hookspec
def tsbench_register_datasets(register: Callable[[Any], None]) -> None:
    """Register dataset plugins: call ``register(plugin)`` for each (see ``protocols.DatasetPlugin``)."""


@hookspec
def tsbench_register_pruners(register: Callable[[Any], None]) -> None:
    """Register pruner plugins: call ``register(plugin)`` for each (see ``protocols.PrunerPlugin``)."""


@hookspec
def tsbench_register_runtimes(register: Callable[[Any], None]) -> None:
    """Register runtime plugins: call ``register(plugin)`` for each (see ``protocols.RuntimePlugin``)."""


@hookspec
def tsbench_register_quantizers(register: Callable[[Any], None]) -> None:
    """Register quantizer plugins: call ``register(plugin)`` for each (see ``protocols.QuantizerPlugin``)."""
