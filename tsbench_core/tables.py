"""Stored rows as a rich table, CSV, JSON lines or Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from tsbench_core.store import COLUMN_NAMES

# (column, header) of the compact results table
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("dataset", "dataset"),
    ("pred_len", "H"),
    ("model", "model"),
    ("pruner", "pruner"),
    ("quantize", "quant"),
    ("target_sparsity", "target"),
    ("achieved_sparsity", "sparsity"),
    ("params_nonzero", "params≠0"),
    ("macs_effective", "MACs eff"),
    ("mse", "MSE"),
    ("mae", "MAE"),
    ("runtime", "runtime"),
    ("batch_size", "bs"),
    ("latency_ms_median", "ms (med)"),
    ("speedup_vs_dense", "speedup"),
    ("status", "status"),
)


def format_value(column: str, value: Any) -> str:
    if value is None:
        return "–"
    if column in ("target_sparsity", "achieved_sparsity", "sparsity_all"):
        return f"{value:.3f}"
    if column in ("mse", "mae", "mse_original", "mae_original"):
        return f"{value:.4f}"
    if column in ("latency_ms_median", "latency_ms_p10", "latency_ms_p90"):
        return f"{value:.3f}"
    if column == "speedup_vs_dense":
        return f"{value:.2f}×"
    if column in ("params_nonzero", "params_total", "macs_dense", "macs_effective"):
        return _si(value)
    return str(value)


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def rich_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column, header in SUMMARY_COLUMNS:
        numeric = column not in ("dataset", "model", "pruner", "quantize", "runtime", "status")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for row in rows:
        cells = [format_value(c, row.get(c)) for c, _ in SUMMARY_COLUMNS]
        style = {"failed": "red", "skipped": "yellow"}.get(row.get("status") or "")
        table.add_row(*cells, style=style)
    return table


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMN_NAMES), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in row.items()})
    return out.getvalue()


def to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, default=str) + "\n" for row in rows)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    headers = [h for _, h in SUMMARY_COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(c, row.get(c)) for c, _ in SUMMARY_COLUMNS) + " |")
    return "\n".join(lines) + "\n"
