"""``benchmarks/sweep.py``: the plan, resumable per-call JSON files, the summary ratios and the plots.

The aggregation and plotting tests use FABRICATED rows (made up here, marked ``"fabricated": True``), not
measurements; one test runs the real ``bench`` on a tiny DLinear through the sweep's ``run_jobs``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"tsbench_benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


sweep = _load("sweep")


def test_plan_covers_models_sparsities_and_runtimes() -> None:
    jobs = sweep.plan(["transformer", "dlinear"], [0.5, 0.9])
    assert len(jobs) == 2 * 2 * 2
    assert len({j.filename for j in jobs}) == len(jobs)
    mag = [j for j in jobs if j.pruner == "magnitude"]
    struct = [j for j in jobs if j.pruner == "structured"]
    assert all(j.runtimes == ("torch-eager", "deepsparse") for j in mag)
    assert all(j.runtimes == ("onnxruntime", "torch-compile") for j in struct)
    assert [j.model for j in jobs[:4]] == ["transformer"] * 4  # model by model: partial sweeps hold whole models
    with_ort = sweep.plan(["transformer"], [0.9], magnitude_ort=True, pruners=["magnitude"])
    assert with_ort[0].runtimes == ("torch-eager", "deepsparse", "onnxruntime")
    assert with_ort[0].filename == "transformer-magnitude-0.9.json"


def test_matrix_extras_come_last_in_their_own_files() -> None:
    base = sweep.plan(["transformer", "dlinear"], [0.5, 0.9])
    jobs = sweep.plan(["transformer", "dlinear"], [0.5, 0.9], matrix=True)
    assert jobs[:len(base)] == base
    extras = jobs[len(base):]
    assert [(j.model, j.pruner, j.sparsity, j.runtimes) for j in extras] == [
        ("transformer", "magnitude", 0.9, ("onnxruntime", "torch-compile")),
        ("dlinear", "magnitude", 0.9, ("onnxruntime", "torch-compile")),
        ("transformer", "structured", 0.5, ("deepsparse",)),
        ("dlinear", "structured", 0.5, ("deepsparse",))]
    assert extras[0].filename == "transformer-magnitude-0.9-matrix.json"
    assert len({j.filename for j in jobs}) == len(jobs)
    assert all(sweep.parse_job(j.argument) == j for j in jobs)


def test_compile_sparsities_keep_torch_compile_only_where_asked() -> None:
    jobs = sweep.plan(["transformer"], [0.5, 0.9], pruners=["structured"], compile_sparsities=[0.5])
    assert [(j.sparsity, j.runtimes) for j in jobs] == [(0.5, ("onnxruntime", "torch-compile")),
                                                       (0.9, ("onnxruntime",))]


def _fabricated_bench(calls: list):
    def bench_fn(model, pruner, sparsity, runtimes, **kwargs):
        calls.append((model, pruner, sparsity, tuple(runtimes), kwargs.get("batch_size")))
        if model == "broken":
            raise RuntimeError("pruner exploded")
        return [{"fabricated": True, "model": model, "pruner": pruner, "sparsity": sparsity, "runtime": r,
                 "status": "ok", "dense_ms": 10.0, "pruned_ms": 5.0, "speedup": 2.0} for r in runtimes]
    return bench_fn


def test_run_jobs_writes_one_file_per_call_and_resumes(tmp_path: Path) -> None:
    calls: list = []
    jobs = sweep.plan(["transformer", "broken"], [0.5], pruners=["magnitude"])
    written = sweep.run_jobs(jobs, tmp_path, bench_fn=_fabricated_bench(calls), log=lambda s: None, batch_size=32)
    assert sorted(p.name for p in written) == ["broken-magnitude-0.5.json", "transformer-magnitude-0.5.json"]
    assert calls[0] == ("transformer", "magnitude", 0.5, ("torch-eager", "deepsparse"), 32)
    doc = json.loads((tmp_path / "transformer-magnitude-0.5.json").read_text())
    assert doc["job"]["model"] == "transformer" and doc["bench_kwargs"] == {"batch_size": 32}
    assert [r["runtime"] for r in doc["rows"]] == ["torch-eager", "deepsparse"]
    broken = json.loads((tmp_path / "broken-magnitude-0.5.json").read_text())
    assert {r["status"] for r in broken["rows"]} == {"failed"}
    assert "pruner exploded" in broken["rows"][0]["reason"]

    calls.clear()  # second run: everything exists, nothing is called
    assert sweep.run_jobs(jobs, tmp_path, bench_fn=_fabricated_bench(calls), log=lambda s: None) == []
    assert calls == []
    # --retry-failed re-runs only the call whose rows all failed
    sweep.run_jobs(jobs, tmp_path, bench_fn=_fabricated_bench(calls), retry_failed=True, log=lambda s: None)
    assert [c[0] for c in calls] == ["broken"]
    assert not list(tmp_path.glob(".*.tmp"))


def _row(model, pruner, sparsity, runtime, dense, pruned, **extra):
    """A FABRICATED bench row (not a measurement) with the fields bench() produces."""
    row = {"fabricated": True, "model": model, "pruner": pruner, "sparsity": sparsity, "runtime": runtime,
           "structure": "structured" if pruner == "structured" else "unstructured", "status": "ok",
           "dense_ms": dense, "pruned_ms": pruned, "speedup": dense / pruned}
    row.update(extra)
    return row


FABRICATED = [
    _row("transformer", "magnitude", 0.9, "torch-eager", 800.0, 790.0, mac_reduction_effective=7.0,
         speedup_vs_eager_dense=800 / 790),
    _row("transformer", "magnitude", 0.9, "deepsparse", 700.0, 100.0, mac_reduction_effective=7.0,
         speedup_vs_eager_dense=8.0, pruned_info={"fraction_of_supported_ops": 1.0}),
    _row("transformer", "magnitude", 0.5, "deepsparse", 700.0, 350.0, mac_reduction_effective=2.0,
         speedup_vs_eager_dense=800 / 350, pruned_info={"fraction_of_supported_ops": 1.0}),
    _row("transformer", "structured", 0.5, "onnxruntime", 100.0, 50.0, mac_reduction_dense_kernels=2.0),
    _row("transformer", "structured", 0.5, "torch-compile", 100.0, 80.0, mac_reduction_dense_kernels=2.0),
    _row("transformer", "structured", 0.8, "onnxruntime", 100.0, 25.0, mac_reduction_dense_kernels=5.0),
    {"fabricated": True, "model": "dlinear", "pruner": "structured", "sparsity": 0.5, "runtime": "onnxruntime",
     "status": "failed", "reason": "CellError: no inner channel group"},
]


def test_summarize_ratios_and_targets() -> None:
    recs = {(r["model"], r["pruner"], r["sparsity"], r["runtime"]): r for r in sweep.summarize(FABRICATED)}
    ort = recs[("transformer", "structured", 0.5, "onnxruntime")]
    assert ort["efficiency"] == pytest.approx((100 / 50) / 2.0) and ort["meets"] is True  # 1.0 >= 0.9
    compiled = recs[("transformer", "structured", 0.5, "torch-compile")]
    assert compiled["efficiency"] == pytest.approx(1.25 / 2.0) and compiled["meets"] is False
    assert recs[("transformer", "structured", 0.8, "onnxruntime")]["efficiency"] == pytest.approx(0.8)
    ds90 = recs[("transformer", "magnitude", 0.9, "deepsparse")]
    assert ds90["speedup"] == pytest.approx(7.0) and ds90["meets"] is True  # 7x >= 4x and 8x >= 6x
    assert ds90["fraction_of_supported_ops"] == 1.0
    assert recs[("transformer", "magnitude", 0.5, "deepsparse")]["meets"] is False  # 2x < 4x
    assert recs[("transformer", "magnitude", 0.9, "torch-eager")]["meets"] is None  # no target on eager
    failed = recs[("dlinear", "structured", 0.5, "onnxruntime")]
    assert failed["meets"] is None and failed["efficiency"] is None


def test_summary_markdown_and_plots(tmp_path: Path) -> None:
    records = sweep.summarize(FABRICATED)
    text = sweep.summary_markdown(records)
    assert "| transformer | 0.9 | deepsparse | ok (meets) | 700.0 | 100.0 | 7.00× | 8.00× | 7.00× | 1.000 |" in text
    assert "| transformer | 0.5 | torch-compile | ok | 100.0 | 80.0 | 1.25× | 2.00× | 0.62 |" in text
    assert "failed: CellError: no inner channel group" in text
    files = sweep.plot_sweep(records, tmp_path)
    names = sorted(p.name for p in files)
    assert names == ["overview.png", "overview.svg", "speedup_transformer.png", "speedup_transformer.svg"]
    assert all(p.stat().st_size > 1000 for p in files)
    assert sweep.plot_sweep([r for r in records if r["status"] != "ok"], tmp_path / "none") == []


def test_report_reads_only_sweep_files(tmp_path: Path) -> None:
    doc = {"job": {"model": "transformer"}, "rows": FABRICATED[:3]}
    (tmp_path / "transformer-magnitude-0.9.json").write_text(json.dumps(doc))
    (tmp_path / "notes.json").write_text(json.dumps([1, 2]))  # not a sweep file: ignored
    files = sweep.report(tmp_path, plots=False)  # plotting is tested above
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary) == 3 and (tmp_path / "summary.md").exists() and len(files) == 2
    sweep.report(tmp_path, plots=False)  # the summary files themselves are not read back as rows
    assert len(json.loads((tmp_path / "summary.json").read_text())) == 3


def test_sweep_runs_real_bench_on_a_tiny_model(tmp_path: Path) -> None:
    from tsbench_core.registry import load_plugins

    jobs = [sweep.Job("dlinear", "magnitude", 0.5, ("torch-eager", "onnxruntime"))]
    sweep.run_jobs(jobs, tmp_path, log=lambda s: None, batch_size=2, threads=1, warmup=0, repeats=2, rounds=1,
                   seq_len=24, label_len=12, pred_len=8, enc_in=3, registry=load_plugins())
    rows = json.loads((tmp_path / "dlinear-magnitude-0.5.json").read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"], [r.get("reason") for r in rows]
    recs = sweep.summarize(rows)
    for rec, row in zip(sorted(recs, key=lambda r: r["runtime"]), sorted(rows, key=lambda r: r["runtime"]),
                        strict=True):
        assert rec["speedup"] == pytest.approx(row["dense_ms"] / row["pruned_ms"])
        assert rec["mac_reduction"] == pytest.approx(row["mac_reduction_effective"]) and rec["mac_reduction"] > 1


def test_a_dead_child_process_fails_only_its_job(tmp_path: Path) -> None:
    """With ``isolate`` each call runs elsewhere and writes its own file; a call whose process died (simulated:
    exit code -6 and DeepSparse's abort line) is written as failed rows quoting the abort, and the sweep goes on."""
    jobs = sweep.plan(["transformer"], [0.5, 0.9], pruners=["magnitude"])
    seen = []

    def isolate(job):
        seen.append(job.filename)
        if job.sparsity == 0.5:
            return -6, "noise\nAssertion at src/lib/jit/function/fused_ops.cpp:250\nBacktrace:\n 0# 0x0\n"
        (tmp_path / job.filename).write_text(json.dumps({"job": {}, "rows": [{"status": "ok"}]}))
        return 0, ""

    written = sweep.run_jobs(jobs, tmp_path, isolate=isolate, log=lambda s: None)
    assert seen == ["transformer-magnitude-0.5.json", "transformer-magnitude-0.9.json"]
    assert sorted(p.name for p in written) == seen
    dead = json.loads((tmp_path / "transformer-magnitude-0.5.json").read_text())["rows"]
    assert [r["runtime"] for r in dead] == ["torch-eager", "deepsparse"]
    assert all(r["status"] == "failed" and "exit code -6" in r["reason"]
               and r["reason"].endswith("Assertion at src/lib/jit/function/fused_ops.cpp:250") for r in dead)
    assert json.loads((tmp_path / "transformer-magnitude-0.9.json").read_text())["rows"] == [{"status": "ok"}]


def test_child_process_command_runs_one_job(tmp_path: Path) -> None:
    """The real child command line (``--job``) on a tiny, fast call: it writes the job's file itself."""
    import subprocess

    out = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "sweep.py"), "--out", str(out), "--job",
           "dlinear:magnitude:0.5:torch-eager", "--batch-size=2", "--threads=1", "--warmup=0", "--repeats=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "dlinear-magnitude-0.5.json").read_text())["rows"]
    assert rows[0]["status"] == "ok" and rows[0]["batch_size"] == 2 and rows[0]["repeats"] == 1


def test_run_jobs_waits_while_the_pause_file_exists(tmp_path: Path) -> None:
    import threading

    pause = tmp_path / "PAUSE"
    pause.write_text("")
    calls: list = []
    threading.Timer(0.5, pause.unlink).start()
    started = time.monotonic()
    sweep.run_jobs(sweep.plan(["dlinear"], [0.5], pruners=["magnitude"]), tmp_path / "out",
                   bench_fn=_fabricated_bench(calls), log=lambda s: None, pause_file=pause)
    assert len(calls) == 1 and time.monotonic() - started >= 0.4
