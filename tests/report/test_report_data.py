"""Report data on hand-made rows: Pareto front, grouping, failed and skipped cells, several specs and tasks."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

from tsbench_core.report import write_report
from tsbench_core.report.data import group_sections, model_rows, pareto_front
from tsbench_core.report.tables import latency_table
from tsbench_core.store import Store


def brute_force_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of points that no other point dominates (<= on both, < on one), by checking every pair."""
    front = set()
    for i, (x, y) in enumerate(points):
        dominated = any(ox <= x and oy <= y and (ox < x or oy < y) for ox, oy in points)
        if not dominated:
            front.add(i)
    return front


def test_pareto_front_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(200):
        points = [(rng.choice([0.5, 1.0, 2.0, 3.0, rng.random()]), rng.choice([0.1, 0.2, rng.random()]))
                  for _ in range(rng.randint(1, 12))]
        front = pareto_front(points)
        distinct = {points[i] for i in front}
        assert len(distinct) == len(front)  # exact duplicates are listed once
        assert distinct == {points[i] for i in brute_force_front(points)}
        assert [points[i][0] for i in front] == sorted(points[i][0] for i in front)


def test_pareto_front_small_example() -> None:
    #            fast+bad   slow+good   dominated   fastest+worst
    points = [(1.0, 0.5), (4.0, 0.2), (5.0, 0.6), (0.5, 0.9)]
    assert pareto_front(points) == [3, 0, 1]


def row(**values: Any) -> dict[str, Any]:
    base = {"spec_name": "s", "dataset": "etth1", "pred_len": 96, "seq_len": 96, "model": "dlinear",
            "pruner": "dense", "target_sparsity": 0.0, "achieved_sparsity": 0.0, "runtime": "torch-eager",
            "batch_size": 32, "status": "ok", "mse": 0.4, "mae": 0.4, "latency_ms_median": 10.0,
            "params_total": 1000, "params_nonzero": 1000, "macs_dense": 5000, "macs_effective": 5000}
    return base | values


def test_grouping_and_model_rows() -> None:
    rows = [row(), row(pred_len=192), row(spec_name="t"), row(runtime="onnxruntime", status="failed", mse=None),
            row(pruner="magnitude", target_sparsity=0.5, runtime="onnxruntime", status="failed"),
            row(pruner="magnitude", target_sparsity=0.5, mse=0.5)]
    sections = group_sections(rows)
    assert [(s.spec_name, s.pred_len) for s in sections] == [("s", 96), ("s", 192), ("t", 96)]
    jobs = model_rows(sections[0].rows)
    assert len(jobs) == 2  # (dlinear, dense) and (dlinear, magnitude 0.5), whatever the runtimes
    pruned = next(j for j in jobs if j["pruner"] == "magnitude")
    assert pruned["status"] == "ok" and pruned["mse"] == 0.5  # an ok row wins over a failed one


def test_latency_table_shows_status_of_untimed_cells() -> None:
    rows = [row(), row(runtime="deepsparse", status="skipped", latency_ms_median=None),
            row(pruner="magnitude", target_sparsity=0.5, achieved_sparsity=0.5, latency_ms_median=5.0,
                speedup_vs_dense=2.0)]
    table = latency_table(group_sections(rows)[0])
    assert table.headers[-2:] == ["torch-eager", "deepsparse"]
    dense, pruned = table.rows
    assert dense[-2:] == ["10.000", "skipped"]
    assert pruned[-2:] == ["5.000 (2.00×)", ""]  # no deepsparse cell for the pruned model at all


def test_report_of_several_specs_with_failures(tmp_path: Path) -> None:
    store_path = tmp_path / "r.db"
    counter = itertools.count()
    with Store(store_path) as store:
        for spec, pred_len in (("a", 192), ("b", 96)):
            for pruner, sparsity, latency in (("dense", 0.0, 10.0), ("magnitude", 0.5, 6.0),
                                              ("magnitude", 0.9, 4.0)):
                store.put(row(cell_key=f"k{next(counter)}", spec_name=spec, pred_len=pred_len, pruner=pruner,
                              target_sparsity=sparsity, achieved_sparsity=sparsity, mse=0.4 + sparsity / 10,
                              latency_ms_median=latency, speedup_vs_dense=10.0 / latency,
                              macs_effective=int(5000 * (1 - sparsity))))
        store.put(row(cell_key="bad", spec_name="a", runtime="onnxruntime", status="failed", mse=None,
                      latency_ms_median=None, error="correctness gate failed: max abs error 0.3"))
        store.put(row(cell_key="skip", spec_name="a", runtime="deepsparse", status="skipped", mse=None,
                      latency_ms_median=None, error="runtime 'deepsparse' is unavailable: not installed"))
    written = write_report(store_path, None, tmp_path / "out", [])
    pngs = sorted(p.name for p in written if p.suffix == ".png")
    assert len(pngs) == 2 * 4  # two (spec, dataset, horizon) sections, four plots each
    assert "a_etth1_H192_pareto.png" in pngs and "b_etth1_H96_speedup_vs_sparsity.png" in pngs
    assert "a_etth1_H192_mse_vs_density.png" in pngs
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert markdown.count("\n## etth1, horizon") == 3  # the failed and skipped rows of spec a are at H96
    assert "## Failed and skipped cells" in markdown
    assert "| failed | correctness gate failed: max abs error 0.3 |" in markdown
    assert "| skipped | runtime 'deepsparse' is unavailable: not installed |" in markdown
    only_b = write_report(store_path, "b", tmp_path / "out_b", [])
    assert len([p for p in only_b if p.suffix == ".png"]) == 4
    assert "Failed and skipped" not in (tmp_path / "out_b" / "report.md").read_text(encoding="utf-8")
