"""``tsbench report``: report.md, a self-contained report.html, PNG + SVG plots and results.csv from a store.

Layout of ``out_dir``::

    report.md  report.html  results.csv  plots/<section>_<plot>.{png,svg}  plots/pytest_benchmark.{png,svg}
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from tsbench_core.files import write_text_atomic
from tsbench_core.report.benchjson import BenchEntry, benchmark_table, load_benchmark_json
from tsbench_core.report.data import ReportData, load_report_data
from tsbench_core.report.document import Block, Bullets, Figure, Heading, Text, run_summary
from tsbench_core.report.html import render_html
from tsbench_core.report.machines import Machine, machines, rows_per_machine, with_cpu
from tsbench_core.report.markdown import render_markdown
from tsbench_core.report.plots import PLOTS, benchmark_medians, save_figure
from tsbench_core.report.summary import summary_table
from tsbench_core.report.tables import accuracy_table, environment_tables, failures_table, int8_table, latency_table
from tsbench_core.tables import to_csv, without_samples

__all__ = ["write_report"]

PLOTS_DIR = "plots"
_NOISE = ("Latencies are medians over the spec's timing repeats, measured on the machine described below; on a "
          "shared or busy machine they are noisy, so compare speedups (same runtime, same run) rather than "
          "absolute times.")


def write_report(store_path: Path, spec_name: str | None, out_dir: Path, benchmark_json: list[Path], *,
                 samples: bool = True) -> list[Path]:
    """Write the report of ``spec_name`` (every spec when ``None``) from the store at ``store_path``.

    ``benchmark_json``: pytest-benchmark JSON files shown beside the store; ``samples``: keep the raw latencies
    in results.csv. Returns the files written.
    Raises ``UserError`` for a missing or empty store, an unknown spec name or an unreadable JSON file.
    """
    data = load_report_data(Path(store_path), spec_name)
    entries: list[BenchEntry] = [e for path in benchmark_json for e in load_benchmark_json(Path(path))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    blocks = _blocks(data, entries, out_dir, written)
    title = f"tsbench report — {spec_name or ', '.join(sorted({s.spec_name for s in data.sections}))}"
    written.append(write_text_atomic(out_dir / "report.md", render_markdown(blocks)))
    written.append(write_text_atomic(out_dir / "report.html", render_html(blocks, title)))
    csv_rows = with_cpu(data.rows if samples else [without_samples(r) for r in data.rows], data.runs)
    written.append(write_text_atomic(out_dir / "results.csv", to_csv(csv_rows)))
    return written


def _blocks(data: ReportData, entries: list[BenchEntry], out_dir: Path, written: list[Path]) -> list[Block]:
    plots = out_dir / PLOTS_DIR
    spec_names = sorted({s.spec_name for s in data.sections})
    blocks: list[Block] = [
        Heading(1, f"tsbench report: {', '.join(spec_names)}"),
        Text(f"{len(data.rows)} cells from {data.store_path}; every cell is also in results.csv. {_NOISE}"),
    ]
    if data.runs:
        blocks.append(Bullets(run_summary(data.runs)))
    cpus = machines(data.runs, data.rows)
    if len(cpus) > 1:
        blocks.append(Text(f"These rows were measured on {len(cpus)} different CPUs (told apart by CPU "
                           "fingerprint, see Environments). Latencies and speedups compare only between rows of "
                           "one CPU; each section names the CPUs of its rows."))
    summaries = [t for t in (summary_table(s) for s in data.sections) if t is not None]
    if summaries:
        blocks += [Heading(2, "Summary"), *summaries]
    for section in data.sections:
        blocks.append(Heading(2, section.title))
        if len(cpus) > 1:
            blocks.append(Text(_measured_on(rows_per_machine(data.runs, section.rows))))
        blocks += [accuracy_table(section), latency_table(section)]
        int8 = int8_table(section)
        if int8 is not None:
            blocks.append(int8)
        for stem, caption, draw in PLOTS:
            fig = draw(section)
            if fig is None:
                continue
            blocks.append(_figure(fig, plots, f"{section.slug}_{stem}", f"{caption} — {section.title}", written))
    failed = failures_table(data.rows)
    if failed is not None:
        blocks += [Heading(2, "Failed and skipped cells"), failed]
    if entries:
        blocks += [Heading(2, "pytest-benchmark results"), benchmark_table(entries, data.rows)]
        fig = benchmark_medians(entries, data.rows)
        if fig is not None:
            blocks.append(_figure(fig, plots, "pytest_benchmark", "pytest-benchmark median times per file",
                                  written))
    return blocks + _environment_blocks(cpus)


def _measured_on(counts: list[tuple[str, int]]) -> str:
    text = "Measured on " + "; ".join(f"{label} ({n} row{'s' * (n != 1)})" for label, n in counts) + "."
    if len(counts) > 1:
        text += " This section mixes CPUs: compare its latencies only between rows of one CPU."
    return text


def _environment_blocks(cpus: list[Machine]) -> list[Block]:
    """One machine: its most recent run's environment. Several: each CPU's, with its runs and row count."""
    if len(cpus) == 1:
        tables = environment_tables(cpus[0].environment)
        return [Heading(2, "Environment (most recent run)"), *tables] if tables else []
    blocks: list[Block] = [Heading(2, f"Environments ({len(cpus)} CPUs)")] if cpus else []
    for cpu in cpus:
        blocks += [Heading(3, cpu.label),
                   Text(f"{cpu.rows} rows from {len(cpu.run_ids)} runs ({', '.join(cpu.run_ids)}); "
                        "the tables are those of its most recent run."),
                   *environment_tables(cpu.environment)]
    return blocks


def _figure(fig: MplFigure, folder: Path, stem: str, caption: str, written: list[Path]) -> Figure:
    png, svg = save_figure(fig, folder, stem)
    written += [png, svg]
    return Figure(caption, png, f"{PLOTS_DIR}/{png.name}", f"{PLOTS_DIR}/{svg.name}")
