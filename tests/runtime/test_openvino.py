"""The openvino runtime: unavailable with the reason, the gate in fp32 and INT8, the sparse-weight decompression
decision, and no telemetry on any path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from runtime_toys import TinyForecaster, input_batches, make_inputs, open_graph, prune_linears

from sparse_runtime import openvino_rt
from sparse_runtime.export import export_onnx
from sparse_runtime.openvino_rt import OpenVinoParams, OpenVinoRuntime, decompression_decision
from tsbench_core.cells import DENSE
from tsbench_core.cpu import CpuFacts, cpu_facts
from tsbench_core.errors import RuntimeUnavailable
from tsbench_core.protocols import OnnxGraphRuntime, RuntimePlugin
from tsbench_core.registry import load_plugins
from tsbench_core.verify import verify_session, verify_session_relative

REPO = Path(__file__).resolve().parents[2]
RUNTIME = OpenVinoRuntime()
AMX = {"avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}
ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
needs_openvino = pytest.mark.skipif(not RUNTIME.availability().available,
                                    reason=f"openvino unavailable: {RUNTIME.availability().reason}")


def test_registered_as_a_runtime_that_opens_onnx_graphs() -> None:
    plugin = load_plugins(builtins=("sparse_runtime.plugin",)).get("runtime", "openvino")
    assert isinstance(plugin, RuntimePlugin) and isinstance(plugin, OnnxGraphRuntime)
    assert plugin.int8_format == "qdq"


def test_unavailable_with_the_reason_when_not_installed(monkeypatch, tiny, tmp_path) -> None:
    real = openvino_rt.importlib.util.find_spec
    monkeypatch.setattr(openvino_rt.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openvino" else real(name, *a))
    available = RUNTIME.availability()
    assert not available.available and "tsbench[openvino]" in available.reason
    with pytest.raises(RuntimeUnavailable, match=r"tsbench\[openvino\]"):
        RUNTIME.prepare(tiny, make_inputs(0), OpenVinoParams(), threads=1, workdir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing exported before the check


@pytest.mark.parametrize(("flags", "int8", "mode", "enabled", "reason"), [
    (AMX, True, "auto", True, "AMX INT8 present"),
    (AMX, False, "auto", False, "fp32 graph"),
    (AMX, True, "off", False, "off in the runtime params"),
    (ZEN4, True, "auto", False, "no AMX INT8 (amx_tile, amx_int8 not among its flags)"),
    (ZEN4 | {"amx_tile"}, True, "auto", False, "no AMX INT8 (amx_int8 not among its flags)"),
    (set(), False, "auto", False, "no AMX INT8"),
])
def test_decompression_decision_from_cpu_flags(flags, int8, mode, enabled, reason) -> None:
    decision = decompression_decision(flags, int8=int8, mode=mode, rate=0.7)
    assert decision["enabled"] is enabled
    assert decision["rate"] == (0.7 if enabled else None)
    assert reason in decision["reason"]
    assert decision["summary"] == "on (rate 0.7)" if enabled else decision["summary"].startswith("off (")


@needs_openvino
@pytest.mark.parametrize("batch", [1, 4])
def test_fp32_passes_the_gate(batch, tmp_path) -> None:
    torch.manual_seed(0)
    model = prune_linears(TinyForecaster().eval(), 0.5)
    session = RUNTIME.prepare(model, make_inputs(0, batch), OpenVinoParams(), threads=1, workdir=tmp_path)
    # batches other than the export example: inputs baked in as constants would fail here
    batches = [tuple(t.numpy() for t in make_inputs(seed, batch)) for seed in (1, 2)]
    assert verify_session(session, model, batches, atol=1e-5, rtol=1e-5) < 1e-5
    info = session.info
    assert info["threads"] == {"inference_num_threads": 1, "num_streams": 1}
    assert "float32" in info["properties"]["INFERENCE_PRECISION_HINT"]  # not bf16 on CPUs that have it
    assert info["compile_s"] > 0 and info["batch_size"] == batch
    assert "FP32" in info["cpu_capabilities"]  # what OpenVINO itself detects on this CPU
    assert info["fully_connected"]["total"] > 0 and info["fully_connected"]["int8"] == 0
    decision = info["sparse_weights_decompression"]
    assert decision["enabled"] is False and decision["rate"] is None
    assert "CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE" not in info["properties"]
    assert info["telemetry"] == "blocked"
    session.close()


def _int8_graph(tmp_path: Path, quant_format: str, weights: str = "int8"):
    from sparse_runtime.quantize import WindowCalibrationReader, quantize_onnx

    torch.manual_seed(0)
    model = prune_linears(TinyForecaster().eval(), 0.5)
    export = export_onnx(model, make_inputs(0), tmp_path / "model.fp32.onnx")
    reader = WindowCalibrationReader(input_batches(range(10, 14)), export)
    return model, quantize_onnx(export, tmp_path / f"model.{quant_format}.onnx", reader, quant_format=quant_format,
                                weights=weights)


def _facts(features: tuple[str, ...], machine: str = "x86_64") -> CpuFacts:
    return CpuFacts(vendor="AuthenticAMD", model_name="test CPU", family=25, model=1, stepping=1,
                    features=features, source="cpuid", machine=machine)


@pytest.mark.parametrize(("features", "machine", "quant_format", "weights"), [
    (("avx2",), "x86_64", "qdq", "int8-7bit"),  # Zen 3: u8 x i8 kernels saturate, half-range weights do not
    (("avx2", "avx512f", "avx512bw"), "x86_64", "qdq", "int8-7bit"),  # AVX-512 without VNNI: the same
    (("avx2",), "x86_64", "matmulinteger", "int8"),  # computed in fp32 kernels: exact anywhere
    (("avx2", "avx512f", "avx512_vnni"), "x86_64", "qdq", "int8"),
    (("avx2", "avx_vnni"), "x86_64", "qdq", "int8"),
    (("avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"), "x86_64", "qdq", "int8"),
    ((), "aarch64", "qdq", "int8"),
])
def test_int8_plan_by_cpu(features, machine, quant_format, weights) -> None:
    plan = RUNTIME.int8_plan(_facts(features, machine), quant_format)
    assert plan.weights == weights and plan.unsupported is None
    assert "test CPU" in plan.reason


@needs_openvino
@pytest.mark.parametrize("quant_format", ["qdq", "matmulinteger"])
def test_int8_graph_passes_the_gate_and_matches_onnxruntime(quant_format, tmp_path) -> None:
    from sparse_runtime.onnx_runtime import OnnxRuntimeRuntime

    plan = RUNTIME.int8_plan(cpu_facts(), quant_format)  # this CPU's encoding, as the cells choose it
    model, quantized = _int8_graph(tmp_path, quant_format, weights=plan.weights)
    session = RUNTIME.open_graph(quantized.export, OpenVinoParams(), threads=1, batch_size=4)
    batches = input_batches((1, 2))
    max_err, rel = verify_session_relative(session, model, batches, tolerance=0.1)
    assert rel < 0.1
    kernels = session.info["fully_connected"]
    # QDQ becomes OpenVINO's integer FullyConnected kernels; MatMulInteger is computed in fp32 kernels
    assert (kernels["int8"] > 0) if quant_format == "qdq" else (kernels["int8"] == 0)
    if OnnxRuntimeRuntime().int8_plan(cpu_facts(), quant_format).weights == plan.weights:
        # the same integer graph on ONNX Runtime (right for its kernels on this CPU too): an independent
        # implementation of the same arithmetic
        ort = open_graph("onnxruntime", quantized.export, threads=1, batch_size=4)
        for batch in batches:
            ours, theirs = session.run(list(batch)), ort.run(list(batch))
            assert float(np.sqrt(np.mean((ours - theirs) ** 2))) < 0.05 * float(np.std(theirs))
        ort.close()
    session.close()


@needs_openvino
def test_decompression_property_set_when_the_cpu_has_amx(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(openvino_rt, "cpu_flags", lambda: set(AMX))
    _, quantized = _int8_graph(tmp_path, "qdq")
    session = RUNTIME.open_graph(quantized.export, OpenVinoParams(decompression_rate=0.6), threads=1, batch_size=4)
    decision = session.info["sparse_weights_decompression"]
    assert decision["enabled"] is True and decision["rate"] == 0.6
    # read back from the compiled model: OpenVINO holds the value we set
    assert session.info["properties"]["CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE"] == pytest.approx(0.6)
    # the toy's 16-wide weights are not multiples of 64: no sparse kernel, and the row says why
    assert decision["sparse_kernels"] == 0 and "multiples of 64" in decision["note"]
    session.close()


@needs_openvino
def test_this_cpu_decision_is_recorded(tmp_path) -> None:
    _, quantized = _int8_graph(tmp_path, "matmulinteger")  # runs on every CPU (fp32 kernels)
    session = RUNTIME.open_graph(quantized.export, OpenVinoParams(), threads=1, batch_size=4)
    decision = session.info["sparse_weights_decompression"]
    expected = decompression_decision(openvino_rt.cpu_flags(), int8=True)
    assert decision["enabled"] is expected["enabled"] and decision["reason"] == expected["reason"]
    assert ("CPU_SPARSE_WEIGHTS_DECOMPRESSION_RATE" in session.info["properties"]) is expected["enabled"]
    session.close()


_CHILD = r"""
import json, os, socket, sys, multiprocessing
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] if args else kwargs)[:80])
    raise OSError("network use refused by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
multiprocessing.Process.start = lambda self: attempts.append("child process")  # how it sends on Linux
mode, onnx_path = sys.argv[1], sys.argv[2]
if mode == "unguarded":  # control: what a plain import does; the sender is replaced, nothing leaves
    from openvino_telemetry.backend import backend_ga4
    backend_ga4.GA4Backend.send = lambda self, message: attempts.append("event " + json.dumps(message)[:60])
    import openvino as ov
    import openvino_telemetry
    openvino_telemetry.Telemetry().sender.executor.shutdown(wait=True)
elif mode == "core":  # any code in a tsbench process: a plain import after tsbench_core's
    import importlib.util
    import tsbench_core
    if importlib.util.find_spec("sparseml") is not None:
        import sparseml.pytorch  # imports openvino itself (sparseml/onnx/utils/model.py)
    import openvino as ov
    ov.convert_model(onnx_path)
else:
    from sparse_runtime.openvino_telemetry import import_openvino
    ov = import_openvino()
    ov.Core().compile_model(ov.Core().read_model(onnx_path), "CPU")
    ov.convert_model(onnx_path)  # the conversion API: the other path that reports usage
from openvino.tools.ovc import telemetry_utils
from sparse_runtime.openvino_telemetry import telemetry_status
home = os.environ["HOME"]
print("RESULT " + json.dumps({"attempts": attempts, "telemetry": telemetry_utils.tm.__name__,
                              "status": telemetry_status(),
                              "home": sorted(os.path.relpath(os.path.join(d, f), home)
                                             for d, _, files in os.walk(home) for f in files)}))
"""


def _child(mode: str, tmp_path: Path, onnx_path: Path) -> dict[str, Any]:
    home = tmp_path / f"home-{mode}"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # CI opts out
    env.update(HOME=str(home), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(onnx_path)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stderr[-2000:]
    return json.loads(line.removeprefix("RESULT "))


@needs_openvino
def test_no_telemetry_on_import_compile_or_conversion(tmp_path) -> None:
    """In child processes with a scratch HOME whose sockets refuse to connect."""
    torch.manual_seed(0)
    onnx_path = export_onnx(TinyForecaster().eval(), make_inputs(0), tmp_path / "model.onnx").path
    guarded = _child("guarded", tmp_path, onnx_path)
    assert guarded["attempts"] == []
    assert guarded["telemetry"] == "openvino.tools.ovc.telemetry_stub"
    assert guarded["home"] == []  # no consent file, no client id
    assert guarded["status"] == "blocked"
    # a plain `import openvino` anywhere after `import tsbench_core`, SparseML's own import of it included
    core = _child("core", tmp_path, onnx_path)
    assert core["attempts"] == [] and core["telemetry"] == "openvino.tools.ovc.telemetry_stub"
    assert not [path for path in core["home"] if path.startswith("intel")]  # (SparseML's matplotlib caches fonts)
    # the control shows the detector works: a plain import sends a usage event and writes a client id
    control = _child("unguarded", tmp_path, onnx_path)
    assert any(a.startswith("event ") for a in control["attempts"])
    assert control["telemetry"] == "openvino_telemetry"
    assert any(path.startswith("intel") for path in control["home"])
    assert control["status"] == "active"


def test_refuses_to_run_when_openvino_was_imported_with_telemetry(monkeypatch, tiny, tmp_path) -> None:
    from sparse_runtime import openvino_telemetry

    monkeypatch.setattr(openvino_rt, "telemetry_status", lambda: "active")
    available = RUNTIME.availability()
    assert not available.available and "imported with its telemetry" in available.reason
    with pytest.raises(RuntimeUnavailable, match="imported with its telemetry"):
        RUNTIME.prepare(tiny, make_inputs(0), OpenVinoParams(), threads=1, workdir=tmp_path)
    # and the import helper itself refuses, whatever the caller: a loaded openvino whose telemetry is importable
    monkeypatch.setitem(sys.modules, "openvino", sys.modules.get("openvino", object()))
    monkeypatch.setitem(sys.modules, openvino_telemetry.TELEMETRY_PACKAGE, object())
    assert openvino_telemetry.telemetry_status() == "active"
    with pytest.raises(RuntimeUnavailable, match="imported with its telemetry"):
        openvino_telemetry.import_openvino()


@needs_openvino
def test_spec_run_stores_fp32_and_int8_cells(tmp_path) -> None:
    from tsbench_testing import tiny_spec

    from tsbench_core.runner import run
    from tsbench_core.spec import parse_spec
    from tsbench_core.store import Store

    spec_dict = tiny_spec(name="ov-run", runtimes=[{"plugin": "onnxruntime"}, {"plugin": "openvino"}])
    # this toy's QDQ graph is coarse (relative error ~0.6 dense on both runtimes): a loose gate, compared below
    spec_dict["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5]},
                            {"pruner": "magnitude", "sparsities": [0.5],
                             "quantize": {"format": "qdq", "calibration_batches": 2, "tolerance": 0.9}}]
    spec = parse_spec(json.dumps(spec_dict), "s.json")
    with Store(tmp_path / "r.db") as store:
        run(spec, store, registry=load_plugins())
        rows = store.rows("ov-run")
    ours = {(r["pruner"], bool(r["quantize"])): r for r in rows if r["runtime"] == "openvino"}
    theirs = {(r["pruner"], bool(r["quantize"])): r for r in rows if r["runtime"] == "onnxruntime"}
    assert len(ours) == 4  # dense and pruned, fp32 and INT8
    same_encoding = (RUNTIME.int8_plan(cpu_facts(), "qdq").weights
                     == theirs[(DENSE, True)]["runtime_info"]["quantize"]["weights_encoding"])
    for (pruner, int8), row in ours.items():
        assert row["status"] == "ok", row["error"]
        info = row["runtime_info"]
        assert row["latency_ms_median"] > 0 and info["compile_s"] > 0
        if not int8:
            assert row["max_abs_err_vs_torch"] < 1e-4
            continue
        assert info["quantize"]["format"] == "qdq" and info["fully_connected"]["int8"] > 0
        assert info["quantize"]["weights_encoding"] == RUNTIME.int8_plan(cpu_facts(), "qdq").weights  # this CPU's plan
        assert "reason" in info["sparse_weights_decompression"]
        if same_encoding:  # the same INT8 graph on ONNX Runtime: the same error, OpenVINO computes what it says
            assert row["rel_err_vs_torch"] == pytest.approx(theirs[(pruner, True)]["rel_err_vs_torch"], rel=1e-3)
            assert row["mse"] == pytest.approx(theirs[(pruner, True)]["mse"], rel=1e-3)
