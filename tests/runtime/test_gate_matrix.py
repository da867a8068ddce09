"""``benchmarks/gate_matrix.py``: variants built once, every runtime gated with the project's gate, failures
recorded with their figure, structured reductions reported, the markdown matrix."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from sparse_runtime.eager import EagerSession, TorchEagerRuntime
from tsbench_core.data import DataShape
from tsbench_core.hookspecs import hookimpl
from tsbench_core.registry import load_plugins

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("tsbench_benchmarks_gate_matrix", ROOT / "benchmarks" / "gate_matrix.py")
gm = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = gm
spec.loader.exec_module(gm)

TINY = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 1, "d_layers": 1}
SMALL_SHAPE = DataShape(3, 3, 3, 24, 12, 8)


class OffSession(EagerSession):
    def run(self, inputs):
        return super().run(inputs) + 0.5


class OffRuntime(TorchEagerRuntime):
    """Eager with every output off by 0.5: the gate must fail it and the matrix must say so."""

    name = "off-eager"

    def prepare(self, model, example_inputs, params, *, threads, workdir):
        s = super().prepare(model, example_inputs, params, threads=threads, workdir=workdir)
        return OffSession(s.model, s.threads, {**s.info, "runtime": self.name})


class _Extra:
    @hookimpl
    def tsbench_register_runtimes(self, register):
        register(OffRuntime())


@pytest.fixture(scope="module")
def registry():
    return load_plugins(extra=(_Extra(),))


@pytest.fixture(scope="module")
def result(registry):
    return gm.gate_model("transformer", runtimes=("onnxruntime", "off-eager"), batch_size=2, threads=1,
                         registry=registry, shape=SMALL_SHAPE, model_params=TINY)


def test_every_variant_gated_on_every_runtime(result) -> None:
    assert result["inputs"] == "random" and list(result["variants"]) == ["dense", "magnitude90", "structured50"]
    for variant, entry in result["variants"].items():
        ort, off = entry["runtimes"]["onnxruntime"], entry["runtimes"]["off-eager"]
        assert ort["status"] == "ok" and 0 <= ort["max_abs_err"] < 1e-4, (variant, ort)
        assert "exported_weight_sparsity" in ort
        assert off["status"] == "failed" and "max abs error 0.5" in off["reason"], (variant, off)
        assert "max_abs_err" not in off


def test_reductions_per_variant(result) -> None:
    dense, mag, struct = (result["variants"][v] for v in ("dense", "magnitude90", "structured50"))
    assert dense["param_reduction"] == 1.0 and dense["mac_reduction_dense_kernels"] == 1.0
    assert mag["zeros_over_prunable"] == pytest.approx(0.9, abs=0.01)
    assert mag["params"] == dense["params"] and mag["mac_reduction_effective"] > 2  # attention products are not pruned
    assert mag["runtimes"]["onnxruntime"]["exported_weight_sparsity"] > 0.5
    # structured pruning shrinks the model: fewer parameters and MACs, and the two figures agree with the counts
    assert struct["params"] < dense["params"]
    assert struct["param_reduction"] == pytest.approx(struct["params_dense"] / struct["params"])
    assert struct["mac_reduction_dense_kernels"] == pytest.approx(struct["macs_dense_per_sample"]
                                                                  / struct["macs_per_sample"])
    assert struct["mac_reduction_dense_kernels"] > 1.2
    assert struct["prune_info"]["method"] == "structured" and "search" not in struct["prune_info"]


def test_markdown_matrix(result) -> None:
    text = gm.markdown([result], ("onnxruntime", "off-eager"))
    rows = [line for line in text.splitlines() if line.startswith("| transformer |")]
    assert len(rows) == 3
    assert all(line.count("|") == 7 for line in rows)
    assert all("| ok " in line and "**failed**: dense: correctness gate failed" in line for line in rows)
    na = {"model": "dlinear", "batch_size": 2, "inputs": "random", "variants": {
        "structured50": {"status": "not applicable", "reason": "CellError: no inner channel group", "runtimes": {}}}}
    line = next(x for x in gm.markdown([na], ("onnxruntime",)).splitlines() if x.startswith("| dlinear"))
    assert "**not applicable**" in line and line.count("|") == 6


def test_deepsparse_fraction_recorded(registry) -> None:
    if not registry.get("runtime", "deepsparse").availability().available:
        pytest.skip("deepsparse unavailable on this Python")
    res = gm.gate_model("dlinear", runtimes=("deepsparse",), variants=(("dense", None, 0.0),), batch_size=2,
                        threads=1, registry=registry, shape=SMALL_SHAPE)
    cell = res["variants"]["dense"]["runtimes"]["deepsparse"]
    assert cell["status"] == "ok" and cell["fraction_of_supported_ops"] == 1.0


@pytest.mark.skipif(not os.environ.get("TSBENCH_DATA_DIR"), reason="TSBENCH_DATA_DIR not set")
def test_gate_batches_from_real_data(registry) -> None:
    data_dir = Path(os.environ["TSBENCH_DATA_DIR"])
    if not (data_dir / "ETT-small" / "ETTh1.csv").exists():
        pytest.skip(f"{data_dir} has no ETT-small/ETTh1.csv")
    batches, kind = gm.gate_batches("timeF", 3, data_dir, registry)
    assert kind == "etth1 test" and len(batches) == 2
    x_enc, x_mark_enc, x_dec, x_mark_dec = batches[0]
    assert x_enc.shape == (3, 96, 7) and x_dec.shape == (3, 144, 7) and x_mark_dec.shape == (3, 144, 4)
    assert not (batches[0][0] == batches[1][0]).all()  # spread over the split, not the same windows twice
    assert (x_dec[:, 48:] == 0).all() and (x_dec[:, :48] == x_enc[:, 48:]).all()  # label part = last 48 inputs


def test_main_resumes_and_writes_reports(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_gate_model(model, **kwargs):
        calls.append(model)
        return {"model": model, "batch_size": 4, "inputs": "random", "variants": {}}

    monkeypatch.setattr(gm, "gate_model", fake_gate_model)
    (tmp_path / "dlinear.json").write_text(json.dumps({"model": "dlinear", "variants": {}}))
    assert gm.main(["--out", str(tmp_path), "--models", "dlinear,patchtst", "--runtimes", "onnxruntime"]) == 0
    assert calls == ["patchtst"]  # dlinear's file existed
    matrix = json.loads((tmp_path / "gate_matrix.json").read_text())
    assert [r["model"] for r in matrix] == ["dlinear", "patchtst"] and (tmp_path / "gate_matrix.md").exists()


def test_deepsparse_abort_fails_the_cell_without_taking_the_matrix_down(registry, monkeypatch) -> None:
    """An engine abort in the runtime's subprocess probe (simulated here) fails the cell; the in-process
    compile is skipped."""
    if not registry.get("runtime", "deepsparse").availability().available:
        pytest.skip("deepsparse unavailable on this Python")
    import deepsparse

    import sparse_runtime.deepsparse_rt as ds

    probed, compiled = [], []

    def fake_probe(path, batch_size, inputs=None, timeout=900.0, num_cores=1):
        probed.append((Path(path).suffix, batch_size, len(inputs)))
        return {"crashed": True, "crash": "engine aborted while compiling (exit code -6): Assertion at x.cpp:1",
                "fallback_ops": {}}

    monkeypatch.setattr(ds, "diagnose_fallbacks", fake_probe)
    monkeypatch.setattr(deepsparse, "compile_model", lambda *a, **k: compiled.append(a))
    # an earlier test's real probe of the same graph passed: forget it, or the probe is (rightly) skipped
    monkeypatch.setattr(registry.get("runtime", "deepsparse"), "_probed", {})
    res = gm.gate_model("dlinear", runtimes=("deepsparse", "onnxruntime"), variants=(("dense", None, 0.0),),
                        batch_size=2, threads=1, registry=registry, shape=SMALL_SHAPE)
    cells = res["variants"]["dense"]["runtimes"]
    assert probed == [(".onnx", 2, 1)] and compiled == []  # DLinear's graph takes x_enc only
    assert cells["deepsparse"]["status"] == "failed" and "Assertion at x.cpp:1" in cells["deepsparse"]["reason"]
    assert cells["onnxruntime"]["status"] == "ok"


def test_update_merges_rerun_cells_into_the_existing_file() -> None:
    old = {"model": "m", "variants": {
        "dense": {"runtimes": {"onnxruntime": {"status": "ok"}}},
        "structured50": {"params": 1, "runtimes": {"onnxruntime": {"status": "ok", "max_abs_err": 0.0},
                                                   "deepsparse": {"status": "failed"}}}}}
    new = {"model": "m", "variants": {"structured50": {"params": 2, "runtimes": {"deepsparse": {"status": "ok"}}}}}
    merged = gm.merge(old, new, ["deepsparse"])
    assert merged["variants"]["structured50"]["runtimes"] == {  # the kept cell: gated on the params=1 build
        "onnxruntime": {"status": "ok", "max_abs_err": 0.0, "earlier_build": {"params": 1}},
        "deepsparse": {"status": "ok"}}
    assert merged["variants"]["structured50"]["params"] == 2 and merged["variants"]["dense"] == old["variants"]["dense"]
    assert merged["updates"][0]["variants"] == ["structured50"] and old["variants"]["structured50"]["params"] == 1
    assert "earlier_build" not in merged["variants"]["structured50"]["runtimes"]["deepsparse"]
    assert "earlier build†" in gm._fmt_cell(merged["variants"]["structured50"]["runtimes"]["onnxruntime"])
