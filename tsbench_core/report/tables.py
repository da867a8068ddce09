"""The report's tables as plain (headers, string cells) structures, rendered by the Markdown and HTML writers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tsbench_core.cells import DENSE
from tsbench_core.report.data import Row, Section, dense_mse, failures, fp32_twin, model_rows, pruner_label
from tsbench_core.store import STATUS_OK
from tsbench_core.tables import format_value


@dataclass
class Table:
    """A titled table; ``numeric[i]`` right-aligns column i."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]


def _job_order(row: Row) -> tuple[Any, ...]:
    return (row.get("model") or "", row.get("pruner") != DENSE, row.get("pruner") or "",
            row.get("target_sparsity") or 0.0, row.get("quantize") or "")


def _relative(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "–"
    return f"{100.0 * (value / reference - 1.0):+.1f}%"


def accuracy_table(section: Section) -> Table:
    """One row per (model, pruner, sparsity): sparsity, params, MACs, test MSE/MAE and the MSE change vs dense."""
    headers = ["model", "pruner", "target", "sparsity", "params", "params≠0", "MACs dense", "MACs eff",
               "MSE", "MAE", "ΔMSE vs dense"]
    body = []
    for row in sorted(model_rows(section.rows), key=_job_order):
        reference = dense_mse(section.rows, row["model"])
        body.append([
            row.get("model") or "?", pruner_label(row),
            "–" if row.get("pruner") == DENSE else format_value("target_sparsity", row.get("target_sparsity")),
            format_value("achieved_sparsity", row.get("achieved_sparsity")),
            format_value("params_total", row.get("params_total")),
            format_value("params_nonzero", row.get("params_nonzero")),
            format_value("macs_dense", row.get("macs_dense")),
            format_value("macs_effective", row.get("macs_effective")),
            format_value("mse", row.get("mse")), format_value("mae", row.get("mae")),
            "–" if row.get("pruner") == DENSE and not row.get("quantize") else _relative(row.get("mse"), reference),
        ])
    numeric = [False, False] + [True] * (len(headers) - 2)
    return Table("Accuracy and size (test split; MACs per sample)", headers, body, numeric)


def latency_cell(row: Row | None) -> str:
    """``median ms (speedup×)`` of a timed row, or its status."""
    if row is None:
        return ""
    if row.get("status") != STATUS_OK:
        return str(row.get("status") or "?")
    text = format_value("latency_ms_median", row.get("latency_ms_median"))
    if (row.get("pruner") != DENSE or row.get("quantize")) and row.get("speedup_vs_dense") is not None:
        text += f" ({row['speedup_vs_dense']:.2f}×)"
    return text


def latency_table(section: Section) -> Table:
    """Median latency per batch (ms) and speedup vs the dense model, one column per runtime."""
    runtimes = list(dict.fromkeys(r.get("runtime") for r in section.rows))
    grid: dict[tuple[Any, ...], dict[str, Row]] = {}
    for row in section.rows:
        key = (row.get("model"), row.get("pruner"), row.get("target_sparsity"), row.get("batch_size"),
               row.get("quantize") or "")
        grid.setdefault(key, {})[row.get("runtime")] = row
    body = []
    for key in sorted(grid, key=lambda k: (k[0] or "", k[1] != DENSE, k[1] or "", k[2] or 0.0, k[3] or 0, k[4])):
        model, pruner, target, batch, _ = key
        cells = grid[key]
        some = next(iter(cells.values()))
        body.append([
            model or "?", pruner_label(some), "–" if pruner == DENSE else format_value("target_sparsity", target),
            format_value("achieved_sparsity", some.get("achieved_sparsity")), str(batch),
            *[latency_cell(cells.get(rt)) for rt in runtimes],
        ])
    headers = ["model", "pruner", "target", "sparsity", "bs", *[str(rt) for rt in runtimes]]
    numeric = [False, False, True, True, True] + [True] * len(runtimes)
    return Table("Latency per batch, median ms (speedup vs dense on the same runtime)", headers, body, numeric)


def _mb(value: Any) -> str:
    return "–" if value is None else f"{value / 1e6:.3f}"


def int8_table(section: Section) -> Table | None:
    """Sparse + INT8 trade-off: per runtime, each quantized cell beside its fp32 twin (same pruned weights):
    test MSE of both, model bytes (file and compressed), peak memory and latency; None without INT8 cells."""
    quantized = [r for r in section.rows if r.get("quantize")]
    if not quantized:
        return None
    headers = ["model", "pruner", "target", "runtime", "MSE fp32", "MSE int8", "ΔMSE int8 vs fp32", "rel. err",
               "MB fp32 (compr.)", "MB int8", "MB int8 (compr.)", "peak MB fp32", "peak MB int8", "ms fp32",
               "ms int8", "int8 speedup vs dense fp32"]
    body = []
    for row in sorted(quantized, key=lambda r: (*_job_order(r), r.get("runtime") or "")):
        twin = fp32_twin(section.rows, row) or {}
        ok = row.get("status") == STATUS_OK
        body.append([
            row.get("model") or "?", pruner_label(row),
            "–" if row.get("pruner") == DENSE else format_value("target_sparsity", row.get("target_sparsity")),
            row.get("runtime") or "?", format_value("mse", twin.get("mse")),
            format_value("mse", row.get("mse")) if ok else str(row.get("status")),
            _relative(row.get("mse"), twin.get("mse")) if ok else "–",
            "–" if row.get("rel_err_vs_torch") is None else f"{row['rel_err_vs_torch']:.3f}",
            _mb(twin.get("model_bytes_compressed")), _mb(row.get("model_bytes")),
            _mb(row.get("model_bytes_compressed")),
            "–" if twin.get("peak_rss_mb") is None else f"{twin['peak_rss_mb']:.1f}",
            "–" if row.get("peak_rss_mb") is None else f"{row['peak_rss_mb']:.1f}",
            format_value("latency_ms_median", twin.get("latency_ms_median")),
            format_value("latency_ms_median", row.get("latency_ms_median")),
            "–" if row.get("speedup_vs_dense") is None else f"{row['speedup_vs_dense']:.2f}×",
        ])
    numeric = [False, False, True, False] + [True] * (len(headers) - 4)
    return Table("Sparse + INT8: accuracy, size, memory and latency (INT8 beside the fp32 model with the same "
                 "weights; compressed = bitmask encoding of the weights, see docs/metrics.md)", headers, body,
                 numeric)


def failures_table(rows: Sequence[Row]) -> Table | None:
    bad = failures(rows)
    if not bad:
        return None
    body = [[r.get("dataset") or "?", str(r.get("pred_len")), r.get("model") or "?", pruner_label(r),
             format_value("target_sparsity", r.get("target_sparsity")), r.get("runtime") or "?",
             str(r.get("batch_size")), r.get("status") or "?", _one_line(r.get("error"))] for r in bad]
    headers = ["dataset", "H", "model", "pruner", "target", "runtime", "bs", "status", "reason"]
    return Table("Cells not timed", headers, body, [False, True, False, False, True, False, True, False, False])


def _one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def environment_tables(env: dict[str, Any]) -> list[Table]:
    """The machine and library versions of a run, and each runtime's availability."""
    if not env:
        return []
    keys = ("host", "platform", "cpu_model", "cpu_cores", "cpu_features", "gpu", "python", "tsbench", "torch",
            "numpy")
    machine = [[k, _one_line(", ".join(env[k]) if isinstance(env.get(k), list) else env.get(k))]
               for k in keys if k in env]
    tables = [Table("Machine and software", ["item", "value"], machine, [False, False])]
    runtimes = env.get("runtimes") or {}
    if runtimes:
        body = []
        for name, info in runtimes.items():
            versions = info.get("versions") or {}
            body.append([name, "yes" if info.get("available") else "no",
                         _one_line(", ".join(f"{k} {v}" for k, v in versions.items()) or info.get("reason"))])
        tables.append(Table("Runtimes", ["runtime", "available", "versions / reason"], body, [False] * 3))
    return tables
