"""CPU facts (``tsbench_core/cpu.py``): measured once, checked against an independent detector (torch's), parsed
from ``/proc/cpuinfo`` text, fingerprinted; recorded in the run environment and in every bench row."""

from __future__ import annotations

import pytest

from tsbench_core.cpu import FEATURES, CpuFacts, cpu_facts, cpu_summary, from_proc_cpuinfo

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7763 64-Core Processor
stepping\t: 1
flags\t\t: fpu sse2 avx avx2 fma bmi2

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx avx2 fma bmi2 avx512f avx512_vnni
"""


def test_proc_cpuinfo_text_gives_the_first_processor():
    facts = from_proc_cpuinfo(CPUINFO)
    assert (facts.vendor, facts.model_name, facts.family, facts.model, facts.stepping) == (
        "AuthenticAMD", "AMD EPYC 7763 64-Core Processor", 25, 1, 1)
    assert facts.features == ("avx2",) and not facts.vnni and facts.source == "/proc/cpuinfo"


def test_measured_once_and_agreeing_with_torchs_own_detection():
    import torch

    facts = cpu_facts()
    assert cpu_facts() is facts  # cached for the process
    assert set(facts.features) <= set(FEATURES)
    if not facts.x86_64 or facts.source != "cpuid":
        pytest.skip(f"CPUID is x86-64 only (this is {facts.machine}, facts from {facts.source})")
    capability = torch.backends.cpu.get_cpu_capability()  # torch's dispatch level, from its own CPUID reading
    if capability == "AVX512":
        assert {"avx2", "avx512f", "avx512bw"} <= set(facts.features)
    elif capability == "AVX2":
        assert "avx2" in facts.features and not {"avx512f", "avx512bw"} <= set(facts.features)
    else:
        assert "avx2" not in facts.features


def test_fingerprint_tells_cpus_apart_and_features_are_named():
    zen3 = CpuFacts("AuthenticAMD", "EPYC", 25, 1, 1, ("avx2",), "cpuid", "x86_64")
    zen4 = CpuFacts("AuthenticAMD", "EPYC", 25, 17, 1, ("avx2", "avx512f", "avx512_vnni"), "cpuid", "x86_64")
    assert zen3.fingerprint == CpuFacts("AuthenticAMD", "EPYC", 25, 1, 1, ("avx2",), "cpuid", "x86_64").fingerprint
    assert len({zen3.fingerprint, zen4.fingerprint}) == 2
    assert zen4.vnni and not zen3.vnni and zen4.has("avx512_vnni")
    with pytest.raises(ValueError, match="unknown CPU feature"):
        zen3.has("avx512")


def test_the_run_environment_and_bench_rows_name_the_cpu(registry):
    from tsbench_core.bench import bench
    from tsbench_core.environment import environment

    facts = cpu_facts()
    env = environment(registry)
    assert env["cpu"]["fingerprint"] == env["cpu_fingerprint"] == facts.fingerprint
    assert env["cpu_features"] == list(facts.features) and env["cpu"]["vnni"] == facts.vnni
    deepsparse = env["runtimes"]["deepsparse"]
    if deepsparse["available"]:  # what DeepSparse's own detection reports, recorded beside
        assert deepsparse["hardware"]["isa"] in ("avx2", "avx512", "neon", "sve")
    rows = bench("dlinear", "magnitude", 0.0, ["torch-eager"], 2, registry=registry, seq_len=24, label_len=12,
                 pred_len=8, enc_in=3, warmup=0, repeats=1, threads=1, rounds=1)
    assert rows[0]["cpu"] == cpu_summary() and rows[0]["cpu"]["features"] == list(facts.features)


def test_the_report_shows_the_cpu_and_what_a_runtime_detects():
    from tsbench_core.report.tables import environment_tables

    env = {"cpu_model": "AMD EPYC-Milan Processor", "cpu_features": ["avx2"], "cpu_fingerprint": "fee6",
           "runtimes": {"deepsparse": {"available": True, "versions": {"deepsparse": "1.8.0"},
                                       "hardware": {"isa": "avx2", "vnni": False, "source": "arch.bin"}}}}
    machine, runtimes = environment_tables(env)
    assert ["cpu_fingerprint", "fee6"] in machine.rows and ["cpu_features", "avx2"] in machine.rows
    assert runtimes.rows[0][2] == "deepsparse 1.8.0; detects isa avx2, vnni False"


def test_without_cpuid_the_facts_come_from_proc_cpuinfo(monkeypatch):
    import tsbench_core.cpu as cpu_module

    def refused():
        raise OSError("no executable mapping here")

    monkeypatch.setattr(cpu_module, "from_cpuid", refused)
    cpu_module.cpu_facts.cache_clear()
    try:
        facts = cpu_module.cpu_facts()
    finally:
        cpu_module.cpu_facts.cache_clear()
    assert facts.source in ("/proc/cpuinfo", "none")
    assert facts == cpu_module.from_proc_cpuinfo()
