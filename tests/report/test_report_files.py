"""`tsbench report` on a small real run: the files exist, the images decode and show something, the tables and
the CSV hold the numbers of the store."""

from __future__ import annotations

import base64
import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_helpers import SPEC_NAME

from tsbench_core.cli import main
from tsbench_core.errors import UserError
from tsbench_core.report import write_report
from tsbench_core.store import Store

PLOT_STEMS = ("mse_vs_density", "speedup_vs_sparsity", "latency_vs_macs", "pareto")


@pytest.fixture(scope="module")
def report(report_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("report-out")
    return out, write_report(report_store, SPEC_NAME, out, [])


def md_table_rows(markdown: str, first_header: str, title_word: str) -> list[list[str]]:
    """Body rows of the Markdown table whose bold title contains ``title_word``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**") and title_word in line)
    assert lines[start + 2].startswith(f"| {first_header} |")
    rows = []
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_run_is_complete(stored_rows: list[dict[str, Any]]) -> None:
    # 2 models x (dense + magnitude 0.5) x torch-eager x batch size 4
    assert len(stored_rows) == 4
    assert {r["status"] for r in stored_rows} == {"ok"}


def test_files_exist(report: tuple[Path, list[Path]]) -> None:
    out, written = report
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"report.md", "report.html", "results.csv"} <= names
    slug = f"{SPEC_NAME}_synthetic_H8"
    for stem in PLOT_STEMS:
        assert {f"plots/{slug}_{stem}.png", f"plots/{slug}_{stem}.svg"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert not list(out.rglob(".*")), "temporary files left behind"


def test_plots_are_the_same_bytes_when_written_again(report: tuple[Path, list[Path]], report_store: Path,
                                                    tmp_path: Path) -> None:
    # Regenerated study plots must differ in git only where their data does (no date, no random SVG ids).
    out, written = report
    again = tmp_path / "again"
    write_report(report_store, SPEC_NAME, again, [])
    plots = [p for p in written if p.suffix in (".png", ".svg")]
    assert plots
    for path in plots:
        assert (again / path.relative_to(out)).read_bytes() == path.read_bytes(), path.name


def test_images_decode_and_are_not_blank(report: tuple[Path, list[Path]]) -> None:
    import matplotlib.image

    out, written = report
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == len(PLOT_STEMS)
    for png in pngs:
        pixels = matplotlib.image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] >= 300 and pixels.shape[1] >= 400, png.name
        colours = np.unique(pixels.reshape(-1, pixels.shape[2]).round(2), axis=0)
        assert len(colours) > 20, f"{png.name} looks empty ({len(colours)} colours)"
        # not mostly one colour: some ink on a white background
        assert (pixels[..., :3].mean(axis=2) < 0.9).mean() > 0.005, png.name
    for svg in (p for p in written if p.suffix == ".svg"):
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
        assert len(list(root.iter())) > 50, svg.name


def test_html_is_self_contained(report: tuple[Path, list[Path]]) -> None:
    out, written = report
    html = (out / "report.html").read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    pngs = sorted(p for p in written if p.suffix == ".png")
    assert sorted(base64.b64decode(e) for e in embedded) == sorted(p.read_bytes() for p in pngs)
    assert not re.search(r'src="(?!data:)', html), "the page refers to an external file"
    assert "<table" in html and "Environment" in html


def test_csv_holds_every_stored_cell(report: tuple[Path, list[Path]], stored_rows: list[dict[str, Any]]) -> None:
    out, _ = report
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        by_key = {r["cell_key"]: r for r in csv.DictReader(handle)}
    assert set(by_key) == {r["cell_key"] for r in stored_rows}
    for row in stored_rows:
        written = by_key[row["cell_key"]]
        for column in ("mse", "mae", "achieved_sparsity", "latency_ms_median"):
            assert float(written[column]) == row[column], column
        assert int(written["params_nonzero"]) == row["params_nonzero"]
        assert json.loads(written["runtime_info"]) == row["runtime_info"]


def test_markdown_tables_hold_stored_numbers(report: tuple[Path, list[Path]],
                                             stored_rows: list[dict[str, Any]]) -> None:
    out, _ = report
    markdown = (out / "report.md").read_text(encoding="utf-8")
    accuracy = {(r[0], r[1]): r for r in md_table_rows(markdown, "model", "Accuracy")}
    latency = {(r[0], r[1]): r for r in md_table_rows(markdown, "model", "Latency")}
    assert set(accuracy) == set(latency) == {(r["model"], r["pruner"]) for r in stored_rows}
    for row in stored_rows:
        acc = accuracy[(row["model"], row["pruner"])]
        assert acc[2] == "none"  # no fine-tuning
        assert acc[4] == f"{row['achieved_sparsity']:.3f}"
        assert acc[9] == "1"  # one seed: n = 1, bare values, no interval or test columns
        assert acc[10] == f"{row['mse']:.4f}" and acc[11] == f"{row['mae']:.4f}"
        lat = latency[(row["model"], row["pruner"])]
        assert lat[2] == "none" and lat[5] == "4"  # fine-tuning, batch size
        assert lat[6].startswith(f"{row['latency_ms_median']:.3f}")
        if row["pruner"] == "magnitude":
            dense = next(r for r in stored_rows if r["model"] == row["model"] and r["pruner"] == "dense")
            assert abs(row["achieved_sparsity"] - 0.5) < 0.02
            # the speedup is the pair's: the dense reference timed interleaved with this cell, recorded in the row
            pair = row["runtime_info"]["timing"]["pair"]
            assert pair["dense_cell_key"] == row["dense_cell_key"] == dense["cell_key"]
            assert row["dense_latency_ms_paired"] == pytest.approx(float(np.median(pair["samples_ms"])))
            speedup = row["dense_latency_ms_paired"] / row["latency_ms_median"]
            assert row["speedup_vs_dense"] == pytest.approx(speedup)
            assert lat[6].endswith(f"({speedup:.2f}×)")
            change = 100.0 * (row["mse"] / dense["mse"] - 1.0)
            assert acc[12] == f"{change:+.1f}%" and acc[13] == "dense" and len(acc) == 14
    assert "## Environment" in markdown and "torch-eager" in markdown


def test_benchmark_json_beside_the_store(report_store: Path, stored_rows: list[dict[str, Any]],
                                         tmp_path: Path) -> None:
    row = stored_rows[0]
    doc = {
        "machine_info": {"node": "box-a"}, "datetime": "2026-01-02T03:04:05", "version": "5.1.0",
        "benchmarks": [
            {"name": "test_cell[x]", "fullname": "specs/x.json::x", "group": None,
             "extra_info": {"cell_key": row["cell_key"]},
             "stats": {"median": 0.002, "q1": 0.0015, "q3": 0.0025, "min": 0.001, "rounds": 7}},
            {"name": "test_other", "fullname": "bench.py::test_other", "group": "g", "extra_info": {},
             "stats": {"median": 0.5, "q1": 0.4, "q3": 0.6, "min": 0.3, "rounds": 3}},
        ],
    }
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    written = write_report(report_store, None, out, [path])
    assert out / "plots" / "pytest_benchmark.png" in written
    lines = md_table_rows((out / "report.md").read_text(encoding="utf-8"), "file", "pytest-benchmark")
    first = next(r for r in lines if r[1] == "test_cell[x]")
    assert first[0].startswith("bench.json (box-a, 2026-01-02 03:04")
    assert first[2:5] == ["2.000", "1.500–2.500", "7"]
    assert first[5] == f"{row['latency_ms_median']:.3f}"  # the store's median of the same cell
    other = next(r for r in lines if r[1] == "test_other")
    assert other[2] == "500.000" and other[5] == "–"


def test_bad_benchmark_json_is_a_user_error(report_store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "benchmarks"}')
    with pytest.raises(UserError, match="bad.json: not a pytest-benchmark JSON"):
        write_report(report_store, None, tmp_path / "out", [bad])
    bad.write_text("{")
    with pytest.raises(UserError, match="bad.json: not a readable JSON"):
        write_report(report_store, None, tmp_path / "out", [bad])


def test_unknown_spec_is_a_user_error(report_store: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"no results for spec 'nope'.*{SPEC_NAME}"):
        write_report(report_store, "nope", tmp_path / "out", [])
    assert not (tmp_path / "out").exists()


def test_empty_or_missing_store_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(UserError, match="no results store"):
        write_report(missing, None, tmp_path / "out", [])
    assert not missing.exists(), "reporting must not create a store"
    Store(tmp_path / "empty.db").close()
    with pytest.raises(UserError, match="holds no results"):
        write_report(tmp_path / "empty.db", None, tmp_path / "out", [])


def test_cli_exit_codes(report_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store(tmp_path / "empty.db").close()
    assert main(["report", "--store", str(tmp_path / "empty.db"), "--out", str(tmp_path / "a")]) == 2
    assert "holds no results" in capsys.readouterr().err
    assert main(["report", "--store", str(report_store), "--spec", "nope", "--out", str(tmp_path / "b")]) == 2
    assert main(["report", "--store", str(report_store), "--spec", SPEC_NAME, "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "c" / "report.html") in printed
