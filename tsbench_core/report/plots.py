"""The report's figures, drawn on plain ``matplotlib.figure.Figure`` objects with the Agg canvas.

No pyplot: nothing global is touched (backend, open-figure registry), so reports can be written from any
process, including one with an interactive backend. Every function returns ``None`` when it has nothing to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from tsbench_core.cells import DENSE
from tsbench_core.report.benchjson import BenchEntry
from tsbench_core.report.data import (
    Row,
    Section,
    accuracy_groups,
    dense_spread,
    pareto_front,
    per_sample_ms,
    pruner_label,
    sparsity_of,
)
from tsbench_core.report.files import write_atomic
from tsbench_core.seed_groups import SeedGroup, group_over_seeds

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _figure(n_panels: int = 1, width: float = 5.2, height: float = 4.0) -> tuple[Figure, list[Any]]:
    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return fig, axes[:n_panels]


def _style(index: int) -> dict[str, Any]:
    return {"color": COLORS[index % len(COLORS)], "marker": MARKERS[index % len(MARKERS)]}


def si(value: float) -> str:
    """``1500000`` → ``1.5M``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _log_axis(axis: Any, template: str = "{:g}", use_si: bool = False) -> None:
    """Log scale labelled at 1-2-5 steps in plain numbers (``10^x`` labels are hard to read off)."""
    ax = axis.axes
    if axis.axis_name == "x":
        ax.set_xscale("log")
        low, high = ax.get_xlim()
    else:
        ax.set_yscale("log")
        low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3.5 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(
        lambda value, _pos: si(value) if use_si else template.format(float(f"{value:.3g}"))))
    axis.set_minor_locator(NullLocator())  # 1-2-5 majors are enough, and minor ticks cost most drawing time


def save_figure(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` into ``folder`` atomically; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("png", "svg"):
        written.append(write_atomic(folder / f"{stem}.{fmt}",
                                    lambda handle, fmt=fmt: fig.savefig(handle, format=fmt, dpi=120)))
        fig.set_layout_engine("none")  # the layout is done: the SVG reuses it (half the drawing time)
    return written


def _mean_sd(group: SeedGroup, column: str) -> tuple[float, float] | None:
    """Mean and sd (0 for one seed) of ``column`` over a group's ok rows."""
    value = group.spread(column)
    return None if value is None else (value.mean, value.sd or 0.0)


def _seed_note(groups: Sequence[SeedGroup]) -> str:
    most = max((len(g.ok_rows) for g in groups), default=1)
    return f"\nmean over up to {most} seeds; bands and bars ± 1 sd" if most > 1 else ""


def mse_vs_sparsity(section: Section) -> Figure | None:
    """Test MSE against achieved sparsity, one panel per model, one line per pruner (mean over seeds, band ± sd),
    dense as a dashed line (its ± sd as a grey band)."""
    groups = [g for g in accuracy_groups(section.ok_rows) if g.spread("mse") is not None]
    models = list(dict.fromkeys(g.first["model"] for g in groups))
    if not models:
        return None
    fig, axes = _figure(len(models))
    for ax, model in zip(axes, models, strict=True):
        mine = [g for g in groups if g.first["model"] == model]
        pruners = list(dict.fromkeys(pruner_label(g.first) for g in mine if pruner_label(g.first) != DENSE))
        for i, pruner in enumerate(pruners):
            pts = sorted((sparsity_of(g.first), *(_mean_sd(g, "mse") or (0.0, 0.0)))
                         for g in mine if pruner_label(g.first) == pruner)
            x, y, sd = (np.array([p[k] for p in pts]) for k in range(3))
            ax.plot(x, y, label=pruner, **_style(i))
            if sd.any():
                ax.fill_between(x, y - sd, y + sd, color=COLORS[i % len(COLORS)], alpha=0.2, linewidth=0)
        reference = dense_spread(section.ok_rows, model)
        if reference is not None:
            ax.axhline(reference.mean, color="black", linestyle="--", linewidth=1.2,
                       label=f"dense ({reference.mean:.4f})")
            if reference.sd:
                ax.axhspan(reference.mean - reference.sd, reference.mean + reference.sd, color="grey", alpha=0.15)
        ax.set_title(model)
        ax.set_xlabel("achieved sparsity (fraction of prunable weights at zero)")
        ax.set_ylabel("test MSE (scaled data)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Test MSE vs sparsity — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def speedup_vs_sparsity(section: Section) -> Figure | None:
    """Measured speedup over the dense model against sparsity, one panel per runtime, with the ideal 1/density
    (mean over seeds, error bars ± sd)."""
    groups = [g for g in group_over_seeds(section.ok_rows) if g.spread("speedup_vs_dense") is not None]
    runtimes = list(dict.fromkeys(g.first["runtime"] for g in groups))
    if not runtimes:
        return None
    several_bs = len({r.get("batch_size") for r in section.rows}) > 1
    fig, axes = _figure(len(runtimes))
    top = max(sparsity_of(g.first) for g in groups)
    grid = np.linspace(0.0, min(top * 1.02, 0.995), 200)
    for ax, runtime in zip(axes, runtimes, strict=True):
        ax.plot(grid, 1.0 / (1.0 - grid), color="grey", linestyle=":", linewidth=1.5, label="ideal 1/density")
        ax.axhline(1.0, color="black", linewidth=0.8)
        mine = [g for g in groups if g.first["runtime"] == runtime]

        def series_of(g: SeedGroup) -> tuple[Any, ...]:
            return (g.first["model"], pruner_label(g.first), g.first.get("batch_size"))

        for i, series in enumerate(dict.fromkeys(series_of(g) for g in mine)):
            model, pruner, batch = series
            pts = sorted((sparsity_of(g.first), *(_mean_sd(g, "speedup_vs_dense") or (0.0, 0.0)))
                         for g in mine if series_of(g) == series)
            label = f"{model} · {pruner}" + (f" · bs{batch}" if several_bs else "")
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], label=label,
                        capsize=2, **_style(i))
        _log_axis(ax.yaxis, "{:g}×")
        ax.set_title(runtime)
        ax.set_xlabel("achieved sparsity")
        ax.set_ylabel("speedup vs dense (median latency ratio)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Speedup vs sparsity — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def latency_vs_macs(section: Section) -> Figure | None:
    """Median batch latency against effective MACs per batch: colour = runtime, marker = model (mean over seeds,
    error bars ± sd)."""
    groups = [g for g in group_over_seeds(section.ok_rows)
              if g.spread("latency_ms_median") is not None and g.first.get("macs_effective")]
    if not groups:
        return None
    runtimes = list(dict.fromkeys(g.first["runtime"] for g in groups))
    models = list(dict.fromkeys(g.first["model"] for g in groups))
    fig, (ax,) = _figure(1, width=7.0, height=4.8)
    for r_i, runtime in enumerate(runtimes):
        for m_i, model in enumerate(models):
            mine = [g for g in groups if g.first["runtime"] == runtime and g.first["model"] == model]
            if not mine:
                continue
            x = [float(g.first["macs_effective"]) * (g.first.get("batch_size") or 1) for g in mine]
            stats = [_mean_sd(g, "latency_ms_median") or (0.0, 0.0) for g in mine]
            ax.errorbar(x, [m for m, _ in stats], yerr=[sd for _, sd in stats], color=COLORS[r_i % len(COLORS)],
                        marker=MARKERS[m_i % len(MARKERS)], markersize=6.5, linestyle="none", capsize=2,
                        label=f"{model} · {runtime}", alpha=0.85)
    _log_axis(ax.xaxis, use_si=True)
    _log_axis(ax.yaxis)
    ax.set_xlabel("effective MACs per batch (nonzero weights only)")
    ax.set_ylabel("median latency per batch (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    ax.set_title(f"Latency vs MACs — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def short_label(row: Row) -> str:
    sparsity = "" if row.get("pruner") == DENSE else f"@{row.get('target_sparsity', 0):g}"
    return f"{row.get('model')} {pruner_label(row)}{sparsity} {row.get('runtime')}"


def accuracy_latency_pareto(section: Section) -> Figure | None:
    """Test MSE against latency per window for every timed setting (mean over seeds, error bars ± sd), with the
    Pareto front of the means (lower-left is better)."""
    groups = [g for g in group_over_seeds(section.ok_rows)
              if g.spread("mse") is not None and g.spread("latency_ms_median") is not None]
    if not groups:
        return None
    per_window = [1.0 / (g.first.get("batch_size") or 1) for g in groups]
    x_stats = [(m * w, sd * w) for (m, sd), w in zip((_mean_sd(g, "latency_ms_median") or (0.0, 0.0)
                                                      for g in groups), per_window, strict=True)]
    y_stats = [_mean_sd(g, "mse") or (0.0, 0.0) for g in groups]
    points = [(x[0], y[0]) for x, y in zip(x_stats, y_stats, strict=True)]
    front = pareto_front(points)
    fig, (ax,) = _figure(1, width=7.5, height=5.0)
    runtimes = list(dict.fromkeys(g.first["runtime"] for g in groups))
    for i, runtime in enumerate(runtimes):
        idx = [k for k, g in enumerate(groups) if g.first["runtime"] == runtime]
        ax.errorbar([points[k][0] for k in idx], [points[k][1] for k in idx], xerr=[x_stats[k][1] for k in idx],
                    yerr=[y_stats[k][1] for k in idx], color=COLORS[i % len(COLORS)], marker="o", markersize=5,
                    linestyle="none", alpha=0.6, label=runtime)
    fx = [points[k][0] for k in front]
    fy = [points[k][1] for k in front]
    ax.step(fx, fy, where="post", color="black", linewidth=1.5, label="Pareto front")
    ax.scatter(fx, fy, facecolors="none", edgecolors="black", s=90, linewidths=1.5)
    for k in front:
        ax.annotate(short_label(groups[k].first), points[k], textcoords="offset points", xytext=(6, 4), fontsize=7)
    _log_axis(ax.xaxis)
    ax.set_xlabel("median latency per window (ms) = batch latency / batch size")
    ax.set_ylabel("test MSE (scaled data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"Accuracy–latency Pareto front — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def size_tradeoff(section: Section) -> Figure | None:
    """Sparse + INT8: test MSE and latency per window against the compressed model size, one colour per model,
    circles fp32 and triangles INT8, one panel pair per runtime; None without INT8 cells."""
    rows = [r for r in section.ok_rows if r.get("model_bytes_compressed") and r.get("mse") is not None]
    if not any(r.get("quantize") for r in rows):
        return None
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = _figure_pairs(len(runtimes))  # each runtime's pair side by side
    for r_i, runtime in enumerate(runtimes):
        ax_mse, ax_ms = axes[2 * r_i], axes[2 * r_i + 1]
        for m_i, model in enumerate(models):
            for quantized in (False, True):
                mine = sorted((r for r in rows if r["runtime"] == runtime and r["model"] == model
                               and bool(r.get("quantize")) == quantized), key=lambda r: r["model_bytes_compressed"])
                if not mine:
                    continue
                style = {"color": COLORS[m_i % len(COLORS)], "marker": "^" if quantized else "o",
                         "linestyle": "--" if quantized else "-", "alpha": 0.85}
                label = f"{model} {'int8' if quantized else 'fp32'}"
                sizes = [r["model_bytes_compressed"] for r in mine]
                ax_mse.plot(sizes, [r["mse"] for r in mine], label=label, **style)
                ax_ms.plot(sizes, [per_sample_ms(r) for r in mine], label=label, **style)
        for ax, ylabel in ((ax_mse, "test MSE (scaled data)"), (ax_ms, "median latency per window (ms)")):
            _log_axis(ax.xaxis, use_si=True)
            ax.set_xlabel("compressed model size (bytes; bitmask-encoded weights)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.set_title(f"{runtime}: {'accuracy' if ax is ax_mse else 'latency'} vs size", fontsize="medium")
        ax_mse.legend(fontsize="x-small")
    return fig


def _figure_pairs(n_pairs: int) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(10.4, 4.0 * n_pairs), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(n_pairs, 2, squeeze=False).ravel().tolist()


def benchmark_medians(entries: Sequence[BenchEntry], store_rows: Sequence[Row] = ()) -> Figure | None:
    """Median time of each pytest-benchmark benchmark (bars, IQR whiskers), one colour per JSON file, and the
    store's median (p10–p90 whiskers) for benchmarks of tsbench cells the store holds."""
    if not entries:
        return None
    names = list(dict.fromkeys(e.name for e in entries))
    series: dict[str, dict[str, tuple[float, float, float]]] = {}
    for e in entries:
        series.setdefault(e.source, {})[e.name] = (e.median_ms, e.q1_ms, e.q3_ms)
    by_key = {r.get("cell_key"): r for r in store_rows if r.get("latency_ms_median")}
    stored: dict[str, tuple[float, float, float]] = {}
    for e in entries:
        row = by_key.get(e.extra_info.get("cell_key"))
        if row is not None:
            median = float(row["latency_ms_median"])
            stored[e.name] = (median, float(row.get("latency_ms_p10") or median),
                              float(row.get("latency_ms_p90") or median))
    if stored:
        series["store (tsbench run)"] = stored
    fig, (ax,) = _figure(1, width=9.0, height=max(2.5, 0.3 * len(names) * len(series) + 1.2))
    height = 0.8 / len(series)
    for s_i, (label, values) in enumerate(series.items()):
        ys, medians, low, high = [], [], [], []
        for n_i, name in enumerate(names):
            if name in values:
                median, lo, hi = values[name]
                ys.append(n_i + (s_i - (len(series) - 1) / 2) * height)
                medians.append(median)
                low.append(max(median - lo, 0.0))
                high.append(max(hi - median, 0.0))
        ax.barh(ys, medians, height=height * 0.9, xerr=[low, high], color=COLORS[s_i % len(COLORS)],
                label=label, capsize=2)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    _log_axis(ax.xaxis)
    ax.set_xlabel("median time per call (ms); whiskers: interquartile range (store: p10–p90)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize="small")
    ax.set_title("pytest-benchmark timings")
    return fig


PLOTS = (
    ("mse_vs_sparsity", "Test MSE vs sparsity", mse_vs_sparsity),
    ("speedup_vs_sparsity", "Speedup vs sparsity", speedup_vs_sparsity),
    ("latency_vs_macs", "Latency vs MACs", latency_vs_macs),
    ("pareto", "Accuracy–latency Pareto front", accuracy_latency_pareto),
    ("int8_size_tradeoff", "Sparse + INT8: accuracy and latency vs compressed size", size_tradeoff),
)
