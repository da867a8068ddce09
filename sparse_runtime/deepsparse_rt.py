"""``deepsparse``: Neural Magic's sparsity-aware CPU engine on the deploy-form ONNX export.

Compiled for a static batch size and a number of cores. The engine's fraction of supported ops is recorded;
when it is below 1, the diagnostic log of a compile in a subprocess lists the ONNX nodes outside the engine.

DeepSparse 1.8 can abort the whole process while compiling or running a graph (assertions in its compiler and
its ONNX Runtime bridge), so by default ``prepare`` first compiles and runs the export once in a subprocess
(``probe_compile``; skipped for an ONNX file whose identical bytes already passed in this process) and raises
``CellError`` if that child died. Feed-forward widths the compiler is known to abort on are padded, exactly,
before the export (``pad_ffn_widths``, see ``sparse_runtime/ffn_padding.py``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn

from sparse_runtime.common import base_versions, coerce_params, dist_versions
from sparse_runtime.export import DEFAULT_OPSET, ExportResult, export_onnx
from tsbench_core.cpu import CpuFacts, cpu_facts
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.hardware_rules import HardwareRules
from tsbench_core.protocols import Availability, Int8Plan, PluginParams

_NODE_LINE = re.compile(r"^Node \d+: (\S+) (.+?)\s*$")


class DeepSparseParams(PluginParams):
    """Options of the deepsparse runtime."""

    opset: int = Field(DEFAULT_OPSET, ge=11, le=17)
    # when the supported fraction is < 1: list the ops outside the engine (from the probe's log)
    diagnose_fallbacks: bool = True
    probe_compile: bool = Field(True, description="Compile and run once in a subprocess before the in-process "
                                "compile (DeepSparse 1.8 can abort the process); a dead child fails the cell.")
    probe_timeout_s: float = Field(900.0, gt=0, description="Time limit of the subprocess probe.")
    pad_ffn_widths: bool = Field(True, description="Pad feed-forward hidden widths DeepSparse 1.8 aborts on "
                                 "(exact: zero channels); see sparse_runtime/ffn_padding.py.")
    probe_ffn_widths: bool = Field(True, description="Decide which FFN widths abort by compiling each such FFN "
                                   "alone in a subprocess, once per CPU fingerprint (cached); off: the static band "
                                   "measured on one AVX-512 CPU.")


class DeepSparseSession:
    def __init__(self, engine: Any, export: ExportResult, info: dict[str, Any]) -> None:
        self._engine = engine
        self._export = export
        self.info = info

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        return self._engine.run(self._export.select(list(inputs)), val_inp=False)[0]

    def close(self) -> None:
        self._engine = None


def parse_engine_diagnostics(log: str) -> dict[str, Any]:
    """Which ONNX nodes the engine compiled and which fell back, from a ``NM_LOGGING_LEVEL=debug`` log.

    The log prints the whole graph after ``Printing GraphViewer main_graph:`` and each candidate subgraph
    after ``Printing subgraph:``, one ``Node <i>: <OpType> <name>`` line per node. A candidate followed by
    ``FAILED TO COMPILE`` (and a ``Message:`` line) falls back as a whole; the message is kept.
    """
    all_nodes: dict[str, str] = {}
    supported: set[str] = set()
    current: set[str] = set()
    errors: list[str] = []
    section: str | None = None
    expect_message = False
    for raw in log.splitlines():
        line = raw.strip()
        if expect_message and line.startswith("Message:"):
            errors.append(line.removeprefix("Message:").strip())
            expect_message = False
            continue
        if "Printing GraphViewer main_graph" in line:
            section = "graph"
            continue
        if "Printing subgraph:" in line:
            supported |= current
            current, section = set(), "subgraph"
            continue
        if "FAILED TO COMPILE" in line:
            current, section, expect_message = set(), None, True
            continue
        match = _NODE_LINE.match(line)
        if match and section is not None:
            op, name = match.group(1), match.group(2)
            if section == "graph":
                all_nodes[name] = op
            else:
                current.add(name)
            continue
        if "Created" in line and "compiled subgraphs" in line:
            supported |= current
            current = set()
        if raw.startswith("[") or not line:
            section = None
    supported |= current
    fallback = {name: op for name, op in all_nodes.items() if name not in supported}
    return {
        "fallback_nodes": sorted(f"{op} {name}" for name, op in fallback.items()),
        "fallback_ops": dict(sorted(Counter(fallback.values()).items())),
        "n_nodes": len(all_nodes),
        "compile_errors": errors,
    }


_PROBE = """
import sys
import numpy as np
from deepsparse import compile_model
engine = compile_model(sys.argv[1], batch_size=int(sys.argv[2]), num_cores=int(sys.argv[3]))
print("TSBENCH_COMPILED", flush=True)
if len(sys.argv) > 4:
    arrays = np.load(sys.argv[4])
    engine.run([arrays[k] for k in sorted(arrays.files, key=lambda k: int(k.split("_")[1]))])
    print("TSBENCH_RAN", flush=True)
"""


def diagnose_fallbacks(onnx_path: Path, batch_size: int, inputs: list[np.ndarray] | None = None,
                       timeout: float = 900.0, num_cores: int = 1) -> dict[str, Any]:
    """Compile (and run once on ``inputs``) in a subprocess with the engine's diagnostic log on; parse it.

    The subprocess shields the caller: DeepSparse 1.8 can abort the whole process on partitioned graphs
    (an assertion in its ONNX Runtime bridge). ``crashed`` tells whether that happened, ``crash`` quotes it.
    """
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1", "NM_LOGGING_LEVEL": "debug"}
    args = [sys.executable, "-c", _PROBE, str(onnx_path), str(batch_size), str(num_cores)]
    if inputs is not None:
        npz = Path(onnx_path).with_suffix(".probe.npz")
        np.savez(npz, **{f"input_{i}": a for i, a in enumerate(inputs)})
        args.append(str(npz))
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"diagnostic compile timed out after {timeout:.0f}s"}
    log = proc.stdout + "\n" + proc.stderr
    parsed = parse_engine_diagnostics(log)
    finished = "TSBENCH_RAN" in proc.stdout if inputs is not None else "TSBENCH_COMPILED" in proc.stdout
    parsed["crashed"] = not finished
    if not finished:
        assertion = next((line.strip() for line in log.splitlines() if line.startswith("Assertion at")), "")
        stage = "running" if "TSBENCH_COMPILED" in proc.stdout else "compiling"
        parsed["crash"] = (f"engine aborted while {stage} (exit code {proc.returncode})"
                           + (f": {assertion}" if assertion else ""))
    return parsed


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ARCH_FIELDS = ("isa", "vnni", "bf16", "vendor", "vendor_model", "architecture", "available_num_cores")


@functools.cache
def engine_hardware() -> dict[str, Any]:
    """What DeepSparse detects about this CPU: the ``arch.bin`` helper it ships (run as a child process, so
    deepsparse is not imported), with ``NM_ARCH`` (its ISA override) applied as the engine does."""
    spec = importlib.util.find_spec("deepsparse")
    if spec is None or not spec.submodule_search_locations:
        return {"error": "deepsparse is not installed"}
    binary = Path(list(spec.submodule_search_locations)[0]) / "arch.bin"
    try:
        proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60, check=True)
        found = json.loads(proc.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"error": f"{binary.name}: {type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {k: found.get(k) for k in ARCH_FIELDS}
    out["source"] = "deepsparse arch.bin"
    if os.environ.get("NM_ARCH"):
        out["isa_detected"], out["isa"] = out["isa"], os.environ["NM_ARCH"]
    return out


def isa_mismatch(hardware: dict[str, Any], cpu: CpuFacts) -> str | None:
    """Why DeepSparse's kernels cannot run here when its detected ISA is one the CPU (``CPUID``) lacks — as under
    ``qemu-x86_64 -cpu EPYC-Milan``, where ``arch.bin`` still reports the host's AVX-512; else None. The
    detection counts, not ``NM_ARCH``: with ``NM_ARCH=avx2`` there the engine loads its AVX2 binary but still
    generates AVX-512 code for the system it detected (SIGILL while compiling)."""
    detected = hardware.get("isa_detected", hardware.get("isa"))
    if cpu.x86_64 and cpu.source == "cpuid" and detected == "avx512" and not cpu.has("avx512f"):
        seen = f"{cpu.model_name or cpu.vendor or 'this CPU'} ({', '.join(cpu.features) or 'no AVX2'})"
        return (f"deepsparse detects ISA avx512 ({hardware.get('source')}) but this CPU has no AVX-512 ({seen}): "
                "its kernels cannot run here")
    return None


FFN_WIDTH_TOPIC = "deepsparse-ffn-widths"
_FFN_ACTIVATIONS = {"gelu": lambda: nn.GELU(), "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU}


def probe_ffn_width(pair: Any, num_cores: int, timeout: float) -> tuple[bool | None, str]:
    """Compile and run the FFN ``pair`` alone (its shape, width and activation; random weights) in a
    subprocess: ``(True, the crash)`` if the engine aborted, ``(False, ...)`` if it ran, ``(None, why)`` if the
    probe gave no verdict (timeout, unknown activation, no shape)."""
    import tempfile

    if pair.activation not in _FFN_ACTIVATIONS or len(pair.input_shape) < 2:
        return None, f"no probe for activation {pair.activation!r} on shape {list(pair.input_shape)}"
    channels = int(pair.input_shape[-1])
    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(channels, pair.width), _FFN_ACTIVATIONS[pair.activation](),
                        nn.Linear(pair.width, channels)).eval()
    x = torch.randn(*pair.input_shape)
    with tempfile.TemporaryDirectory(prefix="tsbench-ffn-probe-") as tmp:
        export = export_onnx(toy, (x,), Path(tmp) / "ffn.onnx")
        result = diagnose_fallbacks(export.path, int(pair.input_shape[0]), [x.numpy()], timeout=timeout,
                                    num_cores=num_cores)
    if result.get("error"):
        return None, str(result["error"])
    if result.get("crashed"):
        return True, str(result.get("crash"))
    return False, "compiled and ran"


def ffn_width_decider(num_cores: int, timeout: float, rules: HardwareRules | None = None) -> Any:
    """A ``decide`` for ``pad_for_deepsparse``: the cached verdict for this CPU, else a probe (then cached), else
    the static band."""
    from sparse_runtime.ffn_padding import WidthVerdict, static_hint

    rules = rules or HardwareRules(FFN_WIDTH_TOPIC, {"deepsparse": dist_versions("deepsparse").get("deepsparse")})

    def decide(pair: Any) -> Any:
        key = f"{pair.activation} {'x'.join(map(str, pair.input_shape))} h={pair.width} cores={num_cores}"
        cached = rules.get(key)
        if cached is not None and isinstance(cached.get("aborts"), bool):
            return WidthVerdict(cached["aborts"], "cache", str(cached.get("detail", "")))
        aborted, detail = probe_ffn_width(pair, num_cores, timeout)
        if aborted is None:
            return WidthVerdict(static_hint(pair).aborts, "static hint", detail)
        rules.put(key, {"aborts": aborted, "detail": detail})
        return WidthVerdict(aborted, "probe", detail)

    return decide


class DeepSparseRuntime:
    name = "deepsparse"
    description = "DeepSparse engine (sparsity-aware CPU kernels), static batch size and core count"
    params_model: type[BaseModel] = DeepSparseParams
    device = "cpu"
    int8_format = "matmulinteger"  # its INT8 kernels take constant int8 weights (the QDQ weights are dequantized)
    graph_libraries = ("deepsparse",)  # imported before a peak-memory baseline (``memory.py``)

    def __init__(self) -> None:
        # probes that passed in this process: (sha256 of the ONNX bytes, batch size, cores) -> the probe's result
        self._probed: dict[tuple[str, int, int], dict[str, Any]] = {}

    def availability(self) -> Availability:
        if sys.version_info >= (3, 12):
            return Availability.no(
                f"deepsparse 1.8 (end-of-life) only supports Python < 3.12; this is {sys.version.split()[0]}"
            )
        if importlib.util.find_spec("deepsparse") is None:
            return Availability.no("deepsparse is not installed (pip install 'tsbench[sparse]')")
        if sys.platform != "linux":
            return Availability.no(f"deepsparse runs on Linux only (this is {sys.platform})")
        mismatch = isa_mismatch(self.hardware(), cpu_facts())
        if mismatch:
            return Availability.no(mismatch)
        return Availability.yes()

    def versions(self) -> dict[str, str]:
        return {**base_versions(), **dist_versions("deepsparse", "onnx")}

    def hardware(self) -> dict[str, Any]:
        return engine_hardware()

    def int8_plan(self, cpu: CpuFacts, quant_format: str) -> Int8Plan:
        """int8 weights (zero point 0), DeepSparse's fast form, wherever its kernels can run; unsupported where
        its detected ISA is one this CPU lacks (e.g. under an emulator) or without AVX2 on x86-64."""
        hardware = self.hardware()
        isa = hardware.get("isa")
        seen = cpu.described()
        mismatch = isa_mismatch(hardware, cpu)
        if mismatch:
            return Int8Plan("int8", seen, unsupported=mismatch)
        if cpu.x86_64 and cpu.source != "none" and not cpu.has("avx2"):
            return Int8Plan("int8", seen, unsupported=f"deepsparse 1.8 needs AVX2 or AVX-512; {seen}")
        return Int8Plan("int8", f"DeepSparse's own INT8 kernels (ISA {isa}, VNNI {hardware.get('vnni')}): {seen}")

    def probe(self, export: ExportResult, batch_size: int, inputs: list[np.ndarray], *, num_cores: int,
              timeout: float, model_name: str = "the model") -> tuple[dict[str, Any], bool]:
        """Compile and run ``export`` once in a subprocess; ``(probe result, whether it was cached)``.

        Raises ``CellError`` quoting the engine's assertion when the child died (or timed out). A probe that
        passed is remembered by the sha256 of the ONNX bytes, the batch size and the core count.
        """
        key = (file_sha256(export.path), batch_size, num_cores)
        if key in self._probed:
            return self._probed[key], True
        result = diagnose_fallbacks(export.path, batch_size, inputs, timeout=timeout, num_cores=num_cores)
        if result.get("error"):
            raise CellError(f"deepsparse compile probe of {model_name}: {result['error']}")
        if result.get("crashed"):
            ops = result.get("fallback_ops") or {}
            raise CellError(f"deepsparse: {result['crash']} on {model_name} (subprocess probe; ops outside "
                            f"the engine: {', '.join(f'{k} x{v}' for k, v in ops.items()) or 'none seen'})")
        self._probed[key] = result
        return result, False

    def prepare(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], params: BaseModel, *,
                threads: int, workdir: Path) -> DeepSparseSession:
        available = self.availability()
        if not available.available:
            raise RuntimeUnavailable(available.reason)
        p = coerce_params(params, DeepSparseParams)
        model_name = type(model).__name__
        padding: dict[str, Any] = {}
        if p.pad_ffn_widths:
            from sparse_runtime.ffn_padding import pad_for_deepsparse

            decide = ffn_width_decider(threads, p.probe_timeout_s) if p.probe_ffn_widths else None
            model, padding = pad_for_deepsparse(model, example_inputs, decide)
        export = export_onnx(model, example_inputs, Path(workdir) / "model.deepsparse.onnx", opset=p.opset)
        batch_size = int(example_inputs[0].shape[0])
        probe_inputs = export.select([t.detach().cpu().numpy() for t in example_inputs])
        probe: dict[str, Any] | None = None
        probe_state = "off"
        if p.probe_compile:
            probe, cached = self.probe(export, batch_size, probe_inputs, num_cores=threads,
                                       timeout=p.probe_timeout_s, model_name=model_name)
            probe_state = "cached" if cached else "passed"
        engine, fraction = _compile(export.path, batch_size, threads, model_name)
        info: dict[str, Any] = {
            "runtime": self.name, "device": "cpu", "versions": self.versions(),
            "threads": {"num_cores": engine.num_cores}, "batch_size": batch_size,
            "fraction_of_supported_ops": fraction, "cpu_avx_type": getattr(engine, "cpu_avx_type", None),
            "compile_probe": probe_state, **padding, **export.info(),
        }
        if fraction < 1.0 and p.diagnose_fallbacks:
            if probe is None:  # no probe ran: the diagnostic compile also shields the first run
                probe = diagnose_fallbacks(export.path, batch_size, probe_inputs, num_cores=threads)
                if probe.get("crashed"):
                    ops = probe.get("fallback_ops", {})
                    raise CellError(f"deepsparse: {probe['crash']} on {model_name} "
                                    f"(fraction of supported ops {fraction:.4f}; ops outside the engine: "
                                    f"{', '.join(f'{k} x{v}' for k, v in ops.items()) or 'unknown'})")
            info["fallbacks"] = probe
        return DeepSparseSession(engine, export, info)

    def footprint(self, workdir: Path, inputs: tuple[np.ndarray, ...], *, threads: int, batch_size: int,
                  graph: Path | None = None) -> dict[str, Any]:
        """Size and peak memory of the graph run (``GraphFootprint``)."""
        from sparse_runtime.footprint import graph_footprint

        return graph_footprint(self, workdir, inputs, threads=threads, batch_size=batch_size, graph=graph)

    def open_graph(self, export: ExportResult, params: BaseModel, *, threads: int,
                   batch_size: int) -> DeepSparseSession:
        """A session on a given ONNX graph (an INT8 graph from ``sparse_runtime/quantize.py``).

        The graph is compiled and run once in a subprocess first: the engine can abort the process on a graph it
        takes in part (e.g. an assertion in its element-wise fusion), which must fail this cell, not the run."""
        p = coerce_params(params, DeepSparseParams)
        zeros = [np.zeros(shape, dtype=np.float32) for shape in export.input_shapes]
        probe = diagnose_fallbacks(export.path, batch_size, zeros, num_cores=threads)
        if probe.get("error") or probe.get("crashed"):
            raise CellError(f"deepsparse: {probe.get('error') or probe['crash']} on {export.path.name} "
                            f"(subprocess probe)")
        engine, fraction = _compile(export.path, batch_size, threads, export.path.name)
        info = {"runtime": self.name, "device": "cpu", "threads": {"num_cores": engine.num_cores},
                "batch_size": batch_size, "fraction_of_supported_ops": fraction,
                "cpu_avx_type": getattr(engine, "cpu_avx_type", None),
                "cpu_vnni": getattr(engine, "cpu_vnni", None), **export.info()}
        if fraction < 1.0 and p.diagnose_fallbacks:
            info["fallbacks"] = {k: v for k, v in probe.items() if k not in ("crashed", "crash")}
        return DeepSparseSession(engine, export, info)


def _compile(path: Path, batch_size: int, threads: int, what: str) -> tuple[Any, float]:
    """A DeepSparse engine for the graph at ``path`` and its fraction of supported ops; a failure is a
    ``CellError`` naming ``what``."""
    os.environ["NM_DISABLE_ANALYTICS"] = "1"  # before the first import: no telemetry
    from deepsparse import compile_model

    try:
        engine = compile_model(str(path), batch_size=batch_size, num_cores=threads)
    except Exception as exc:
        raise CellError(f"deepsparse could not compile {what}: {exc}") from exc
    return engine, float(engine.fraction_of_supported_ops)


PLUGINS = (DeepSparseRuntime(),)
