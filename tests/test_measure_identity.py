"""One measure step: row identity (train key, prune key, variant), timing of a cell beside its dense reference,
and the pytest plugin's ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tsbench_testing import tiny_spec

from tsbench_core.cells import expand
from tsbench_core.pytest_plugin import cell_id
from tsbench_core.report.data import pruner_label
from tsbench_core.runner import run
from tsbench_core.seed_groups import group_over_seeds
from tsbench_core.spec import TimingConfig, parse_spec, validate_against
from tsbench_core.store import Store
from tsbench_core.variants import pruning_part, variant_label


def _two_variants() -> dict:
    return tiny_spec(name="variants", pruning=[
        {"pruner": "magnitude", "sparsities": [0.5]},
        {"pruner": "magnitude", "sparsities": [0.5], "params": {"scope": "layer"}},
    ])


def _cells(spec: dict, registry):
    parsed = parse_spec(json.dumps(spec), "s.json")
    validate_against(parsed, registry, "s.json")
    return expand(parsed, registry)


def test_variant_label_names_the_non_default_options_only(registry) -> None:
    cells = _cells(_two_variants(), registry)
    labels = {c.prune.key: variant_label(c, registry) for c in cells}
    assert sorted(labels.values()) == ["", "", "scope=layer"]  # dense, magnitude default, magnitude global
    # the pytest ids tell the variants apart and carry nothing `-k` cannot parse
    ids = [cell_id(c, variant_label(c, registry, with_model=False)) for c in cells]
    assert len(set(ids)) == len(ids)
    assert "synthetic-H8-dlinear-seed0-magnitude-s0.5-scope_layer-torch-eager-bs4" in ids
    assert not any(ch in i for i in ids for ch in "@= ")
    assert pruning_part('model.d_model=8 block=4 runtime.opset=17 int8.per_channel=true') == \
        "block=4 int8.per_channel=true"


def test_protocol_fields_keep_existing_timing_dumps() -> None:
    assert set(TimingConfig().model_dump()) == {"batch_sizes", "warmup", "repeats", "threads", "verify_batches",
                                                "atol", "rtol"}  # cell keys of existing specs unchanged
    assert TimingConfig(min_time_s=0.5).model_dump()["min_time_s"] == 0.5


@pytest.fixture(scope="module")
def variant_store(tmp_path_factory, registry) -> Path:
    store = tmp_path_factory.mktemp("variants") / "results.db"
    spec = parse_spec(json.dumps(_two_variants()), "s.json")
    validate_against(spec, registry, "s.json")
    summary = run(spec, store, registry=registry)
    assert summary.failed == 0
    return store


@pytest.fixture(scope="module")
def variant_rows(variant_store: Path) -> list[dict]:
    with Store(variant_store) as db:
        return db.rows()


def test_the_report_shows_each_variant_in_its_own_row(variant_store: Path, tmp_path: Path) -> None:
    from tsbench_core.report import write_report

    write_report(variant_store, "variants", tmp_path / "report", [])
    markdown = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    for title in ("**Accuracy and size", "**Latency per batch"):  # each table keeps the variants apart
        lines = markdown.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        table = []
        for line in lines[start + 4:]:
            if not line.startswith("|"):
                break
            table.append(line)
        labels = sorted(line.split("|")[2].strip() for line in table if line.startswith("| dlinear | magnitude"))
        assert labels == ["magnitude", "magnitude (scope=layer)"], (title, labels)  # never merged into one row


def test_two_variants_give_two_rows_and_two_report_rows(variant_rows: list[dict]) -> None:
    pruned = [r for r in variant_rows if r["pruner"] == "magnitude"]
    assert sorted(r["variant"] for r in pruned) == ["", "scope=layer"]
    assert len({r["prune_key"] for r in pruned}) == 2 and len({r["train_key"] for r in variant_rows}) == 1
    assert len(group_over_seeds(pruned)) == 2  # the report's settings do not merge them
    assert sorted(pruner_label(r) for r in pruned) == ["magnitude", "magnitude (scope=layer)"]


def test_speedup_is_the_pairs_and_names_it(variant_rows: list[dict]) -> None:
    dense = next(r for r in variant_rows if r["pruner"] == "dense")
    assert dense["speedup_vs_dense"] is None and "pair" not in dense["runtime_info"]["timing"]
    for row in (r for r in variant_rows if r["pruner"] == "magnitude"):
        timing = row["runtime_info"]["timing"]
        pair = timing["pair"]
        assert pair["dense_cell_key"] == row["dense_cell_key"] == dense["cell_key"]
        # the medians are those of the raw samples stored, and the speedup is their ratio
        assert row["latency_ms_median"] == pytest.approx(float(np.median(timing["samples_ms"])))
        assert row["dense_latency_ms_paired"] == pytest.approx(float(np.median(pair["samples_ms"])))
        assert row["speedup_vs_dense"] == pytest.approx(row["dense_latency_ms_paired"] / row["latency_ms_median"])
        assert len(timing["samples_ms"]) == len(pair["samples_ms"]) == 2  # the spec's repeats, each
        q1, q3 = np.percentile(timing["samples_ms"], [25, 75])
        assert row["latency_ms_iqr"] == pytest.approx(q3 - q1)
        assert row["latency_unstable"] == int((q3 - q1) / row["latency_ms_median"] > 0.10)
        assert row["prepare_s"] > 0 and row["threads"] == pair["threads"] == 1


def test_fp32_rows_measure_their_runtimes_accuracy(variant_rows: list[dict]) -> None:
    for row in variant_rows:
        torch_metrics = row["runtime_info"]["torch_metrics"]
        # through the torch-eager session over every test window: torch's own figures, up to summation order
        assert row["accuracy_from"] == "runtime"
        assert row["mse"] == pytest.approx(torch_metrics["mse"], rel=1e-5)
        assert row["mae"] == pytest.approx(torch_metrics["mae"], rel=1e-5)


def test_runtime_accuracy_off_says_whose_accuracy_the_row_shows(registry, tmp_path) -> None:
    raw = tiny_spec(name="torch-accuracy", pruning=[])
    raw["timing"]["runtime_accuracy"] = False
    spec = parse_spec(json.dumps(raw), "s.json")
    with Store(tmp_path / "r.db") as db:
        run(spec, db, registry=registry)
        (row,) = db.rows()
    assert row["accuracy_from"] == "torch" and row["mse"] == row["runtime_info"]["torch_metrics"]["mse"]


def test_the_equivalence_spec_holds_the_cells_bench_times(registry) -> None:
    """specs/perf/bench_equivalence.json is the spec `tsbench bench` builds for its documented flags: `tsbench run`
    and `pytest --tsbench-spec` on it time the very cells (same keys) bench stores."""
    from tsbench_testing import REPO

    from tsbench_core.bench import bench_spec

    runtimes = [registry.get("runtime", n) for n in ("torch-eager", "onnxruntime")]
    built = bench_spec("transformer", "magnitude", 0.9, runtimes, 32, threads=2, warmup=3, repeats=20, rounds=4,
                       model_params={}, pruner_params={}, seq_len=96, label_len=48, pred_len=96, enc_in=7,
                       atol=1e-3, rtol=1e-3, quantize="int8", quantize_tolerance=0.1, calibration_batches=4)
    path = REPO / "specs" / "perf" / "bench_equivalence.json"
    from_file = parse_spec(path.read_text(), str(path))
    from_bench = parse_spec(json.dumps(built), "bench")
    keys = [c.key for c in expand(from_file, registry)]
    assert keys == [c.key for c in expand(from_bench, registry)]
    assert len(keys) == 6  # dense and magnitude on both runtimes, and each in INT8 on onnxruntime
