"""Do two DeepSparse engines interleaved in one process disturb each other? (issues #17, #22)

The ONNX Runtime counterpart (``ort_pair_interference.py``) showed spinning pools distorting pairs. This times a
model's dense DeepSparse engine alone and interleaved with the engine of its 90 % magnitude-pruned copy, first as
two separate engines, then as two engines on one shared ``deepsparse.Context``. Random weights, ETTh1 shape,
batch 32, 2 cores. Run it alone on the machine: ``python benchmarks/deepsparse_pair_interference.py [MODEL]``
(default ``transformer``). Prints medians and IQRs in ms, as JSON at the end.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

from sparse_runtime.export import export_onnx  # noqa: E402
from tsbench_core.data import DataShape, example_inputs  # noqa: E402
from tsbench_core.protocols import time_encoding_of  # noqa: E402
from tsbench_core.registry import load_plugins  # noqa: E402
from tsbench_core.steps.prune import synthetic_prune_context  # noqa: E402
from tsbench_core.timing import time_sessions_interleaved  # noqa: E402


class EngineSession:
    """A DeepSparse engine in the ``RuntimeSession`` shape the timing takes."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.info: dict[str, Any] = {}

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self.engine.run(list(inputs))[0]

    def close(self) -> None:
        pass


def main(model_name: str) -> None:
    import deepsparse

    torch.manual_seed(0)
    registry = load_plugins()
    plugin = registry.get("model", model_name)
    params = plugin.params_model()
    shape = DataShape(7, 7, 7, 96, 48, 96)
    encoding = time_encoding_of(params)
    work = Path(tempfile.mkdtemp(prefix="dspair-"))
    dense_model = plugin.build(params, shape).eval()
    pruner = registry.get("pruner", "magnitude")
    context = synthetic_prune_context(model_name, shape, encoding, work)
    pruned = pruner.prune(copy.deepcopy(dense_model), 0.9, pruner.params_model(), context).model.eval()
    inputs = example_inputs(shape, 32, encoding, seed=1)
    dense_graph = export_onnx(dense_model, inputs, work / "dense.onnx")
    sparse_graph = export_onnx(pruned, inputs, work / "sparse.onnx")
    batch = dense_graph.select([t.numpy() for t in inputs])
    out: dict[str, Any] = {}

    def timed(label: str, sessions: dict[str, EngineSession]) -> None:
        result = time_sessions_interleaved(sessions, batch, warmup=5, repeats=40, rounds=4, min_time_s=1.0)
        out[label] = {name: {"median_ms": round(r.median_ms, 3), "iqr_ms": round(r.iqr_ms, 3)}
                      for name, r in result.items()}
        print(label, out[label], flush=True)

    def separate(graph: Any) -> EngineSession:
        return EngineSession(deepsparse.compile_model(str(graph.path), batch_size=32, num_cores=2))

    dense, sparse = separate(dense_graph), separate(sparse_graph)
    timed("separate: dense alone", {"dense": dense})
    timed("separate: pair", {"dense": dense, "sparse": sparse})
    timed("separate: dense alone again", {"dense": dense})
    shared = deepsparse.Context(num_cores=2, num_streams=1)
    dense = EngineSession(deepsparse.MultiModelEngine(str(dense_graph.path), 32, shared))
    sparse = EngineSession(deepsparse.MultiModelEngine(str(sparse_graph.path), 32, shared))
    timed("shared context: dense alone", {"dense": dense})
    timed("shared context: pair", {"dense": dense, "sparse": sparse})
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "transformer")
