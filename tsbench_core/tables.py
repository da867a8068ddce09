"""Stored rows as a rich table or Markdown (one line per setting, aggregated over seeds), CSV or JSON lines
(every stored row, one per seed)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from tsbench_core.store import COLUMN_NAMES

# (column, header) of the per-setting columns of the results table (values of the setting's first ok row)
SETTING_COLUMNS: tuple[tuple[str, str], ...] = (
    ("dataset", "dataset"),
    ("pred_len", "H"),
    ("model", "model"),
    ("pruner", "pruner"),
    ("fine_tune", "fine-tuning"),
    ("quantize", "quant"),
    ("target_sparsity", "target"),
    ("achieved_sparsity", "sparsity"),
    ("params_nonzero", "params≠0"),
    ("macs_effective", "MACs eff"),
)
TEXT_COLUMNS = ("dataset", "model", "pruner", "fine-tuning", "quant", "runtime", "status", "vs ref", "Δ against")


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


def summary_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """The results table: one line per setting, aggregated over its seeds (headers, lines, each line's status).

    MSE, MAE and latency are ``mean ± sd`` over the seeds (the bare value for one seed), ΔMSE is the change against
    the dense row named in ``Δ against`` (the dense control with the same fine-tuning for fine-tuned rows, else the
    plain dense model) paired per seed; with several seeds the 95 % interval of the mean MSE (t distribution) and
    the paired test against that reference (``seed_stats.TEST_NAME``) get their own columns.
    """
    from tsbench_core.seed_groups import compare_to_reference, group_over_seeds, reference_values
    from tsbench_core.seed_stats import format_ci, format_spread

    groups = group_over_seeds(rows)
    references = reference_values(rows)
    several = any(len(g.ok_rows) > 1 for g in groups)
    setting_columns = [(c, h) for c, h in SETTING_COLUMNS if c != "quantize" or any(r.get("quantize") for r in rows)]
    headers = [h for _, h in setting_columns] + ["n", "MSE", *(["MSE 95% CI"] if several else []), "MAE",
                                                  "ΔMSE", *(["vs ref"] if several else []), "Δ against",
                                                  "runtime", "bs", "ms (med)", "speedup", "status"]
    lines, statuses = [], []
    for group in groups:
        first = group.first
        comparison = compare_to_reference(group, references)
        delta = "–" if comparison is None else format_spread(comparison.relative, lambda v: f"{v:+.1f}%")
        line = [_setting_value(c, first) for c, _ in setting_columns]
        line += [str(len(group.ok_rows)), format_spread(group.spread("mse"), _fmt("mse"))]
        if several:
            line.append(format_ci(group.spread("mse"), _fmt("mse")))
        line += [format_spread(group.spread("mae"), _fmt("mae")), delta]
        if several:
            line.append("–" if comparison is None else comparison.verdict)
        line.append("–" if comparison is None else comparison.against)
        line += [str(first.get("runtime")), str(first.get("batch_size")),
                 format_spread(group.spread("latency_ms_median"), _fmt("latency_ms_median")),
                 format_spread(group.spread("speedup_vs_dense"), lambda v: f"{v:.2f}×"), group.status]
        lines.append(line)
        statuses.append(group.status)
    return headers, lines, statuses


def _setting_value(column: str, row: dict[str, Any]) -> str:
    """A setting column of the results table: the fine-tuning as words, the pruner with its non-default
    options (its ``variant``), as in the report."""
    from tsbench_core.seed_groups import fine_tune_label
    from tsbench_core.variants import pruning_part

    if column == "fine_tune":
        return fine_tune_label(row)
    if column == "pruner":
        options = pruning_part(row.get("variant"))
        return f"{row.get('pruner')} ({options})" if options else str(row.get("pruner"))
    return format_value(column, row.get(column))


def _fmt(column: str) -> Any:
    return lambda value: format_value(column, value)


def rich_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    from rich.table import Table

    headers, lines, statuses = summary_table(rows)
    table = Table(title=title, show_lines=False)
    for i, header in enumerate(headers):
        # names are never cut; in a narrow terminal the long numbers (mean ± sd, intervals) wrap at their spaces
        text = header in TEXT_COLUMNS
        widest = max([len(line[i]) for line in lines] + [1])
        table.add_column(header, justify="left" if text else "right", no_wrap=text,
                         min_width=widest if text else None)
    for line, status in zip(lines, statuses, strict=True):
        style = None if status == "ok" else ("red" if "failed" in status else "yellow")
        table.add_row(*line, style=style)
    return table


DERIVED_COLUMNS = ("cpu_fingerprint", "cpu_label")  # report/machines.with_cpu: the CPU of a row's run
SAMPLES_KEY = "samples_ms"  # the raw per-call latencies inside runtime_info's timing (and its pair)


def without_samples(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every raw latency list (``samples_ms``, at any depth of its dict columns) left out; the
    summaries (median, IQR, p10/p90, outliers) stay. The store and ``tsbench dump`` keep the samples."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != SAMPLES_KEY}
        return value

    return {k: strip(v) for k, v in row.items()}


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    derived = [c for c in DERIVED_COLUMNS if any(c in row for row in rows)]
    writer = csv.DictWriter(out, fieldnames=[*COLUMN_NAMES, *derived], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, dict | list) else v) for k, v in row.items()})
    return out.getvalue()


def to_jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, default=str) + "\n" for row in rows)


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    headers, lines, _ = summary_table(rows)
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + "\n"
