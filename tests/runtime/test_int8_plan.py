"""The INT8 weight encoding each runtime chooses from the detected CPU (faked here, so every CPU is covered on any
machine), and the cell skipped before any work where a runtime cannot compute INT8 on the CPU."""

from __future__ import annotations

import json

import pytest
from tsbench_testing import tiny_spec

from tsbench_core.cpu import CpuFacts
from tsbench_core.protocols import Int8Plan, availability_of, int8_plan_of


def cpu(*features: str, machine: str = "x86_64", source: str = "cpuid", name: str = "a CPU") -> CpuFacts:
    return CpuFacts(vendor="V", model_name=name, family=25, model=1, stepping=1, features=features, source=source,
                    machine=machine)


ZEN3 = cpu("avx2", name="AMD EPYC-Milan")  # AVX2 only
ZEN4 = cpu("avx2", "avx512f", "avx512bw", "avx512_vnni", name="AMD EPYC Zen 4")
SKYLAKE_X = cpu("avx2", "avx512f", "avx512bw", name="Xeon without VNNI")  # AVX-512 without VNNI
ALDER_LAKE = cpu("avx2", "avx_vnni", name="Core with AVX-VNNI")
SAPPHIRE_RAPIDS = cpu("avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16")
ARM = cpu(machine="aarch64", source="/proc/cpuinfo")
UNKNOWN_X86 = cpu(source="none")


@pytest.mark.parametrize(("facts", "weights"), [
    (ZEN3, "uint8"), (SKYLAKE_X, "uint8"), (UNKNOWN_X86, "uint8"),  # VPMADDUBSW would saturate (or may)
    (ZEN4, "int8"), (ALDER_LAKE, "int8"), (SAPPHIRE_RAPIDS, "int8"), (ARM, "int8"),
])
@pytest.mark.parametrize("quant_format", ["matmulinteger", "qdq"])
def test_onnxruntime_takes_uint8_weights_exactly_where_its_u8s8_kernels_saturate(registry, facts, weights,
                                                                                 quant_format):
    plan = int8_plan_of(registry.get("runtime", "onnxruntime"), facts, quant_format)
    assert plan.weights == weights and plan.unsupported is None
    assert facts.model_name in plan.reason  # the CPU that decided it is named


def test_deepsparse_keeps_int8_weights_and_refuses_a_cpu_its_kernels_cannot_run_on(registry, monkeypatch):
    plugin = registry.get("runtime", "deepsparse")
    monkeypatch.setattr(type(plugin), "hardware", lambda self: {"isa": "avx2", "vnni": False, "source": "fake"})
    for facts in (ZEN3, ZEN4, SAPPHIRE_RAPIDS):
        plan = plugin.int8_plan(facts, "matmulinteger")
        assert plan.weights == "int8" and plan.unsupported is None
    assert "needs AVX2" in plugin.int8_plan(cpu(name="SSE only"), "matmulinteger").unsupported
    # the engine's own detection claims AVX-512 on a CPU without it (as under an emulator): its kernels cannot run
    monkeypatch.setattr(type(plugin), "hardware", lambda self: {"isa": "avx512", "vnni": True, "source": "fake"})
    refused = plugin.int8_plan(ZEN3, "qdq").unsupported
    assert refused and "avx512" in refused and "AMD EPYC-Milan" in refused
    assert plugin.int8_plan(ZEN4, "qdq").unsupported is None
    # NM_ARCH=avx2 changes the binary DeepSparse loads, not the system it generates code for: still refused
    monkeypatch.setattr(type(plugin), "hardware", lambda self: {"isa": "avx2", "isa_detected": "avx512"})
    assert "no AVX-512" in plugin.int8_plan(ZEN3, "matmulinteger").unsupported


def test_a_runtime_without_a_cpu_rule_gets_the_default_encoding():
    class Plain:
        name = "plain"

    plan = int8_plan_of(Plain(), ZEN3, "matmulinteger")
    assert plan == Int8Plan("int8", "runtime 'plain' states no CPU rule for INT8")


def test_deepsparse_reports_what_its_own_detection_sees(registry, monkeypatch):
    plugin = registry.get("runtime", "deepsparse")
    available = availability_of(plugin)
    if not available.available:
        pytest.skip(f"deepsparse unavailable here: {available.reason}")
    from sparse_runtime.deepsparse_rt import engine_hardware

    engine_hardware.cache_clear()
    monkeypatch.setenv("NM_ARCH", "avx2")
    try:
        seen = plugin.hardware()
    finally:
        engine_hardware.cache_clear()
    assert seen["source"] == "deepsparse arch.bin" and seen["isa"] == "avx2"  # NM_ARCH applied, as the engine does
    assert seen["isa_detected"] in ("avx2", "avx512") and isinstance(seen["vnni"], bool)


def test_an_int8_cell_its_runtime_cannot_compute_is_skipped_before_any_work(registry, tmp_path, monkeypatch):
    """Skipped with the runtime's reason, and neither the QAT fine-tuning nor the quantizer ran for it."""
    import sparse_runtime.qat as qat_module
    import sparse_runtime.quantize as quantize_module
    from tsbench_core.runner import run
    from tsbench_core.spec import parse_spec
    from tsbench_core.store import Store

    plugin = registry.get("runtime", "onnxruntime")
    monkeypatch.setattr(type(plugin), "int8_plan", lambda self, facts, fmt: Int8Plan(
        "int8", "faked", unsupported=f"no correct {fmt} kernels on {facts.model_name or 'this CPU'}"))
    monkeypatch.setattr(qat_module, "qat_finetune", lambda *a, **k: pytest.fail("QAT ran for a skipped cell"))
    monkeypatch.setattr(quantize_module, "quantize_onnx", lambda *a, **k: pytest.fail("quantized a skipped cell"))
    spec_dict = tiny_spec(name="int8-skip", runtimes=[{"plugin": "onnxruntime"}])
    spec_dict["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5], "quantize": {
        "method": "sparseml-qat", "calibration_batches": 2, "epochs": 1, "max_train_batches": 2}}]
    with Store(tmp_path / "r.db") as store:
        run(parse_spec(json.dumps(spec_dict), "s.json"), store, registry=registry)
        rows = [r for r in store.rows("int8-skip") if r["quantize"]]
    assert len(rows) == 2 and all(r["status"] == "skipped" for r in rows)
    assert all("INT8 on onnxruntime: no correct matmulinteger kernels" in r["error"] for r in rows)
    assert not any((tmp_path / "artifacts" / "runtime" / r["cell_key"]).exists() for r in rows)
