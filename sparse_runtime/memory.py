"""Peak resident memory of running an ONNX graph on a runtime plugin, measured in a fresh child process.

The child opens the graph through the runtime plugin's own ``open_graph`` (the session a cell times), found by the
plugin's module and name, so nothing here knows which runtimes exist. The libraries the plugin names in
``graph_libraries`` are imported before the baseline is read: their code is not the session's memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_MEMORY_PROBE = r"""
import importlib, json, sys
from pathlib import Path
import numpy as np

def status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None

module, name, path, npz, threads, batch_size, calls = sys.argv[1:8]
from sparse_runtime.footprint import feeding
runtime = next(p for p in importlib.import_module(module).PLUGINS if p.name == name)
for library in runtime.graph_libraries:
    importlib.import_module(library)
graph = feeding(Path(path))
arrays = np.load(npz)
inputs = [np.ascontiguousarray(arrays[k]) for k in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))]
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) to the current resident size
    reset = True
except OSError:
    reset = False
baseline = status("VmRSS")
session = runtime.open_graph(graph, runtime.params_model(), threads=int(threads), batch_size=int(batch_size))
loaded = status("VmRSS")
for _ in range(int(calls)):
    session.run(inputs)
print("TSBENCH_MEMORY " + json.dumps({"baseline_kb": baseline, "loaded_kb": loaded, "peak_kb": status("VmHWM"),
                                      "peak_reset": reset}), flush=True)
"""


def peak_rss(runtime: Any, path: Path, inputs: Sequence[np.ndarray], *, threads: int, batch_size: int,
             calls: int = 3, timeout: float = 900.0) -> dict[str, Any]:
    """Peak resident memory of opening the graph ``path`` with ``runtime.open_graph`` (a runtime plugin object
    listed in its module's ``PLUGINS``, with ``graph_libraries``, the modules imported first; default params) and
    running it ``calls`` times on ``inputs`` (the model's forward arguments), in a fresh child process: VmHWM at
    the end minus VmRSS just before the session is created (after the runtime is imported and the inputs are
    loaded; the peak is reset there through ``/proc/self/clear_refs`` where the kernel allows it). ``peak_rss_mb``
    is that difference in MiB."""
    path = Path(path)
    npz = path.with_suffix(".memory.npz")
    np.savez(npz, **{f"input_{i}": a for i, a in enumerate(inputs)})
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
    args = [sys.executable, "-c", _MEMORY_PROBE, type(runtime).__module__, runtime.name, str(path), str(npz),
            str(threads), str(batch_size), str(calls)]
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout:.0f}s"}
    finally:
        npz.unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("TSBENCH_MEMORY ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"error": f"memory probe failed: {tail[0]}"}
    probe = json.loads(line.removeprefix("TSBENCH_MEMORY "))
    probe["peak_rss_mb"] = (probe["peak_kb"] - probe["baseline_kb"]) / 1024.0
    probe["process_peak_mb"] = probe["peak_kb"] / 1024.0
    return probe
