"""``tsbench_core.bench``: rows per runtime, dense reference, the gate before timing, skipped/failed rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sparse_runtime.eager import EagerSession, TorchEagerRuntime
from tsbench_core.bench import bench, render_rows
from tsbench_core.errors import UserError
from tsbench_core.hookspecs import hookimpl
from tsbench_core.registry import BUILTIN_PLUGINS, load_plugins

SMALL = dict(seq_len=24, label_len=12, pred_len=8, enc_in=3, warmup=1, repeats=3, threads=1)


class OffByOneSession(EagerSession):
    def run(self, inputs):
        return super().run(inputs) + 1.0


class WrongRuntime(TorchEagerRuntime):
    """Eager, but every output is off by one: the gate must stop it before timing."""

    name = "wrong-eager"

    def prepare(self, model, example_inputs, params, *, threads, workdir):
        session = super().prepare(model, example_inputs, params, threads=threads, workdir=workdir)
        return OffByOneSession(session.model, session.threads, {**session.info, "runtime": self.name})


class _Extra:
    @hookimpl
    def tsbench_register_runtimes(self, register):
        register(WrongRuntime())


@pytest.fixture(scope="module")
def registry():
    return load_plugins(builtins=BUILTIN_PLUGINS, extra=(_Extra(),))


def test_bench_rows_per_runtime(registry) -> None:
    rows = bench("dlinear", "magnitude", 0.5, ["torch-eager", "onnxruntime", "semi-structured", "wrong-eager"], 4,
                 registry=registry, **SMALL)
    by = {r["runtime"]: r for r in rows}
    assert list(by) == ["torch-eager", "onnxruntime", "semi-structured", "wrong-eager"]
    for name in ("torch-eager", "onnxruntime"):
        r = by[name]
        assert r["status"] == "ok", r.get("reason")
        assert r["dense_max_abs_err"] < 1e-4 and r["pruned_max_abs_err"] < 1e-4
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["pruned_ms"])
        assert r["dense_p10_ms"] <= r["dense_ms"] <= r["dense_p90_ms"]
        assert r["speedup_vs_eager_dense"] == pytest.approx(by["torch-eager"]["dense_ms"] / r["pruned_ms"])
        assert r["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
        assert r["mac_reduction_effective"] > 1.0 and r["mac_reduction_dense_kernels"] == pytest.approx(1.0)
    assert by["semi-structured"]["status"] == "skipped" and "CUDA" in by["semi-structured"]["reason"]
    wrong = by["wrong-eager"]
    assert wrong["status"] == "failed" and "max abs error 1" in wrong["reason"]
    assert "dense_ms" not in wrong  # never timed


def test_bench_dense_only_and_rendering(registry, capsys) -> None:
    rows = bench("dlinear", "magnitude", 0.0, ["torch-eager"], 2, registry=registry, **SMALL)
    assert rows[0]["status"] == "ok" and "pruned_ms" not in rows[0] and "speedup" not in rows[0]
    render_rows(rows, as_json=True)
    parsed = json.loads(capsys.readouterr().out)
    assert parsed[0]["runtime"] == "torch-eager" and np.isfinite(parsed[0]["dense_ms"])
    render_rows(rows, as_json=False)
    assert "torch-eager" in capsys.readouterr().out


def test_bench_user_errors(registry) -> None:
    with pytest.raises(UserError, match="unknown runtime"):
        bench("dlinear", "magnitude", 0.5, ["onnxruntim"], 2, registry=registry, **SMALL)
    with pytest.raises(UserError, match="sparsity"):
        bench("dlinear", "magnitude", 1.5, ["torch-eager"], 2, registry=registry, **SMALL)
    with pytest.raises(UserError, match="--model-params"):
        bench("dlinear", "magnitude", 0.5, ["torch-eager"], 2, registry=registry, model_params={"nope": 1},
              **SMALL)


def test_bench_leaves_its_rows_in_the_store_it_is_given(registry, tmp_path) -> None:
    from tsbench_core.store import Store

    store = tmp_path / "s.db"
    rows = bench("dlinear", "magnitude", 0.5, ["torch-eager"], 4, registry=registry, store=store, **SMALL)
    with Store(store) as db:
        stored = {r["pruner"]: r for r in db.rows("bench")}
    assert set(stored) == {"dense", "magnitude"} and all(r["status"] == "ok" for r in stored.values())
    row, pruned = rows[0], stored["magnitude"]
    # the table is the store's figures: the pruned row, and its dense reference timed beside it
    assert row["pruned_ms"] == pruned["latency_ms_median"] and row["dense_ms"] == pruned["dense_latency_ms_paired"]
    assert row["speedup"] == pruned["speedup_vs_dense"] and pruned["dense_cell_key"] == stored["dense"]["cell_key"]
    assert row["dense_max_abs_err"] == stored["dense"]["max_abs_err_vs_torch"]
    assert pruned["runtime_info"]["timing"]["pair"]["dense_cell_key"] == stored["dense"]["cell_key"]


def test_bench_cli_store_flag(tmp_path, capsys) -> None:
    from tsbench_core.cli import main
    from tsbench_core.store import Store

    argv = ["bench", "--model", "dlinear", "--sparsity", "0.5", "--runtime", "torch-eager", "--batch-size", "2",
            "--seq-len", "24", "--label-len", "12", "--pred-len", "8", "--enc-in", "3", "--warmup", "0",
            "--repeats", "2", "--threads", "1", "--store", str(tmp_path / "s.db"), "--json"]
    assert main(argv) == 0
    (row,) = json.loads(capsys.readouterr().out)
    with Store(tmp_path / "s.db") as db:
        stored = {r["pruner"]: r for r in db.rows("bench")}
    assert set(stored) == {"dense", "magnitude"} and row["cell_key"] == stored["magnitude"]["cell_key"]


def test_bench_int8_of_a_half_pruned_dlinear_passes_the_gate(registry) -> None:
    """DLinear starts with every weight 1/seq_len; on those tied weights 50 % global magnitude zeroed its whole
    trend layer, and the INT8 graph of that degenerate model failed the gate (relative error 0.14 > 0.1). Bench
    trains a few steps first (``BENCH_TRAINING``), so the pruner meets distinct weights, as on a trained model."""
    rows = bench("dlinear", "magnitude", 0.5, ["onnxruntime"], 32, registry=registry, quantize="int8",
                 warmup=1, repeats=3, threads=1)
    int8 = next(r for r in rows if r["precision"] == "int8")
    assert int8["status"] == "ok", int8.get("reason")
    assert int8["int8_rel_err"] < 0.1 and int8["cpu"]["fingerprint"]
