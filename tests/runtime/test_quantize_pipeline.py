"""INT8 through the host: spec validation, cell keys, store migration, a spec run, ``bench --quantize int8``."""

from __future__ import annotations

import json
import sqlite3

import pytest
from tsbench_testing import tiny_spec

from tsbench_core.cells import DENSE, content_hash, expand
from tsbench_core.cpu import cpu_facts
from tsbench_core.protocols import availability_of, int8_plan_of
from tsbench_core.spec import SpecProblems, parse_spec, validate_against
from tsbench_core.store import CELL_COLUMNS, Store

NEW_COLUMNS = ("quantize", "rel_err_vs_torch", "model_bytes", "model_bytes_compressed", "peak_rss_mb")


def _spec(**quantize):
    spec = tiny_spec(name="q")
    spec["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5]},
                       {"pruner": "magnitude", "sparsities": [0.5], "quantize": quantize}]
    return spec


@pytest.mark.parametrize(("quantize", "where", "message"), [
    ({"calibration_batches": 0}, "pruning[1].quantize.calibration_batches", "greater than 0"),
    ({"keep_float": [""]}, "pruning[1].quantize.keep_float", "empty"),
    ({"keep_float": ["op:"]}, "pruning[1].quantize.keep_float", "op type"),
    ({"tolerance": 0}, "pruning[1].quantize.tolerance", "greater than 0"),
    ({"bits": 4}, "pruning[1].quantize.bits", "Extra inputs"),
])
def test_bad_quantize_fields_are_located(quantize, where, message):
    with pytest.raises(SpecProblems) as info:
        parse_spec(json.dumps(_spec(**quantize)), "s.json")
    assert any(p.startswith(f"{where}:") and message in p for p in info.value.problems), info.value.problems


def test_quantize_enters_cell_keys_and_leaves_fp32_keys_unchanged(registry):
    spec = parse_spec(json.dumps(_spec(calibration_batches=2)), "s.json")
    validate_against(spec, registry, "s.json")
    cells = expand(spec, registry)
    fp32 = [c for c in cells if c.quantize is None]
    int8 = [c for c in cells if c.quantize is not None]
    # the fp32 cells are what the spec without quantize expands to, with the same keys
    plain = parse_spec(json.dumps(tiny_spec(name="q")), "s.json")
    assert [c.key for c in fp32] == [c.key for c in expand(plain, registry)]
    # ... and each key is the hash of the payload keys always had (no quantize field)
    for cell in fp32:
        payload = {"spec": cell.spec_name, "prune": cell.prune.key, "runtime": cell.runtime,
                   "runtime_params": cell.runtime_params.model_dump(mode="json"), "batch_size": cell.batch_size,
                   "timing": cell.timing.model_dump(mode="json")}
        assert cell.key == content_hash(payload)
    assert len(int8) == 2  # dense int8 + magnitude 0.5 int8 on torch-eager
    assert {c.prune.pruner for c in int8} == {DENSE, "magnitude"}
    dense_fp32 = next(c for c in fp32 if c.prune.pruner == DENSE)
    pruned_fp32 = next(c for c in fp32 if c.prune.pruner != DENSE)
    for cell in int8:
        assert cell.key not in {c.key for c in fp32}
        assert cell.dense_key == dense_fp32.key  # speedup vs the fp32 dense model, same runtime
        assert " int8 " in cell.label()
    pruned_int8 = next(c for c in int8 if c.prune.pruner != DENSE)
    assert pruned_int8.prune.key == pruned_fp32.prune.key  # same pruned weights, trained and pruned once
    assert parse_spec(json.dumps(tiny_spec(name="q")), "s.json").model_dump(mode="json")["pruning"][0] == \
        {"pruner": "magnitude", "sparsities": [0.5], "params": {}, "fine_tune": None}  # spec hashes stable


def test_store_migration_adds_the_int8_columns_to_an_old_database(tmp_path):
    path = tmp_path / "old.db"
    old = [(n, t) for n, t in CELL_COLUMNS if n not in NEW_COLUMNS]
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE cells ({', '.join(f'{n} {t}' for n, t in old)})")
        conn.execute("INSERT INTO cells (cell_key, spec_name, mse, status) VALUES ('k1', 's', 0.5, 'ok')")
    with Store(path) as store:
        row = store.get("k1")
        assert row["mse"] == 0.5 and row["status"] == "ok"
        assert all(name in row and row[name] is None for name in NEW_COLUMNS)
        store.put({"cell_key": "k2", "spec_name": "s", "quantize": "static-int8", "model_bytes": 10,
                   "model_bytes_compressed": 4, "peak_rss_mb": 1.5, "rel_err_vs_torch": 0.01, "status": "ok"})
        assert store.get("k2")["model_bytes_compressed"] == 4
    with Store(path) as store:  # reopening migrates nothing twice
        assert len(store.rows()) == 2


def test_spec_run_stores_quantized_cells_with_all_columns(registry, tmp_path):
    from tsbench_core.runner import run

    spec_dict = tiny_spec(name="int8-run", runtimes=[{"plugin": "torch-eager"}, {"plugin": "onnxruntime"}])
    spec_dict["training"] |= {"epochs": 2, "max_train_batches": 10}
    # windows long enough that the weights, not the graph, dominate the file (so INT8 is visibly smaller)
    spec_dict["datasets"][0] |= {"params": {"length": 800, "n_vars": 2, "periods": [12]}, "seq_len": 96,
                                 "pred_len": [48]}
    spec_dict["pruning"] = [
        {"pruner": "magnitude", "sparsities": [0.5], "quantize": {"calibration_batches": 3, "tolerance": 0.5}},
        # an impossible tolerance: the gate fails and the cell is stored failed, with the error figure
        {"pruner": "magnitude", "sparsities": [0.5], "quantize": {"calibration_batches": 2, "tolerance": 1e-9}},
    ]
    spec = parse_spec(json.dumps(spec_dict), "s.json")
    with Store(tmp_path / "r.db") as store:
        summary = run(spec, store, registry=registry)
        rows = store.rows("int8-run")
    by = {(r["pruner"], r["runtime"], r["quantize"],
           (r["runtime_info"] or {}).get("quantize", {}).get("calibration_batches")): r for r in rows}
    assert summary.total == len(rows) == 2 + 2 * 2 * 2  # fp32 dense + (dense, pruned) x 2 configs x 2 runtimes
    eager = [r for r in rows if r["quantize"] and r["runtime"] == "torch-eager"]
    assert len(eager) == 4 and all(r["status"] == "skipped" and "cannot run an INT8" in r["error"] for r in eager)
    dense_fp32 = by[(DENSE, "onnxruntime", None, None)]
    assert dense_fp32["model_bytes"] > 0 and dense_fp32["peak_rss_mb"] > 0  # fp32 ONNX cells get them too
    for pruner in (DENSE, "magnitude"):
        row = by[(pruner, "onnxruntime", "static-int8", 3)]
        assert row["status"] == "ok", row["error"]
        assert row["runtime_info"]["quantize"]["calibration_batches"] == 3
        assert row["runtime_info"]["quantize"]["format"] == "matmulinteger"  # the default
        # the weight encoding ONNX Runtime chose for this CPU, and why, are recorded with the row
        plan = int8_plan_of(registry.get("runtime", "onnxruntime"), cpu_facts(), "matmulinteger")
        assert row["runtime_info"]["quantize"]["weights_encoding"] == plan.weights
        assert row["runtime_info"]["quantize"]["weights_reason"] == plan.reason
        assert row["runtime_info"]["quantize"]["int8_ops"]["MatMulInteger"] > 0
        for column in ("mse", "mae", "latency_ms_median", "model_bytes", "model_bytes_compressed", "peak_rss_mb",
                       "rel_err_vs_torch", "max_abs_err_vs_torch", "speedup_vs_dense"):
            assert row[column] is not None and row[column] > 0, column
        assert row["model_bytes"] < row["runtime_info"]["fp32_model_bytes"]  # int8 weights: smaller file
        assert row["dense_cell_key"] == dense_fp32["cell_key"]
        assert row["mse"] != row["runtime_info"]["fp32_metrics"]["mse"]  # measured through the INT8 runtime
    pruned = by[("magnitude", "onnxruntime", "static-int8", 3)]
    assert pruned["model_bytes_compressed"] < by[(DENSE, "onnxruntime", "static-int8", 3)]["model_bytes_compressed"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {(r["pruner"], r["runtime"]) for r in failed} == {(DENSE, "onnxruntime"), ("magnitude", "onnxruntime")}
    for row in failed:
        assert "relative error" in row["error"] and row["rel_err_vs_torch"] > 1e-9
        assert row["mse"] is None and row["latency_ms_median"] is None  # no fp32 figure passed off as INT8


def test_spec_run_honours_format_and_runs_sparseml_qat(registry, tmp_path):
    """``format: qdq`` writes a QDQ graph, ``method: sparseml-qat`` fine-tunes (zeros held) before writing."""
    from tsbench_core.runner import run

    spec_dict = tiny_spec(name="int8-qat", runtimes=[{"plugin": "onnxruntime"}])
    spec_dict["training"] |= {"epochs": 1, "max_train_batches": 5}
    spec_dict["pruning"] = [
        {"pruner": "magnitude", "sparsities": [0.5], "quantize": {"calibration_batches": 2, "tolerance": 0.5,
                                                                  "format": "qdq"}},
        {"pruner": "magnitude", "sparsities": [0.5], "quantize": {"method": "sparseml-qat", "calibration_batches": 2,
                                                                  "tolerance": 0.5, "epochs": 1,
                                                                  "max_train_batches": 3}},
    ]
    spec = parse_spec(json.dumps(spec_dict), "s.json")
    with Store(tmp_path / "r.db") as store:
        run(spec, store, registry=registry)
        rows = [r for r in store.rows("int8-qat") if r["pruner"] == "magnitude" and r["quantize"]]
    by = {r["quantize"]: r for r in rows}
    qdq = by["static-int8"]
    assert qdq["status"] == "ok", qdq["error"]
    assert qdq["runtime_info"]["quantize"]["format"] == "qdq"
    qat = by["sparseml-qat"]
    assert qat["status"] == "ok", qat["error"]
    info = qat["runtime_info"]["quantize"]
    assert info["method"] == "sparseml-qat" and info["format"] == "matmulinteger"
    assert info["qat"]["zeros_held"] > 0 and info["qat"]["quantized_linears"]
    assert qat["mse"] is not None and qat["mse"] != qdq["mse"]


def test_qat_runs_once_for_every_runtime_cell_of_a_pruned_model(registry, tmp_path, monkeypatch):
    """Two INT8 cells (two batch sizes) of one QAT entry share one stored QAT step; a second run retrains nothing."""
    import sparse_runtime.qat as qat_module
    from tsbench_core.runner import run

    calls = []
    original = qat_module.qat_finetune

    def counting(*args, **kwargs):
        calls.append(kwargs["epochs"])
        return original(*args, **kwargs)

    monkeypatch.setattr(qat_module, "qat_finetune", counting)
    spec_dict = tiny_spec(name="qat-once", runtimes=[{"plugin": "onnxruntime"}])
    spec_dict["timing"] |= {"batch_sizes": [2, 4]}
    spec_dict["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5], "quantize": {
        "method": "sparseml-qat", "calibration_batches": 2, "tolerance": 0.5, "epochs": 1, "max_train_batches": 3}}]
    spec = parse_spec(json.dumps(spec_dict), "s.json")
    with Store(tmp_path / "r.db") as store:
        run(spec, store, registry=registry)
        rows = [r for r in store.rows("qat-once") if r["quantize"] == "sparseml-qat"]
    assert sorted((r["pruner"], r["batch_size"]) for r in rows) == [(DENSE, 2), (DENSE, 4), ("magnitude", 2),
                                                                    ("magnitude", 4)]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert calls == [1, 1]  # the dense reference and the pruned model, each once
    first, second = (r["runtime_info"]["quantize"]["qat"] for r in rows if r["pruner"] == "magnitude")
    assert first == second and first["zeros_held"] > 0
    stored = [json.loads(p.read_text()) for p in (tmp_path / "artifacts").glob("*.json")]
    assert [m["kind"] for m in stored].count("qat") == 2
    with Store(tmp_path / "r2.db") as store:  # a new store beside it shares the artifacts: QAT is found
        run(spec, store, registry=registry)
        assert all(r["status"] == "ok" for r in store.rows("qat-once") if r["quantize"])
    assert calls == [1, 1]


def test_bench_quantize_int8_via_the_cli(registry, capsys):
    from tsbench_core.cli import main

    runtimes = ["onnxruntime"] + (["deepsparse"] if availability_of(registry.get("runtime", "deepsparse")).available
                                  else [])
    argv = ["bench", "--model", "dlinear", "--sparsity", "0.8", "--batch-size", "4",
            "--threads", "1", "--warmup", "1", "--repeats", "3",
            "--quantize", "int8", "--json", "--runtime", "torch-eager"]
    for name in runtimes:
        argv += ["--runtime", name]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    int8 = {r["runtime"]: r for r in rows if r["precision"] == "int8"}
    fp32 = {r["runtime"]: r for r in rows if r["precision"] == "fp32"}
    assert set(int8) == set(runtimes) and set(fp32) == {"torch-eager", *runtimes}
    for name, row in int8.items():
        assert row["status"] == "ok", row.get("reason")
        # timed beside the fp32 dense model of the same runtime (its own pair: not the fp32 row's timing)
        assert row["dense_cell_key"] == fp32[name]["dense_cell_key"] and row["dense_ms"] > 0
        assert row["speedup"] == pytest.approx(row["dense_ms"] / row["pruned_ms"])
        assert row["speedup_vs_eager_dense"] == pytest.approx(fp32["torch-eager"]["dense_ms"] / row["pruned_ms"])
        assert 0 < row["int8_rel_err"] <= 0.1
        assert row["pruned_model_bytes_compressed"] < fp32[name]["pruned_model_bytes_compressed"]
    if "deepsparse" in int8:  # the whole INT8 graph runs inside the engine
        assert int8["deepsparse"]["pruned_info"]["fraction_of_supported_ops"] == 1.0


def test_report_shows_int8_beside_its_fp32_twin():
    """On fabricated rows (not measurements): the INT8 table pairs each INT8 cell with the fp32 cell of the same
    weights and runtime, and the size trade-off plot is drawn only when INT8 cells exist."""
    from tsbench_core.report.data import Section
    from tsbench_core.report.plots import size_tradeoff
    from tsbench_core.report.tables import int8_table, latency_table

    base = {"spec_name": "s", "dataset": "d", "pred_len": 8, "seq_len": 16, "model": "m", "batch_size": 4,
            "runtime": "onnxruntime", "status": "ok", "pruner": "magnitude", "target_sparsity": 0.9}
    fp32 = {**base, "quantize": None, "mse": 0.5, "model_bytes": 4000, "model_bytes_compressed": 2100,
            "peak_rss_mb": 10.0, "latency_ms_median": 2.0}
    int8 = {**base, "quantize": "static-int8", "mse": 0.52, "model_bytes": 1500, "model_bytes_compressed": 900,
            "peak_rss_mb": 6.0, "latency_ms_median": 1.0, "rel_err_vs_torch": 0.03, "speedup_vs_dense": 3.0}
    dense = {**base, "pruner": DENSE, "target_sparsity": 0.0, "quantize": None, "mse": 0.4,
             "model_bytes": 4000, "model_bytes_compressed": 4000, "latency_ms_median": 3.0}
    section = Section("s", "d", 8, 16, [dense, fp32, int8])
    table = int8_table(section)
    assert table is not None and len(table.rows) == 1
    cells = dict(zip(table.headers, table.rows[0], strict=True))
    assert cells["MSE fp32"] == "0.5000" and cells["MSE int8"] == "0.5200"
    assert cells["ΔMSE int8 vs fp32"] == "+4.0%"  # 0.52 / 0.5 - 1
    assert cells["MB int8 (compr.)"] == "0.001" and cells["MB fp32 (compr.)"] == "0.002"
    assert cells["int8 speedup vs dense fp32"] == "3.00×"
    assert cells["pruner"] == "magnitude+static-int8"
    qat = {**int8, "quantize": "sparseml-qat", "mse": 0.49}
    qat_rows = int8_table(Section("s", "d", 8, 16, [dense, fp32, int8, qat])).rows
    # the two methods told apart
    assert sorted(r[1] for r in qat_rows) == ["magnitude+sparseml-qat", "magnitude+static-int8"]
    # fp32 and int8 cells of the same job are separate latency rows, the int8 one labelled
    assert [row[1] for row in latency_table(section).rows] == ["dense", "magnitude", "magnitude+static-int8"]
    assert size_tradeoff(section) is not None
    plain = Section("s", "d", 8, 16, [dense, fp32])
    assert int8_table(plain) is None and size_tradeoff(plain) is None


def test_the_measure_step_runs_the_quantizer_the_method_names(registry, tmp_path):
    """A third-party quantizer (registered like any plugin) is what an INT8 cell runs; it gets the runtime params'
    opset and the runtime's INT8 plan, and its graph is what the runtime opens and the row records."""
    from tsbench_core.hookspecs import hookimpl
    from tsbench_core.registry import load_plugins
    from tsbench_core.runner import run

    builtin = registry.quantizers["static-int8"]
    jobs = []

    class Recording:
        name, description, params_model = "recording", "static-int8, recorded", builtin.params_model

        def quantize(self, config, job):
            jobs.append(job)
            graph = builtin.quantize(config, job)
            graph.info["recorded"] = True
            return graph

    class Plugin:
        @hookimpl
        def tsbench_register_quantizers(self, register) -> None:
            register(Recording())

    extended = load_plugins(extra=(Plugin(),))
    spec_dict = tiny_spec(name="recording", runtimes=[{"plugin": "onnxruntime", "params": {"opset": 13}}])
    spec_dict["pruning"] = [{"pruner": "magnitude", "sparsities": [0.5], "quantize": {
        "method": "recording", "calibration_batches": 2, "tolerance": 0.5}}]
    spec = parse_spec(json.dumps(spec_dict), "s.json")
    validate_against(spec, extended, "s.json")
    with Store(tmp_path / "r.db") as store:
        run(spec, store, registry=extended)
        rows = [r for r in store.rows("recording") if r["quantize"] == "recording"]
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert all(r["runtime_info"]["quantize"]["recorded"] for r in rows)
    assert all(r["runtime_info"]["opset"] == 13 for r in rows)  # the INT8 graph's export used the runtime's opset
    assert [job.opset for job in jobs] == [13, 13] and all(len(job.calibration) == 2 for job in jobs)
    plan = int8_plan_of(registry.get("runtime", "onnxruntime"), cpu_facts(), "matmulinteger")
    assert {job.plan for job in jobs} == {plan}
