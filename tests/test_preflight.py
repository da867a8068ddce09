"""Dataset preflight: a data problem stops `tsbench run` before anything is stored, with exit 2 and one line."""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from tsbench_testing import tiny_spec

from tsbench_core.cli import main


def csv_file(tmp_path, rows: int = 300, nan_at: int | None = None):
    frame = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M"),
                          "a": np.sin(np.arange(rows) / 5.0), "OT": np.cos(np.arange(rows) / 7.0)})
    if nan_at is not None:
        frame.loc[nan_at, "a"] = np.nan
    path = tmp_path / "series.csv"
    frame.to_csv(path, index=False)
    return path


def csv_spec(path, name="preflight", seq_len=16, pred_len=8):
    return tiny_spec(name=name, datasets=[{"plugin": "csv", "params": {"path": str(path)}, "seq_len": seq_len,
                                           "label_len": 8, "pred_len": [pred_len]}])


def table_counts(db) -> tuple[int, int]:
    if not db.exists():
        return (0, 0)
    with sqlite3.connect(db) as conn:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("cells", "runs"))


@pytest.mark.parametrize("problem", ["missing", "nan", "short"])
def test_a_data_problem_exits_2_with_one_located_line_and_stores_nothing(tmp_path, write_spec, capsys, problem):
    db = tmp_path / "store" / "r.db"
    if problem == "missing":
        spec, expected = csv_spec(tmp_path / "absent.csv"), "absent.csv not found"
    elif problem == "nan":
        spec, expected = csv_spec(csv_file(tmp_path, nan_at=41)), "column 'a', line 43: value is missing (NaN)"
    else:  # 300 rows: the 10 % validation split (30 rows + seq_len) cannot hold 16 + 96 steps
        spec, expected = csv_spec(csv_file(tmp_path), pred_len=96), "series too short"
    path = write_spec(spec)
    for _ in range(2):  # a retry neither stores a failed row nor a run row
        assert main(["run", str(path), "--store", str(db), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert err.startswith("error: preflight: datasets[0] (csv, pred_len") and expected in err
        assert table_counts(db) == (0, 0)


def test_a_dataset_problem_leaves_a_previous_run_intact(tmp_path, write_spec, capsys):
    db = tmp_path / "store" / "r.db"
    good = csv_file(tmp_path)
    assert main(["run", str(write_spec(csv_spec(good))), "--store", str(db), "--quiet"]) == 0
    before = table_counts(db)
    csv_file(tmp_path, nan_at=7)  # the same file, now damaged; a grown spec needs it again
    grown = csv_spec(good)
    grown["pruning"][0]["sparsities"] = [0.5, 0.6]
    assert main(["run", str(write_spec(grown)), "--store", str(db), "--quiet"]) == 2
    assert "line 9: value is missing (NaN)" in capsys.readouterr().err
    assert table_counts(db) == before == (2, 1)


def test_split_problems_catch_what_a_plugin_lets_through(registry):
    """A third-party plugin returning non-finite values or an empty split is caught by the host itself."""
    from plugins.datasets.synthetic import SyntheticDataset
    from tsbench_core.data import Windows
    from tsbench_core.preflight import split_problems

    plugin = SyntheticDataset()
    splits = plugin.load(plugin.params_model(length=400, n_vars=2), Windows(16, 8, 8), None)
    assert split_problems(splits) == []
    splits.val.series.values[3, 1] = float("inf")
    splits.test.series.marks_timef[-1, 0] = float("nan")  # the last row: test overlaps val by seq_len rows
    last = splits.test.series.rows - 1
    problems = split_problems(splits)
    assert problems == ["val split: values row 3 column 1 is inf (1 non-finite in that split)",
                        f"test split: time marks row {last} column 0 is nan (1 non-finite in that split)"]
