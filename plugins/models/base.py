"""What every built-in model plugin shares: a plugin object wrapping a params model and a builder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel
from torch import nn

from tsbench_core.data import DataShape


@dataclass(frozen=True)
class ModelPluginEntry:
    """A model plugin: ``build(params, shape)`` calls ``factory`` with validated params and the data shape."""

    name: str
    description: str
    params_model: type[BaseModel]
    factory: Callable[[BaseModel, DataShape], nn.Module]

    def build(self, params: BaseModel, shape: DataShape) -> nn.Module:
        return self.factory(params, shape)
