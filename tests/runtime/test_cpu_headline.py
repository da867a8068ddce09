"""``benchmarks/cpu_headline.py``: the commands it runs and the ratios it reads from bench rows (fabricated here;
the script is for the lead's quiet-machine run, never timed in a test)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import cpu_headline  # noqa: E402

CPU = {"model_name": "AMD EPYC-Milan Processor", "features": ["avx2"], "fingerprint": "f00d", "vnni": False}


def test_the_three_calls_are_the_documented_commands():
    assert set(cpu_headline.CALLS) == {"magnitude90", "int8", "structured50"}
    int8 = cpu_headline.command("int8")
    assert int8[1:4] == ["-m", "tsbench_core.cli", "bench"] and "--quantize" in int8
    assert int8[int8.index("--pruner-params") + 1] == '{"block": 4}'
    assert cpu_headline.command("structured50").count("--runtime") == 2


def test_ratios_come_from_the_rows_and_name_the_cpu():
    calls = {
        "magnitude90": [{"runtime": "torch-eager", "precision": "fp32", "status": "ok", "cpu": CPU},
                        {"runtime": "deepsparse", "precision": "fp32", "status": "ok", "speedup": 400 / 125,
                         "speedup_vs_eager_dense": 600 / 125, "cpu": CPU}],
        "int8": [{"runtime": "deepsparse", "precision": "int8", "status": "ok", "speedup_vs_eager_dense": 6.0,
                  "cpu": CPU},
                 {"runtime": "onnxruntime", "precision": "int8", "status": "failed", "reason": "int8: gate",
                  "cpu": CPU}],
        "structured50": [{"runtime": "onnxruntime", "precision": "fp32", "status": "ok", "speedup": 1.8,
                          "mac_reduction_dense_kernels": 2.0, "cpu": CPU}],
    }
    ratios = dict(cpu_headline.headline(calls))
    assert ratios["DeepSparse 90 % vs DeepSparse dense"] == "3.20×"
    assert ratios["DeepSparse 90 % vs torch-eager dense"] == "4.80×"
    assert ratios["DeepSparse INT8, 90 % 1×4 blocks, vs torch-eager dense fp32"] == "6.00×"
    assert ratios["ONNX Runtime INT8, 90 % 1×4 blocks, vs torch-eager dense fp32"] == "failed: int8: gate"
    assert ratios["structured 50 %, onnxruntime: speedup / MAC reduction"] == "0.90"
    assert ratios["structured 50 %, torch-compile: speedup / MAC reduction"] == "not measured"
    text = cpu_headline.render(calls)
    assert text.startswith("CPU: AMD EPYC-Milan Processor (avx2; fingerprint f00d)")
    calls["int8"][0]["cpu"] = {**CPU, "fingerprint": "beef"}
    assert "several CPUs" in cpu_headline.cpu_of(calls)


@pytest.mark.parametrize("calls", [{}, {"magnitude90": [{"runtime": "deepsparse", "status": "ok"}]}])
def test_rows_without_a_cpu_field_say_so(calls):
    assert cpu_headline.cpu_of(calls) == "unknown (rows without a cpu field)"
