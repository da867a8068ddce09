"""Speedup sweep of issue #6: every model at several sparsities, each beside its dense reference, and plots.

One ``tsbench bench`` call (the library function ``tsbench_core.bench.bench``, so rows are the CLI's rows) per
(model, pruner, sparsity):

- ``magnitude`` (global unstructured) on torch-eager and deepsparse (+ onnxruntime with ``--magnitude-ort``):
  the DeepSparse target is speedup >= 4x on DeepSparse and >= 6x over torch-eager dense;
- ``structured`` (channel pruning) on onnxruntime and torch-compile: the target is
  wall-clock speedup >= 0.9 x the dense-kernel MAC reduction.

Each call writes ``<out>/<model>-<pruner>-<sparsity>.json`` (atomically) and is skipped when that file exists,
so an interrupted sweep resumes where it stopped (``--retry-failed`` re-runs calls whose rows all failed).
Then ``summary.md``, ``summary.json`` and the plots (``speedup_<model>.png``, ``overview.png``) are written from
every JSON in the folder (``--plot-only`` does only that).

    NM_DISABLE_ANALYTICS=1 .venv/bin/python benchmarks/sweep.py --out sweep/ [--models a,b] [--sparsities ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

MODELS = ("transformer", "informer", "autoformer", "fedformer", "dlinear", "crossformer", "patchtst", "itransformer")
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
MAGNITUDE_RUNTIMES = ("torch-eager", "deepsparse")
STRUCTURED_RUNTIMES = ("onnxruntime", "torch-compile")
TARGET_DEEPSPARSE = 4.0  # DeepSparse pruned vs DeepSparse dense
TARGET_VS_EAGER = 6.0  # DeepSparse pruned vs torch-eager dense
TARGET_STRUCTURED = 0.9  # wall-clock speedup / dense-kernel MAC reduction
# The rest of issue #6's "done when" matrix (every model x {dense, magnitude 90 %, structured 50 %} timed on
# torch-compile, onnxruntime and DeepSparse), planned after the ratio sweep, one file per call.
MATRIX_EXTRAS = (("magnitude", 0.9, ("onnxruntime", "torch-compile")), ("structured", 0.5, ("deepsparse",)))


@dataclass(frozen=True)
class Job:
    """One ``bench`` call."""

    model: str
    pruner: str
    sparsity: float
    runtimes: tuple[str, ...]
    tag: str = ""  # distinguishes an extra call on the same (model, pruner, sparsity)

    @property
    def filename(self) -> str:
        return f"{self.model}-{self.pruner}-{self.sparsity:g}{'-' + self.tag if self.tag else ''}.json"

    @property
    def argument(self) -> str:
        """The ``--job`` form of this call (read back by ``parse_job``)."""
        return f"{self.model}:{self.pruner}:{self.sparsity:g}:{','.join(self.runtimes)}:{self.tag}"


def parse_job(text: str) -> Job:
    model, pruner, sparsity, runtimes, *tag = text.split(":")
    return Job(model, pruner, float(sparsity), tuple(runtimes.split(",")), tag[0] if tag else "")


def plan(models: Sequence[str] = MODELS, sparsities: Sequence[float] = SPARSITIES, *,
         magnitude_ort: bool = False, pruners: Sequence[str] = ("magnitude", "structured"),
         matrix: bool = False, compile_sparsities: Sequence[float] | None = None) -> list[Job]:
    """The calls of a sweep, model by model (so a partial sweep has whole models); with ``matrix``, the
    ``MATRIX_EXTRAS`` calls of every model follow (tagged ``matrix``). ``compile_sparsities`` limits
    torch-compile (the slowest runtime to prepare) to those structured sparsities; None keeps it everywhere."""
    magnitude = MAGNITUDE_RUNTIMES + (("onnxruntime",) if magnitude_ort else ())

    def runtimes(pruner: str, sparsity: float) -> tuple[str, ...]:
        if pruner == "magnitude":
            return magnitude
        if compile_sparsities is None or any(abs(sparsity - c) < 1e-9 for c in compile_sparsities):
            return STRUCTURED_RUNTIMES
        return tuple(r for r in STRUCTURED_RUNTIMES if r != "torch-compile")

    jobs = [Job(m, p, float(s), runtimes(p, float(s))) for m in models for s in sparsities for p in pruners]
    if matrix:
        jobs += [Job(m, p, s, rts, "matrix") for p, s, rts in MATRIX_EXTRAS for m in models if p in pruners]
    return jobs


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _all_failed(path: Path) -> bool:
    rows = json.loads(path.read_text()).get("rows", [])
    return not rows or all(r.get("status") == "failed" for r in rows)


def run_jobs(jobs: Iterable[Job], out: Path, *, bench_fn: Callable[..., list[dict[str, Any]]] | None = None,
             retry_failed: bool = False, log: Callable[[str], None] = print,
             isolate: Callable[[Job], tuple[int, str]] | None = None, pause_file: Path | None = None,
             **bench_kwargs: Any) -> list[Path]:
    """Run every job whose JSON is not in ``out`` yet; returns the files written now.

    ``bench_kwargs`` go to ``bench`` (batch_size, threads, warmup, repeats...). A call that raises (a pruner
    failing on a model) is written as one failed row, so the sweep goes on and the failure is on record.
    ``isolate(job) -> (exit code, stderr)`` runs the job in a child process that writes the file itself
    (``main`` passes one): DeepSparse 1.8 can abort the whole process, which then fails only that job.
    While ``pause_file`` exists, the next call waits: other work can then use the machine between timed calls.
    """
    if bench_fn is None and isolate is None:
        from tsbench_core.bench import bench as bench_fn
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for job in jobs:
        path = out / job.filename
        if path.exists() and not (retry_failed and _all_failed(path)):
            log(f"skip {job.filename} (exists)")
            continue
        _wait_while(pause_file, log)
        started = time.time()
        if isolate is not None:
            code, stderr = isolate(job)
            if path.exists() and path.stat().st_mtime >= started:  # the child wrote it
                written.append(path)
                log(f"{job.filename}: done in a child process ({round(time.time() - started, 1)} s)")
                continue
            rows = [{"model": job.model, "pruner": job.pruner, "sparsity": job.sparsity, "runtime": r,
                     "status": "failed", "reason": f"the benchmark process died (exit code {code}): "
                     f"{_crash_line(stderr)}"} for r in job.runtimes]
        else:
            try:
                rows = bench_fn(job.model, job.pruner, job.sparsity, list(job.runtimes), **bench_kwargs)
            except Exception as exc:
                traceback.print_exc()
                rows = [{"model": job.model, "pruner": job.pruner, "sparsity": job.sparsity, "runtime": r,
                         "status": "failed", "reason": f"{type(exc).__name__}: {exc}"} for r in job.runtimes]
        payload = {"job": {"model": job.model, "pruner": job.pruner, "sparsity": job.sparsity,
                           "runtimes": list(job.runtimes), "tag": job.tag},
                   "bench_kwargs": {k: v for k, v in bench_kwargs.items() if k != "registry"},
                   "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                   "duration_s": round(time.time() - started, 1), "machine": machine(), "rows": rows}
        _write_json(path, payload)
        written.append(path)
        statuses = ", ".join(f"{r['runtime']} {r.get('status')}" for r in rows)
        log(f"{job.filename}: {statuses} ({payload['duration_s']} s)")
    return written


def _wait_while(pause_file: Path | None, log: Callable[[str], None]) -> None:
    if pause_file is not None and pause_file.exists():
        log(f"paused while {pause_file} exists")
        while pause_file.exists():
            time.sleep(2)


def _crash_line(stderr: str) -> str:
    """The informative line of a dead child's stderr (DeepSparse's ``Assertion at ...``, else the last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    assertion = next((line for line in lines if line.startswith("Assertion at")), None)
    return (assertion or (lines[-1] if lines else "no output"))[:300]


def child_runner(out: Path, bench_args: Sequence[str]) -> Callable[[Job], tuple[int, str]]:
    """``isolate`` for ``run_jobs``: each job in ``python sweep.py --job ...`` (same bench arguments)."""
    def run(job: Job) -> tuple[int, str]:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--job", job.argument,
               *bench_args]
        proc = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True, check=False)
        sys.stderr.write(proc.stderr[-4000:])
        return proc.returncode, proc.stderr
    return run


def machine() -> dict[str, Any]:
    """Where the sweep ran (versions are in each row's runtime info)."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "loadavg": load}


def load_rows(out: Path) -> list[dict[str, Any]]:
    """Every row of every sweep JSON in ``out`` (files of other kinds are ignored)."""
    rows = []
    for path in sorted(out.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and "job" in doc:
            rows.extend(doc.get("rows", []))
    return rows


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (model, pruner, sparsity, runtime) with the ratios the targets are about.

    ``efficiency`` is speedup / MAC reduction, the structured target's figure (dense-kernel MACs for
    structured pruning, effective MACs for unstructured). ``meets`` tells whether the record meets the target
    of its pruner (None where the pruner/runtime pair has no target).
    """
    out = []
    for r in rows:
        rec = {k: r.get(k) for k in ("model", "pruner", "sparsity", "runtime", "status", "reason", "dense_ms",
                                     "pruned_ms", "speedup", "speedup_vs_eager_dense", "achieved_sparsity")}
        structured = r.get("structure") == "structured" or r.get("pruner") == "structured"
        reduction = r.get("mac_reduction_dense_kernels" if structured else "mac_reduction_effective")
        rec["mac_reduction"] = reduction
        rec["efficiency"] = rec["speedup"] / reduction if rec.get("speedup") and reduction else None
        info = r.get("pruned_info") or r.get("dense_info") or {}
        rec["fraction_of_supported_ops"] = info.get("fraction_of_supported_ops")
        rec["meets"] = None
        if rec["status"] == "ok" and structured and rec["efficiency"] is not None:
            rec["meets"] = rec["efficiency"] >= TARGET_STRUCTURED
        elif rec["status"] == "ok" and r.get("runtime") == "deepsparse" and rec.get("speedup"):
            vs_eager = rec.get("speedup_vs_eager_dense")
            rec["meets"] = rec["speedup"] >= TARGET_DEEPSPARSE and vs_eager is not None and \
                vs_eager >= TARGET_VS_EAGER
        out.append(rec)
    return sorted(out, key=lambda x: (str(x["model"]), str(x["pruner"]), x["sparsity"] or 0, str(x["runtime"])))


def _f(value: Any, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def summary_markdown(records: Sequence[dict[str, Any]]) -> str:
    """Two tables: the DeepSparse/unstructured one and the structured one."""
    mag = [r for r in records if r["pruner"] != "structured"]
    struct = [r for r in records if r["pruner"] == "structured"]
    lines = [f"### Unstructured ({', '.join(sorted({str(r['pruner']) for r in mag})) or 'magnitude'}): "
             f"targets {TARGET_DEEPSPARSE:g}× on DeepSparse, {TARGET_VS_EAGER:g}× vs torch-eager dense", "",
             "| model | sparsity | runtime | status | dense ms | pruned ms | speedup | vs eager dense | "
             "effective MAC red. | supported ops |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in mag:
        lines.append(f"| {r['model']} | {r['sparsity']:g} | {r['runtime']} | {_status(r)} | "
                     f"{_f(r['dense_ms'], '.1f')} | {_f(r['pruned_ms'], '.1f')} | {_f(r['speedup'], '.2f', '×')} | "
                     f"{_f(r['speedup_vs_eager_dense'], '.2f', '×')} | {_f(r['mac_reduction'], '.2f', '×')} | "
                     f"{_f(r['fraction_of_supported_ops'], '.3f')} |")
    lines += ["", f"### Structured: target speedup ≥ {TARGET_STRUCTURED:g} × dense-kernel MAC reduction", "",
              "| model | sparsity | runtime | status | dense ms | pruned ms | speedup | MAC red. | "
              "speedup / MAC red. |", "|---|---|---|---|---|---|---|---|---|"]
    for r in struct:
        lines.append(f"| {r['model']} | {r['sparsity']:g} | {r['runtime']} | {_status(r)} | "
                     f"{_f(r['dense_ms'], '.1f')} | {_f(r['pruned_ms'], '.1f')} | {_f(r['speedup'], '.2f', '×')} | "
                     f"{_f(r['mac_reduction'], '.2f', '×')} | {_f(r['efficiency'], '.2f')} |")
    return "\n".join(lines) + "\n"


def _status(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['status']}: {str(r.get('reason') or '')[:120].replace('|', '/')}"
    return "ok" + {True: " (meets)", False: "", None: ""}[r["meets"]]


_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(index: int) -> dict[str, Any]:
    return {"color": _COLORS[index % len(_COLORS)], "marker": _MARKERS[index % len(_MARKERS)]}


def _figure(n_panels: int, width: float = 5.2, height: float = 4.0) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")  # no pyplot: nothing global
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, n_panels, squeeze=False).ravel())


def plot_sweep(records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """Speedup vs sparsity, per model (``speedup_<model>.png``: unstructured and structured panels) and over
    all models (``overview.png``), with the targets drawn as dashed lines; returns the files written."""
    from tsbench_core.report.plots import save_figure

    ok = [r for r in records if r["status"] == "ok" and r.get("speedup")]
    written: list[Path] = []
    for model in sorted({r["model"] for r in ok}):
        mine = [r for r in ok if r["model"] == model]
        fig, (ax_u, ax_s) = _figure(2)
        _panel_unstructured(ax_u, [r for r in mine if r["pruner"] != "structured"])
        _panel_structured(ax_s, [r for r in mine if r["pruner"] == "structured"])
        fig.suptitle(f"{model}: pruned vs dense, same runtime")
        written += save_figure(fig, folder, f"speedup_{model}")
    if ok:
        fig, (ax_u, ax_s) = _figure(2, width=7.0)
        deepsparse = [r for r in ok if r["runtime"] == "deepsparse" and r["pruner"] != "structured"]
        for i, model in enumerate(sorted({r["model"] for r in deepsparse})):
            pts = sorted((r["sparsity"], r["speedup"]) for r in deepsparse if r["model"] == model)
            ax_u.plot(*zip(*pts, strict=True), label=model, **_style(i))
        ax_u.axhline(TARGET_DEEPSPARSE, ls="--", color="k", lw=1, label=f"target {TARGET_DEEPSPARSE:g}×")
        ax_u.set(xlabel="sparsity (magnitude, global)", ylabel="DeepSparse speedup (dense / pruned)",
                 title="unstructured on DeepSparse")
        structured = [r for r in ok if r["pruner"] == "structured" and r.get("efficiency")]
        keys = sorted({(r["model"], r["runtime"]) for r in structured})
        for model, runtime in keys:
            pts = sorted((r["sparsity"], r["efficiency"]) for r in structured
                         if (r["model"], r["runtime"]) == (model, runtime))
            ax_s.plot(*zip(*pts, strict=True), label=f"{model} / {runtime}", ls="-" if runtime == "onnxruntime"
                      else ":", **_style(sorted({k[0] for k in keys}).index(model)))
        ax_s.axhline(TARGET_STRUCTURED, ls="--", color="k", lw=1, label=f"target {TARGET_STRUCTURED:g}")
        ax_s.set(xlabel="structured pruning target", ylabel="speedup / MAC reduction",
                 title="structured on dense kernels")
        ax_u.grid(alpha=0.3)
        ax_u.legend(fontsize=7)
        ax_s.grid(alpha=0.3)
        ax_s.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: it hides the points
        written += save_figure(fig, folder, "overview")
    return written


def _panel_unstructured(ax: Any, recs: Sequence[dict[str, Any]]) -> None:
    for i, runtime in enumerate(sorted({r["runtime"] for r in recs})):
        pts = sorted((r["sparsity"], r["speedup"], r.get("speedup_vs_eager_dense")) for r in recs
                     if r["runtime"] == runtime)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], label=f"{runtime}: vs its dense", **_style(i))
        if runtime == "deepsparse" and all(p[2] for p in pts):
            ax.plot(xs, [p[2] for p in pts], ls=":", label="deepsparse: vs torch-eager dense", **_style(i))
    ax.axhline(TARGET_DEEPSPARSE, ls="--", color="k", lw=1, label=f"target {TARGET_DEEPSPARSE:g}× (same runtime)")
    ax.axhline(TARGET_VS_EAGER, ls="-.", color="grey", lw=1, label=f"target {TARGET_VS_EAGER:g}× (vs eager dense)")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set(xlabel="sparsity (magnitude, global)", ylabel="speedup", title="unstructured")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _panel_structured(ax: Any, recs: Sequence[dict[str, Any]]) -> None:
    for i, runtime in enumerate(sorted({r["runtime"] for r in recs})):
        pts = sorted((r["sparsity"], r["speedup"], r["mac_reduction"]) for r in recs if r["runtime"] == runtime)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], label=f"{runtime}: speedup", **_style(i))
        if all(p[2] for p in pts):
            ax.plot(xs, [TARGET_STRUCTURED * p[2] for p in pts], ls="--", label=f"{runtime}: target "
                    f"{TARGET_STRUCTURED:g} × MAC reduction", **_style(i))
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set(xlabel="structured pruning target", ylabel="speedup", title="structured")
    ax.grid(alpha=0.3)
    if recs:
        ax.legend(fontsize=7)


def report(out: Path, plots: bool = True) -> list[Path]:
    """summary.json, summary.md and (``plots``) the plots from every sweep JSON in ``out``."""
    records = summarize(load_rows(out))
    _write_json(out / "summary.json", records)
    tmp = out / ".summary.md.tmp"
    tmp.write_text(summary_markdown(records))
    os.replace(tmp, out / "summary.md")
    return [out / "summary.json", out / "summary.md", *(plot_sweep(records, out / "plots") if plots else [])]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder of the per-call JSON files and plots")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sparsities", default=",".join(f"{s:g}" for s in SPARSITIES))
    ap.add_argument("--pruners", default="magnitude,structured")
    ap.add_argument("--magnitude-ort", action="store_true", help="also time magnitude-pruned models on onnxruntime")
    ap.add_argument("--matrix", action="store_true", help="then time the rest of the done-when matrix: "
                    "magnitude 90 %% on onnxruntime + torch-compile, structured 50 %% on deepsparse")
    ap.add_argument("--compile-sparsities", help="time torch-compile (structured) only at these sparsities, "
                    "e.g. 0.5 (default: at every sparsity)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--pause-file", type=Path, help="wait before each call while this file exists")
    ap.add_argument("--retry-failed", action="store_true", help="re-run calls whose rows all failed")
    ap.add_argument("--plot-only", action="store_true", help="only rebuild the summary and plots")
    ap.add_argument("--in-process", action="store_true", help="run the calls in this process, not one child "
                    "process per call (a DeepSparse abort then ends the sweep)")
    ap.add_argument("--job", help=argparse.SUPPRESS)  # model:pruner:sparsity:rt1,rt2[:tag] — one call, in a child
    args = ap.parse_args(argv)
    bench_kwargs = {"batch_size": args.batch_size, "threads": args.threads, "warmup": args.warmup,
                    "repeats": args.repeats}
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.job:
        from tsbench_core.registry import load_plugins

        run_jobs([parse_job(args.job)], args.out, log=log, retry_failed=True, registry=load_plugins(),
                 **bench_kwargs)
        return 0
    if not args.plot_only:
        jobs = plan([m for m in args.models.split(",") if m], [float(s) for s in args.sparsities.split(",") if s],
                    magnitude_ort=args.magnitude_ort, pruners=[p for p in args.pruners.split(",") if p],
                    matrix=args.matrix, compile_sparsities=None if args.compile_sparsities is None else
                    [float(c) for c in args.compile_sparsities.split(",") if c])
        if args.in_process:
            from tsbench_core.registry import load_plugins

            run_jobs(jobs, args.out, retry_failed=args.retry_failed, log=log, registry=load_plugins(),
                     **bench_kwargs)
        else:
            child_args = [f"--{k.replace('_', '-')}={v}" for k, v in bench_kwargs.items() if v is not None]
            run_jobs(jobs, args.out, retry_failed=args.retry_failed, log=log,
                     isolate=child_runner(args.out, child_args), pause_file=args.pause_file)
    for path in report(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
