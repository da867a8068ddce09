"""The report's figures, drawn on plain ``matplotlib.figure.Figure`` objects with the Agg canvas.

No pyplot: nothing global is touched (backend, open-figure registry), so reports can be written from any
process, including one with an interactive backend. Every function returns ``None`` when it has nothing to draw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

from tsbench_core.cells import DENSE
from tsbench_core.files import write_atomic
from tsbench_core.report.benchjson import BenchEntry
from tsbench_core.report.data import (
    Row,
    Section,
    accuracy_groups,
    pareto_front,
    per_sample_ms,
    pruner_label,
    sparsity_of,
)
from tsbench_core.seed_groups import SeedGroup, group_over_seeds, is_dense_reference, trained_after_pruning

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DENSITY_TICKS = (1.0, 0.8, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001)


def _figure(n_panels: int = 1, width: float = 5.2, height: float = 4.0) -> tuple[Figure, list[Any]]:
    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[n_panels:]:
        extra.set_visible(False)
    return fig, axes[:n_panels]


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
    """Write ``stem.png`` and ``stem.svg`` into ``folder`` atomically; returns both paths.

    The same figure gives the same bytes: no date in the metadata, and SVG element ids from a fixed salt (by
    default matplotlib draws them at random), so a regenerated report differs in git only where its data does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("png", "svg"):
        metadata = {"Date": None} if fmt == "svg" else None
        with rc_context({"svg.hashsalt": stem}):
            written.append(write_atomic(folder / f"{stem}.{fmt}", lambda handle, fmt=fmt, metadata=metadata:
                                        fig.savefig(handle, format=fmt, dpi=120, metadata=metadata)))
        fig.set_layout_engine("none")  # the layout is done: the SVG reuses it (half the drawing time)
    return written


def _mean_sd(group: SeedGroup, column: str) -> tuple[float, float] | None:
    """Mean and sd (0 for one seed) of ``column`` over a group's ok rows."""
    value = group.spread(column)
    return None if value is None else (value.mean, value.sd or 0.0)


def _seed_note(groups: Sequence[SeedGroup]) -> str:
    most = max((len(g.ok_rows) for g in groups), default=1)
    return f"\nmean over up to {most} seeds; bands and bars ± 1 sd" if most > 1 else ""


def series_label(row: Row) -> str:
    """Pruner (with ``+<quantizer>``) and, when fine-tuned, ``ft N ep``: what one curve of one model is."""
    label = pruner_label(row)
    if row.get("fine_tuned"):
        epochs = _fine_tune_epochs(row)
        label += f" ft {epochs} ep" if epochs is not None else " ft"
    return label


def _fine_tune_epochs(row: Row) -> int | None:
    raw = row.get("fine_tune")
    if not raw:
        return None
    return (json.loads(raw) if isinstance(raw, str) else raw).get("epochs")


class Palette:
    """Stable colours for one kind of name (runtimes or pruners) and markers for models, in first-seen order."""

    def __init__(self, names: Sequence[Any], values: Sequence[str]) -> None:
        self.order = list(dict.fromkeys(names))
        self.values = values

    def __getitem__(self, name: Any) -> str:
        return self.values[self.order.index(name) % len(self.values)]


def _legends(fig: Figure, models: Palette, colours: Palette, colour_title: str, extra: Sequence[Any] = ()) -> None:
    """Two figure legends outside the panels: models by marker, and ``colour_title`` by colour (+ ``extra``)."""
    model_handles = [Line2D([], [], color="dimgrey", marker=models[m], linestyle="none", label=str(m))
                     for m in models.order]
    colour_handles = [Line2D([], [], color=colours[c], marker="s", linestyle="-", label=str(c))
                      for c in colours.order]
    fig.legend(handles=model_handles, title="model (marker)", loc="outside right upper", fontsize="small",
               title_fontsize="small")
    fig.legend(handles=[*colour_handles, *extra], title=f"{colour_title} (colour)", loc="outside right lower",
               fontsize="small", title_fontsize="small")


def _tuning_handles(groups: Sequence[SeedGroup]) -> list[Line2D]:
    """Legend entries for the line styles, when both one-shot and trained settings are drawn."""
    kinds = {trained_after_pruning(g.first) for g in groups if not is_dense_reference(g.first)}
    if len(kinds) < 2:
        return []
    return [Line2D([], [], color="dimgrey", linestyle="--", label="one-shot"),
            Line2D([], [], color="dimgrey", linestyle="-", label="fine-tuned / pruned while training")]


def mse_vs_density(section: Section) -> Figure | None:
    """Small multiples, one panel per model: test MSE against density (fraction of prunable weights kept, log
    scale, falling to the right), one line per pruner and fine-tuning (colour per pruner; solid when trained after
    pruning, i.e. fine-tuned or pruned while training, dashed one-shot; mean over seeds with a ± sd band), the
    dense model as a black dashed line with its ± sd band and each dense control (dense + the same fine-tuning)
    as a dotted line."""
    groups = [g for g in accuracy_groups(section.ok_rows) if g.spread("mse") is not None]
    models = list(dict.fromkeys(g.first["model"] for g in groups))
    if not models:
        return None
    pruners = Palette([pruner_label(g.first) for g in groups if not is_dense_reference(g.first)], COLORS)
    fig, axes = _figure(len(models), width=4.6, height=3.6)
    for ax, model in zip(axes, models, strict=True):
        mine = [g for g in groups if g.first["model"] == model]
        curves = list(dict.fromkeys(series_label(g.first) for g in mine if not is_dense_reference(g.first)))
        for curve in curves:
            members = [g for g in mine if series_label(g.first) == curve and not is_dense_reference(g.first)]
            pts = sorted(((max(1.0 - sparsity_of(g.first), 1e-3), *(_mean_sd(g, "mse") or (0.0, 0.0)))
                          for g in members), reverse=True)
            x, y, sd = (np.array([p[k] for p in pts]) for k in range(3))
            colour = pruners[pruner_label(members[0].first)]
            ax.plot(x, y, color=colour, marker="o", markersize=4,
                    linestyle="-" if trained_after_pruning(members[0].first) else "--", label=curve)
            if sd.any():
                ax.fill_between(x, y - sd, y + sd, color=colour, alpha=0.18, linewidth=0)
        for control in (g for g in mine if is_dense_reference(g.first)):
            mean, sd = _mean_sd(control, "mse") or (0.0, 0.0)
            plain = not control.first.get("fine_tuned")
            epochs = _fine_tune_epochs(control.first)
            label = f"{model} dense ({mean:.4f})" if plain else f"dense + ft {epochs} ep ({mean:.4f})"
            ax.axhline(mean, color="black", linestyle="--" if plain else ":", linewidth=1.2, label=label)
            if sd and plain:
                ax.axhspan(mean - sd, mean + sd, color="grey", alpha=0.15, linewidth=0)
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.xaxis.set_major_locator(FixedLocator(DENSITY_TICKS))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(model)
        ax.set_xlabel("density (fraction of prunable weights kept)")
        ax.set_ylabel("test MSE (scaled data)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(f"Test MSE vs density — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def speedup_vs_sparsity(section: Section) -> Figure | None:
    """Measured speedup over the dense model against sparsity, one panel per runtime, with the ideal 1/density:
    marker per model, colour per pruner (mean over seeds, error bars ± sd)."""
    groups = [g for g in group_over_seeds(section.ok_rows) if g.spread("speedup_vs_dense") is not None]
    runtimes = list(dict.fromkeys(g.first["runtime"] for g in groups))
    if not runtimes:
        return None
    several_bs = len({r.get("batch_size") for r in section.rows}) > 1
    models = Palette([g.first["model"] for g in groups], MARKERS)
    pruners = Palette([pruner_label(g.first) for g in groups], COLORS)
    fig, axes = _figure(len(runtimes))
    top = max(sparsity_of(g.first) for g in groups)
    grid = np.linspace(0.0, min(top * 1.02, 0.995), 200)

    def series_of(g: SeedGroup) -> tuple[Any, ...]:
        return (g.first["model"], series_label(g.first), pruner_label(g.first), g.first.get("batch_size"))

    for ax, runtime in zip(axes, runtimes, strict=True):
        ax.plot(grid, 1.0 / (1.0 - grid), color="grey", linestyle=":", linewidth=1.5)
        ax.axhline(1.0, color="black", linewidth=0.8)
        mine = [g for g in groups if g.first["runtime"] == runtime]
        for series in dict.fromkeys(series_of(g) for g in mine):
            model, label, pruner, batch = series
            pts = sorted((sparsity_of(g.first), *(_mean_sd(g, "speedup_vs_dense") or (0.0, 0.0)))
                         for g in mine if series_of(g) == series)
            fine_tuned = " ft" in label
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], capsize=2,
                        color=pruners[pruner], marker=models[model], linestyle="-" if fine_tuned else "--",
                        label=f"{model} · {label}" + (f" · bs{batch}" if several_bs else ""))
        _log_axis(ax.yaxis, "{:g}×")
        ax.set_title(runtime)
        ax.set_xlabel("achieved sparsity")
        ax.set_ylabel("speedup vs dense (median latency ratio)")
        ax.grid(alpha=0.3)
    ideal = Line2D([], [], color="grey", linestyle=":", label="ideal 1/density")
    _legends(fig, models, pruners, "pruner", extra=[ideal, *_tuning_handles(groups)])
    fig.suptitle(f"Speedup vs sparsity — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def latency_vs_macs(section: Section) -> Figure | None:
    """Median batch latency against effective MACs per batch: colour = runtime, marker = model (mean over seeds,
    error bars ± sd)."""
    groups = [g for g in group_over_seeds(section.ok_rows)
              if g.spread("latency_ms_median") is not None and g.first.get("macs_effective")]
    if not groups:
        return None
    runtimes = Palette([g.first["runtime"] for g in groups], COLORS)
    models = Palette([g.first["model"] for g in groups], MARKERS)
    fig, (ax,) = _figure(1, width=7.0, height=4.8)
    for runtime in runtimes.order:
        for model in models.order:
            mine = [g for g in groups if g.first["runtime"] == runtime and g.first["model"] == model]
            if not mine:
                continue
            x = [float(g.first["macs_effective"]) * (g.first.get("batch_size") or 1) for g in mine]
            stats = [_mean_sd(g, "latency_ms_median") or (0.0, 0.0) for g in mine]
            ax.errorbar(x, [m for m, _ in stats], yerr=[sd for _, sd in stats], color=runtimes[runtime],
                        marker=models[model], markersize=6.5, linestyle="none", capsize=2,
                        label=f"{model} · {runtime}", alpha=0.85)
    _log_axis(ax.xaxis, use_si=True)
    _log_axis(ax.yaxis)
    ax.set_xlabel("effective MACs per batch (nonzero weights only)")
    ax.set_ylabel("median latency per batch (ms)")
    ax.grid(alpha=0.3)
    _legends(fig, models, runtimes, "runtime")
    ax.set_title(f"Latency vs MACs — {section.dataset}, horizon {section.pred_len}{_seed_note(groups)}")
    return fig


def short_label(row: Row) -> str:
    sparsity = "" if row.get("pruner") == DENSE else f"@{row.get('target_sparsity', 0):g}"
    fine_tuned = " ft" if row.get("fine_tuned") else ""
    return f"{row.get('model')} {pruner_label(row)}{sparsity}{fine_tuned} {row.get('runtime')}"


# label positions tried around a point, in points: right, left, above, below, then further out
_OFFSETS = [(dx * k, dy * k) for k in (1, 2, 3) for dx, dy in ((6, 4), (6, -11), (-6, 4), (-6, -11), (0, 12),
                                                              (0, -18), (14, 12), (-14, -18))]


def place_labels(ax: Any, points: Sequence[tuple[float, float]], texts: Sequence[str],
                 fontsize: float = 7.0) -> bool:
    """Annotate each point with its text at the first offset that overlaps no label placed before and stays
    inside the axes; ``False`` (and nothing left drawn) when some text finds no such place. Needs the layout
    done: call after a draw with the layout engine off."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed: list[Any] = []
    made = []
    for point, text in zip(points, texts, strict=True):
        for dx, dy in _OFFSETS:
            note = ax.annotate(text, point, textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                               ha="left" if dx >= 0 else "right", va="bottom" if dy >= 0 else "top")
            box = note.get_window_extent(renderer)
            fits = (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
                    and not any(box.overlaps(other) for other in placed))
            if fits:
                placed.append(box)
                made.append(note)
                break
            note.remove()
        else:
            for note in made:
                note.remove()
            return False
    return True


def accuracy_latency_pareto(section: Section) -> Figure | None:
    """Test MSE against latency per window for every timed setting (mean over seeds, error bars ± sd): colour per
    runtime, marker per model, with the Pareto front of the means (lower-left is better). Front points are labelled
    where the labels fit without overlapping; otherwise they are numbered and a legend names each number."""
    groups = [g for g in group_over_seeds(section.ok_rows)
              if g.spread("mse") is not None and g.spread("latency_ms_median") is not None]
    if not groups:
        return None
    fig = _pareto_figure(section, groups, numbered=False)
    return fig if fig is not None else _pareto_figure(section, groups, numbered=True)


def _pareto_figure(section: Section, groups: list[SeedGroup], numbered: bool) -> Figure | None:
    per_window = [1.0 / (g.first.get("batch_size") or 1) for g in groups]
    x_stats = [(m * w, sd * w) for (m, sd), w in zip((_mean_sd(g, "latency_ms_median") or (0.0, 0.0)
                                                      for g in groups), per_window, strict=True)]
    y_stats = [_mean_sd(g, "mse") or (0.0, 0.0) for g in groups]
    points = [(x[0], y[0]) for x, y in zip(x_stats, y_stats, strict=True)]
    front = pareto_front(points)
    runtimes = Palette([g.first["runtime"] for g in groups], COLORS)
    models = Palette([g.first["model"] for g in groups], MARKERS)
    fig, (ax,) = _figure(1, width=8.0, height=5.2)
    for runtime in runtimes.order:
        for model in models.order:
            idx = [k for k, g in enumerate(groups) if g.first["runtime"] == runtime and g.first["model"] == model]
            if idx:
                ax.errorbar([points[k][0] for k in idx], [points[k][1] for k in idx],
                            xerr=[x_stats[k][1] for k in idx], yerr=[y_stats[k][1] for k in idx],
                            color=runtimes[runtime], marker=models[model], markersize=5.5, linestyle="none",
                            alpha=0.65, label=f"{model} · {runtime}")
    fx = [points[k][0] for k in front]
    fy = [points[k][1] for k in front]
    ax.step(fx, fy, where="post", color="black", linewidth=1.5)
    ax.scatter(fx, fy, facecolors="none", edgecolors="black", s=90, linewidths=1.5)
    front_handle = Line2D([], [], color="black", marker="o", markerfacecolor="none", label="Pareto front")
    _legends(fig, models, runtimes, "runtime", extra=[front_handle])
    labels = [short_label(groups[k].first) for k in front]
    if numbered:
        key = [Line2D([], [], linestyle="none", label=f"{i}: {text}") for i, text in enumerate(labels, 1)]
        fig.legend(handles=key, title="Pareto front", loc="outside lower center", ncol=min(3, len(key)),
                   fontsize="x-small", title_fontsize="small", handlelength=0, handletextpad=0)
    _log_axis(ax.xaxis)
    ax.set_xlabel("median latency per window (ms) = batch latency / batch size")
    ax.set_ylabel("test MSE (scaled data)")
    ax.grid(alpha=0.3)
    ax.set_title(f"Accuracy–latency Pareto front — {section.dataset}, horizon {section.pred_len}"
                 f"{_seed_note(groups)}")
    fig.canvas.draw()  # the layout, once: labels are placed in its final geometry
    fig.set_layout_engine("none")
    texts = [str(i) for i in range(1, len(labels) + 1)] if numbered else labels
    if not place_labels(ax, [points[k] for k in front], texts) and not numbered:
        return None
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
    ("mse_vs_density", "Test MSE vs density, one panel per model", mse_vs_density),
    ("speedup_vs_sparsity", "Speedup vs sparsity", speedup_vs_sparsity),
    ("latency_vs_macs", "Latency vs MACs", latency_vs_macs),
    ("pareto", "Accuracy–latency Pareto front", accuracy_latency_pareto),
    ("int8_size_tradeoff", "Sparse + INT8: accuracy and latency vs compressed size", size_tradeoff),
)
