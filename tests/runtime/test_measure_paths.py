"""`tsbench run` and `pytest --tsbench-spec` measure a cell through the same step: an INT8 cell is prepared,
quantized and gated as INT8 by both, and reports the same (deterministic) accuracy and gate figures."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
from tsbench_testing import tiny_spec

from tsbench_core.protocols import availability_of
from tsbench_core.runner import run
from tsbench_core.spec import parse_spec
from tsbench_core.store import Store

pytest_plugins = ["pytester"]


def _plugin_args() -> list[str]:
    installed = any(ep.value.startswith("tsbench_core.pytest_plugin")
                    for ep in metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "tsbench_core.pytest_plugin"]


def test_int8_cell_is_the_same_cell_in_run_and_pytest(registry, pytester: pytest.Pytester, tmp_path: Path) -> None:
    runtime = registry.get("runtime", "onnxruntime")
    if not availability_of(runtime).available:
        pytest.skip(f"onnxruntime unavailable: {availability_of(runtime).reason}")
    spec_dict = tiny_spec(name="int8-paths", runtimes=[{"plugin": "onnxruntime"}])
    spec_dict["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5],
                             "quantize": {"calibration_batches": 2, "tolerance": 0.5}}]
    spec_path = tmp_path / "int8-paths.json"
    spec_path.write_text(json.dumps(spec_dict))
    with Store(tmp_path / "results.db") as store:
        summary = run(parse_spec(spec_path.read_text(), str(spec_path)), store, registry=registry)
        stored = {r["cell_key"]: r for r in store.rows()}
    assert summary.failed == 0
    out = tmp_path / "bench.json"
    result = pytester.runpytest_inprocess(*_plugin_args(), "--tsbench-spec", str(spec_path), "--tsbench-store",
                                          str(tmp_path / "results.db"), "-p", "no:cacheprovider",
                                          f"--benchmark-json={out}", "-k", "int8-onnxruntime")
    result.assert_outcomes(passed=2)  # the dense and the pruned INT8 cell, selected by -k
    benches = json.loads(out.read_text())["benchmarks"]
    options = "int8.calibration_batches_2.int8.tolerance_0.5"  # the non-default quantize options
    assert {b["name"] for b in benches} == {f"synthetic-H8-dlinear-seed0-dense-{options}-static-int8-onnxruntime-bs4",
                                            f"synthetic-H8-dlinear-seed0-magnitude-s0.5-{options}-static-int8-onnxruntime-bs4"}
    for bench in benches:
        info = bench["extra_info"]
        row = stored[info["cell_key"]]
        assert row["quantize"] == info["quantize"] == "static-int8" and bench["group"].endswith("int8 bs4")
        # the INT8 graph's own accuracy and gate error, not the fp32 model's
        assert info["mse"] == pytest.approx(row["mse"], rel=1e-6) and row["mse"] != \
            row["runtime_info"]["fp32_metrics"]["mse"]
        assert info["rel_err_vs_torch"] == pytest.approx(row["rel_err_vs_torch"], rel=1e-6)
        assert bench["stats"]["rounds"] == spec_dict["timing"]["repeats"]
