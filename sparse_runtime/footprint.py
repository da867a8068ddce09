"""Size on disk and peak memory of the ONNX graph a runtime session ran (``GraphFootprint`` of the ONNX runtimes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sparse_runtime.export import INPUT_NAMES, ExportResult
from sparse_runtime.memory import peak_rss
from sparse_runtime.sizes import model_sizes


def graph_footprint(runtime: Any, workdir: Path, inputs: tuple[np.ndarray, ...], *, threads: int,
                    batch_size: int, graph: Path | None = None) -> dict[str, Any]:
    """``model_bytes``, ``model_bytes_compressed``, ``peak_rss_mb`` (and ``info.memory``) of ``graph`` on the
    runtime plugin ``runtime``, or of the graph exported into ``workdir``; empty when there is none."""
    if graph is None:
        found = sorted(Path(workdir).glob("model*.onnx"))
        if not found:
            return {}
        graph = found[0]
    sizes = model_sizes(graph)
    memory = peak_rss(runtime, graph, list(inputs), threads=threads, batch_size=batch_size)
    return {"model_bytes": sizes["model_bytes"], "model_bytes_compressed": sizes["model_bytes_compressed"],
            "peak_rss_mb": memory.get("peak_rss_mb"), "info": {"memory": memory}}


def feeding(path: Path) -> ExportResult:
    """An ``ExportResult`` for a graph on disk: its inputs, mapped onto the forward arguments by name."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in proto.graph.initializer}
    names = tuple(i.name for i in proto.graph.input if i.name not in initializers)
    shapes = tuple(tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in proto.graph.input
                   if i.name not in initializers)
    return ExportResult(path=Path(path), opset=0, input_names=names,
                        used_inputs=tuple(INPUT_NAMES.index(n) for n in names), input_shapes=shapes)
