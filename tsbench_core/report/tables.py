"""The report's tables as plain (headers, string cells) structures, rendered by the Markdown and HTML writers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tsbench_core.cells import DENSE
from tsbench_core.report.data import Row, Section, accuracy_groups, failures, fp32_twin, pruner_label
from tsbench_core.seed_groups import (
    SeedGroup,
    compare_to_reference,
    fine_tune_label,
    group_over_seeds,
    is_plain_dense,
    reference_values,
)
from tsbench_core.seed_stats import TEST_NAME, format_ci, format_spread
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
            row.get("target_sparsity") or 0.0, row.get("fine_tuned") or 0, row.get("fine_tune") or "",
            row.get("quantize") or "", row.get("variant") or "")


def _relative(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "–"
    return f"{100.0 * (value / reference - 1.0):+.1f}%"


def _several_seeds(groups: Sequence[SeedGroup]) -> bool:
    return any(len(g.ok_rows) > 1 for g in groups)


def _fmt(column: str) -> Any:
    return lambda value: format_value(column, value)


def accuracy_table(section: Section) -> Table:
    """One row per model job over its seeds: fine-tuning, sparsity, params, MACs, test MSE/MAE (mean ± sd, n seeds)
    and the MSE change against its dense reference (named in the last column: the dense control with the same
    fine-tuning for fine-tuned rows, else the plain dense model) paired per seed; with several seeds also the 95 %
    interval of the mean MSE and the paired test against that reference (``seed_stats.TEST_NAME``)."""
    groups = sorted(accuracy_groups(section.rows), key=lambda g: _job_order(g.first))
    references = reference_values(section.rows)
    several = _several_seeds(groups)
    headers = ["model", "pruner", "fine-tuning", "target", "sparsity", "params", "params≠0", "MACs dense",
               "MACs eff", "n", "MSE", *(["MSE 95% CI"] if several else []), "MAE", "ΔMSE",
               *(["vs reference"] if several else []), "Δ against"]
    body = []
    for group in groups:
        row = group.first
        comparison = compare_to_reference(group, references)
        line = [
            row.get("model") or "?", pruner_label(row), fine_tune_label(row),
            "–" if row.get("pruner") == DENSE else format_value("target_sparsity", row.get("target_sparsity")),
            format_value("achieved_sparsity", row.get("achieved_sparsity")),
            format_value("params_total", row.get("params_total")),
            format_value("params_nonzero", row.get("params_nonzero")),
            format_value("macs_dense", row.get("macs_dense")),
            format_value("macs_effective", row.get("macs_effective")),
            str(len(group.ok_rows)), format_spread(group.spread("mse"), _fmt("mse")),
        ]
        if several:
            line.append(format_ci(group.spread("mse"), _fmt("mse")))
        line += [format_spread(group.spread("mae"), _fmt("mae")),
                 "–" if comparison is None else format_spread(comparison.relative, lambda v: f"{v:+.1f}%")]
        if several:
            line.append("–" if comparison is None else comparison.verdict)
        line.append("–" if comparison is None else comparison.against)
        body.append(line)
    numeric = [False, False, False] + [True] * (len(headers) - 3)
    numeric[-1] = False
    if several:
        numeric[-2] = False
    title = ("Accuracy and size (test split; MACs per sample; ΔMSE against the dense row named in the last column: "
             "fine-tuned rows against the dense model given the same fine-tuning, one-shot rows against the plain "
             "dense model)")
    if several:
        title += (f"; MSE/MAE mean ± sd over n seeds, 95 % CI of the mean from the t distribution, ΔMSE paired per "
                  f"seed; vs reference: {TEST_NAME}")
    return Table(title, headers, body, numeric)


def latency_cell(group: SeedGroup | None) -> str:
    """``median ms (speedup×)`` of a timed setting (mean ± sd over seeds), or its status."""
    if group is None:
        return ""
    if not group.ok_rows:
        return group.status
    text = format_spread(group.spread("latency_ms_median"), _fmt("latency_ms_median"))
    row = group.first
    speedup = group.spread("speedup_vs_dense")
    if not is_plain_dense(row) and speedup is not None:
        text += f" ({format_spread(speedup, lambda v: f'{v:.2f}')}×)"
    if group.status != STATUS_OK:
        text += f" [{group.status}]"
    return text


def latency_table(section: Section) -> Table:
    """Median latency per batch (ms) and speedup vs the dense model, one column per runtime (mean ± sd over
    seeds when there are several)."""
    runtimes = list(dict.fromkeys(r.get("runtime") for r in section.rows))
    groups = group_over_seeds(section.rows)
    grid: dict[tuple[Any, ...], dict[str, SeedGroup]] = {}
    for group in groups:
        row = group.first
        key = (*_job_order(row), row.get("batch_size") or 0)
        grid.setdefault(key, {})[row.get("runtime")] = group
    body = []
    for key in sorted(grid):
        cells = grid[key]
        some = next(iter(cells.values())).first
        body.append([
            some.get("model") or "?", pruner_label(some), fine_tune_label(some),
            "–" if some.get("pruner") == DENSE else format_value("target_sparsity", some.get("target_sparsity")),
            format_value("achieved_sparsity", some.get("achieved_sparsity")), str(some.get("batch_size")),
            *[latency_cell(cells.get(rt)) for rt in runtimes],
        ])
    headers = ["model", "pruner", "fine-tuning", "target", "sparsity", "bs", *[str(rt) for rt in runtimes]]
    numeric = [False, False, False, True, True, True] + [True] * len(runtimes)
    title = "Latency per batch, median ms (speedup vs dense on the same runtime)"
    if _several_seeds(groups):
        title += "; mean ± sd over seeds"
    return Table(title, headers, body, numeric)


def _mb(value: Any) -> str:
    return "–" if value is None else f"{value / 1e6:.3f}"


def int8_table(section: Section) -> Table | None:
    """Sparse + INT8 trade-off: per runtime, each quantized cell beside its fp32 twin (same pruned weights):
    test MSE of both, model bytes (file and compressed), peak memory and latency; None without INT8 cells."""
    quantized = [r for r in section.rows if r.get("quantize")]
    if not quantized:
        return None
    seeds = len({r.get("seed") for r in quantized}) > 1
    headers = ["model", "pruner", "target", "runtime", *(["seed"] if seeds else []), "MSE fp32", "MSE int8",
               "ΔMSE int8 vs fp32", "rel. err",
               "MB fp32 (compr.)", "MB int8", "MB int8 (compr.)", "peak MB fp32", "peak MB int8", "ms fp32",
               "ms int8", "int8 speedup vs dense fp32"]
    body = []
    for row in sorted(quantized, key=lambda r: (*_job_order(r), r.get("runtime") or "", r.get("seed") or 0)):
        twin = fp32_twin(section.rows, row) or {}
        ok = row.get("status") == STATUS_OK
        body.append([
            row.get("model") or "?", pruner_label(row),
            "–" if row.get("pruner") == DENSE else format_value("target_sparsity", row.get("target_sparsity")),
            row.get("runtime") or "?", *([str(row.get("seed"))] if seeds else []),
            format_value("mse", twin.get("mse")),
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
    return Table(("One line per seed. " if seeds else "") +
                 "Sparse + INT8: accuracy, size, memory and latency (INT8 beside the fp32 model with the same "
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
    keys = ("host", "platform", "cpu_model", "cpu_cores", "cpu_features", "cpu_fingerprint", "gpu", "python",
            "tsbench", "torch", "numpy")
    machine = [[k, _one_line(", ".join(env[k]) if isinstance(env.get(k), list) else env.get(k))]
               for k in keys if k in env]
    cpu = env.get("cpu") or {}
    if cpu.get("family") is not None:  # the model name alone does not tell CPU generations apart
        generation = f"{cpu['family']} / {cpu.get('model')} / {cpu.get('stepping')}"
        at = next((i + 1 for i, (k, _) in enumerate(machine) if k == "cpu_model"), len(machine))
        machine.insert(at, ["cpu_family_model_stepping", generation])
    tables = [Table("Machine and software", ["item", "value"], machine, [False, False])]
    runtimes = env.get("runtimes") or {}
    if runtimes:
        body = []
        for name, info in runtimes.items():
            versions = info.get("versions") or {}
            text = ", ".join(f"{k} {v}" for k, v in versions.items()) or info.get("reason")
            hardware = {k: v for k, v in (info.get("hardware") or {}).items() if k in ("isa", "vnni", "error")}
            if hardware:  # what the runtime's own CPU detection says
                text += "; detects " + ", ".join(f"{k} {v}" for k, v in hardware.items())
            body.append([name, "yes" if info.get("available") else "no", _one_line(text)])
        tables.append(Table("Runtimes", ["runtime", "available", "versions / reason"], body, [False] * 3))
    return tables
