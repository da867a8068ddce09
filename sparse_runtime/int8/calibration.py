"""Calibration on training windows: the batches fed to the graph, and the activation ranges they give."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sparse_runtime.export import ExportResult
from tsbench_core.errors import CellError


class WindowCalibrationReader:
    """A ``CalibrationDataReader`` over fixed batches of training windows, fed in the graph's input order.

    ``batches`` hold the model's four forward arguments each (numpy); ``export`` tells which ones the graph
    takes. ``yielded`` counts the batches handed out since the last ``rewind``.
    """

    def __init__(self, batches: Sequence[Sequence[np.ndarray]], export: ExportResult) -> None:
        if not batches:
            raise CellError("INT8 calibration needs at least one batch of training windows")
        self._feeds = [dict(zip(export.input_names, export.select(list(b)), strict=True)) for b in batches]
        self._next = 0
        self.yielded = 0

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._feeds):
            return None
        feed = self._feeds[self._next]
        self._next += 1
        self.yielded += 1
        return feed

    def rewind(self) -> None:
        self._next = 0
        self.yielded = 0


def activation_ranges(proto: Any, names: Sequence[str], reader: WindowCalibrationReader) -> dict[str, tuple[float,
                                                                                                          float]]:
    """(min, max) of each named tensor over the calibration batches, run through ONNX Runtime in fp32."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    graph_inputs = {i.name for i in probe.graph.input}
    outputs = {o.name for o in probe.graph.output}
    fetch = [n for n in dict.fromkeys(names) if n not in graph_inputs]
    for name in fetch:
        if name not in outputs:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    low = dict.fromkeys(names, math.inf)
    high = dict.fromkeys(names, -math.inf)
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        values = dict(zip(fetch, session.run(fetch, feed), strict=True)) if fetch else {}
        for name in low:
            value = feed[name] if name in graph_inputs else values[name]
            low[name] = min(low[name], float(np.min(value)))
            high[name] = max(high[name], float(np.max(value)))
    if reader.yielded == 0:
        raise CellError("INT8 calibration got no batches")
    return {name: (low[name], high[name]) for name in names}
