"""The report as a list of blocks (headings, text, tables, figures) that the Markdown and HTML writers render,
so both files always show the same content."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tsbench_core.report.tables import Table


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Figure:
    caption: str
    png: Path  # absolute path of the PNG
    relative: str  # path of the PNG relative to the report folder
    svg_relative: str


Block = Heading | Text | Bullets | Table | Figure


def run_summary(runs: list[dict]) -> list[str]:
    """One line per run: id, start time, cells total/cached/failed."""
    lines = []
    for run in runs:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run["started_at"])) if run.get(
            "started_at") else "?"
        lines.append(f"run {run.get('run_id')} of spec {run.get('spec_name')}, started {started}: "
                     f"{run.get('cells_total')} cells, {run.get('cells_cached')} already stored, "
                     f"{run.get('cells_failed') if run.get('cells_failed') is not None else '?'} failed")
    return lines
