"""specs/study/figures.py: the figures docs/study.md quotes, from a results CSV — one row per seed picked per
setting, mean ± sd by the statistics module, MAC reduction against the dense model of the same seed."""

from __future__ import annotations

import csv
import importlib.util
import statistics
from pathlib import Path

from tsbench_testing import REPO

from tsbench_core.store import COLUMN_NAMES


def _figures():
    spec = importlib.util.spec_from_file_location("study_figures", REPO / "specs" / "study" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(**values: object) -> dict[str, object]:
    base = {"status": "ok", "model": "m", "runtime": "torch-eager", "batch_size": "32", "fine_tune": "",
            "quantize": "", "target_sparsity": "0.0", "train_info": ""}
    return {**{c: "" for c in COLUMN_NAMES}, **base, **values}


def _csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMN_NAMES))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_settings_are_picked_per_seed_and_summarised(tmp_path: Path) -> None:
    figures = _figures()
    dense_mse = [0.40, 0.41, 0.43]
    ft_mse = [0.45, 0.47, 0.44]
    rows = [_row(pruner="dense", seed=s, mse=m, macs_dense=1000, train_info='{"epochs_run": 7, "best_epoch": 3}')
            for s, m in zip((1, 2, 3), dense_mse, strict=True)]
    rows += [_row(pruner="magnitude", seed=s, mse=m, target_sparsity="0.9", fine_tune='{"epochs": 1}')
             for s, m in zip((1, 2, 3), ft_mse, strict=True)]
    rows += [_row(pruner="magnitude", seed=1, mse=9.0, target_sparsity="0.9"),  # one-shot: another setting
             _row(pruner="magnitude", seed=2, mse=9.0, target_sparsity="0.9", fine_tune='{"epochs": 1}',
                  status="failed")]
    # a structured model is smaller: its own macs_dense is the pruned count, the reduction is against dense
    rows += [_row(pruner="structured", runtime="onnxruntime", seed=s, target_sparsity="0.488", macs_dense=250,
                  macs_effective=250, speedup_vs_dense=v) for s, v in ((1, 1.2), (2, 1.3))]
    loaded = figures.load(_csv(tmp_path / "r.csv", rows))
    assert len(loaded) == len(rows) - 1  # failed rows are not figures

    picked = figures.pick(loaded, "m", pruner="magnitude", target="0.9", fine_tuned=True)
    assert sorted(float(r["mse"]) for r in picked) == sorted(ft_mse)
    expected = f"{statistics.mean(ft_mse):.4f} ± {statistics.stdev(ft_mse):.4f} (n = 3)"
    assert expected in "\n".join(figures.accuracy_table(loaded, ["m"]))

    baselines = "\n".join(figures.dense_baselines(loaded, ["m"]))
    assert f"{statistics.mean(dense_mse):.4f} ± {statistics.stdev(dense_mse):.4f} (n = 3)" in baselines
    assert "7 (4), 7 (4), 7 (4)" in baselines  # best_epoch is 0-based
    assert f"not in this CSV ({len(loaded)})" in baselines  # a CSV from before results had cpu columns

    structured = next(line for line in figures.structured_table(loaded, "m") if line.startswith("| 48.8%"))
    cells = [c.strip() for c in structured.strip("|").split("|")]
    assert cells[1] == "4.00 ± 0.00× (n = 2)"  # 1000 / 250
    assert cells[2] == f"{statistics.mean([1.2, 1.3]):.2f} ± {statistics.stdev([1.2, 1.3]):.2f}× (n = 2)"


def test_one_value_says_n_1_and_nothing_says_a_dash() -> None:
    figures = _figures()
    assert figures.mean_sd([0.5]) == "0.5000 (n = 1)"
    assert figures.mean_sd([None, None]) == "–"


def test_a_budget_takes_the_best_setting_whose_every_seed_fits(tmp_path: Path) -> None:
    figures = _figures()
    rows = [_row(pruner="dense", runtime="deepsparse", seed=1, mse=0.38, latency_ms_median=40.0),
            _row(pruner="dense", runtime="deepsparse", seed=2, mse=0.39, latency_ms_median=60.0),  # one seed over 50
            _row(pruner="magnitude", runtime="deepsparse", seed=1, target_sparsity="0.9", mse=0.45,
                 latency_ms_median=10.0),
            _row(pruner="magnitude", runtime="deepsparse", seed=2, target_sparsity="0.9", mse=0.47,
                 latency_ms_median=12.0)]
    loaded = figures.load(_csv(tmp_path / "b.csv", rows))
    lines = {line.split("|")[1].strip(): line for line in figures.budget_table(loaded, (5.0, 50.0, 100.0))}
    assert "none" in lines["5"]
    assert "m magnitude 90.0% deepsparse" in lines["50"] and f"{statistics.mean([0.45, 0.47]):.4f}" in lines["50"]
    assert "m dense deepsparse" in lines["100"] and "2 of 2" in lines["100"]


def test_the_magnitude_curve_pairs_each_sparsity_with_its_runtimes_speedups(tmp_path: Path) -> None:
    figures = _figures()
    rows = [_row(pruner="magnitude", seed=s, target_sparsity="0.832228", mse=m, speedup_vs_dense=1.0)
            for s, m in ((1, 0.41), (2, 0.43))]
    rows += [_row(pruner="magnitude", runtime="deepsparse", seed=s, target_sparsity="0.832228", mse=0.9,
                  speedup_vs_dense=v) for s, v in ((1, 1.8), (2, 2.0))]
    rows += [_row(pruner="magnitude", seed=1, target_sparsity="0.832228", mse=5.0, fine_tune='{"epochs": 1}')]
    loaded = figures.load(_csv(tmp_path / "m.csv", rows))
    line = next(line for line in figures.magnitude_table(loaded, "m") if line.startswith("| 83.2%"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == f"{statistics.mean([0.41, 0.43]):.4f} ± {statistics.stdev([0.41, 0.43]):.4f} (n = 2)"
    assert cells[2] == f"{statistics.mean([1.8, 2.0]):.2f} ± {statistics.stdev([1.8, 2.0]):.2f}× (n = 2)"
    assert cells[3] == "1.00 ± 0.00× (n = 2)"
