"""A runtime whose session holds 32 MiB: the probe must measure that and not its library's 96 MiB."""

from __future__ import annotations

import sys

import numpy as np

from tsbench_core.protocols import NoParams


class _Session:
    def __init__(self) -> None:
        assert "memory_fakes.heavy_library" in sys.modules, "the library was not imported before the session"
        self.held = np.ones(32 * 2**20, dtype=np.uint8)
        self.info: dict = {}

    def run(self, inputs):
        return np.asarray(inputs[0])

    def close(self) -> None:
        self.held = None


class FakeGraphRuntime:
    name = "fake-graph"
    graph_libraries = ("memory_fakes.heavy_library",)
    params_model = NoParams

    def open_graph(self, export, params, *, threads: int, batch_size: int) -> _Session:
        return _Session()


PLUGINS = (FakeGraphRuntime(),)
