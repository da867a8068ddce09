"""Do two ONNX Runtime sessions interleaved in one process disturb each other? (issues #17, #22)

The timing protocol times each pruned cell in interleaved rounds beside a dense session in the same process.
This diagnostic times one iTransformer graph (ETTh1 shape, batch 32, 2 threads) alone and beside a second
session of the same graph, with ONNX Runtime's intra-op spinning on (its default) and off. Run it alone on the
machine: ``python benchmarks/ort_pair_interference.py``. Prints medians and IQRs in ms, as JSON at the end.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

from sparse_runtime.export import export_onnx  # noqa: E402
from sparse_runtime.onnx_runtime import session_options  # noqa: E402
from tsbench_core.data import DataShape, example_inputs  # noqa: E402
from tsbench_core.protocols import time_encoding_of  # noqa: E402
from tsbench_core.registry import load_plugins  # noqa: E402
from tsbench_core.timing import time_sessions_interleaved  # noqa: E402


class PlainSession:
    """An ONNX Runtime session with spinning chosen, in the ``RuntimeSession`` shape the timing takes."""

    def __init__(self, path: Path, *, spinning: bool) -> None:
        import onnxruntime as ort

        options = session_options(2, "all")
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]
        self.info: dict[str, Any] = {}

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self.session.run(None, dict(zip(self.names, inputs, strict=True)))[0]

    def close(self) -> None:
        pass


def main() -> None:
    torch.manual_seed(0)
    registry = load_plugins()
    plugin = registry.get("model", "itransformer")
    params = plugin.params_model()
    shape = DataShape(7, 7, 7, 96, 48, 96)
    model = plugin.build(params, shape).eval()
    inputs = example_inputs(shape, 32, time_encoding_of(params), seed=1)
    export = export_onnx(model, inputs, Path(tempfile.mkdtemp(prefix="ortpair-")) / "model.onnx")
    batch = export.select([t.numpy() for t in inputs])
    out: dict[str, Any] = {}
    for spinning in (True, False):
        a, b = PlainSession(export.path, spinning=spinning), PlainSession(export.path, spinning=spinning)
        for label, sessions in (("alone", {"a": a}), ("pair", {"a": a, "b": b}), ("alone again", {"a": a})):
            timed = time_sessions_interleaved(sessions, batch, warmup=5, repeats=40, rounds=4, min_time_s=1.0)
            key = f"spinning={spinning} {label}"
            out[key] = {name: {"median_ms": round(r.median_ms, 3), "iqr_ms": round(r.iqr_ms, 3)}
                        for name, r in timed.items()}
            print(key, out[key], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
