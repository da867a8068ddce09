"""``tsbench results --no-samples`` / ``tsbench report --no-samples``: the raw latencies left out, nothing else."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tsbench_core.cli import main


def _csv_rows(text: str) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(text)))


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    return set()


def _results(store: Path, capsys, *extra: str) -> str:
    assert main(["results", "--store", str(store), "--format", "csv", *extra]) == 0
    return capsys.readouterr().out


def test_no_samples_drops_only_the_raw_latencies(report_store: Path, capsys) -> None:
    full = _csv_rows(_results(report_store, capsys))
    lean = _csv_rows(_results(report_store, capsys, "--no-samples"))
    assert [r["cell_key"] for r in full] == [r["cell_key"] for r in lean]
    timed = 0
    for whole, stripped in zip(full, lean, strict=True):
        assert {k: v for k, v in whole.items() if k != "runtime_info"} == \
               {k: v for k, v in stripped.items() if k != "runtime_info"}
        if not whole["runtime_info"]:
            continue
        info, lean_info = json.loads(whole["runtime_info"]), json.loads(stripped["runtime_info"])
        assert "samples_ms" not in _keys(lean_info)
        if "samples_ms" in info.get("timing", {}):
            timed += 1
            samples = info["timing"]["samples_ms"]
            # the summary that stays is the one the samples give
            assert lean_info["timing"]["median_ms"] == info["timing"]["median_ms"]
            assert np.median(samples) == np.float64(info["timing"]["median_ms"])
    assert timed > 0


def test_report_results_csv_without_samples_matches_the_results_command(report_store: Path, tmp_path: Path,
                                                                        capsys) -> None:
    assert main(["report", "--store", str(report_store), "--out", str(tmp_path / "r"), "--no-samples"]) == 0
    capsys.readouterr()
    written = (tmp_path / "r" / "results.csv").read_text()
    assert "samples_ms" not in written
    assert _csv_rows(written) == _csv_rows(_results(report_store, capsys, "--no-samples"))
