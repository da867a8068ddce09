"""``tsbench bench``: time one ad-hoc cell on briefly trained weights, next to its dense reference.

The flags become an ad-hoc spec (``bench_spec``: synthetic data, a few training steps (``BENCH_TRAINING``), one
pruning entry, the runtimes) run by ``tsbench run``'s pipeline into a store: every runtime's cells are prepared,
gated against torch eager and timed with the protocol of record, each pruned cell in interleaved rounds beside
its dense reference. The table is read back from the stored rows.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tsbench_core.cells import DENSE
from tsbench_core.cpu import cpu_summary
from tsbench_core.errors import UserError
from tsbench_core.protocols import OnnxGraphRuntime
from tsbench_core.spec import QuantizeConfig, Spec, TimingConfig

REFERENCE_RUNTIME = "torch-eager"
BENCH_SPEC_NAME = "bench"

# The defaults are a spec's: timing, the INT8 gate and the runtime are those of a spec that leaves them unset.
TIMING_DEFAULTS = TimingConfig()
INT8_TOLERANCE = QuantizeConfig().tolerance
DEFAULT_RUNTIMES = [entry.plugin for entry in Spec.model_fields["runtimes"].get_default(call_default_factory=True)]
# What a spec has no default for: the pruning entry, and the windows and channels (ETTh1's, the common benchmark).
DEFAULT_PRUNER, DEFAULT_SPARSITY = "magnitude", 0.9
SEQ_LEN, LABEL_LEN, PRED_LEN, ENC_IN = 96, 48, 96, 7
# A few steps of training on the synthetic series, not none: a model at its initialisation can hold tied weights
# (DLinear sets every weight to 1/seq_len), which a magnitude pruner then breaks by zeroing whole layers, a case
# no trained model meets (its tiny output spread made INT8's relative error 0.14 at 50 %). Four Adam steps at
# 1e-3 untie them; latency does not depend on the weights' values.
BENCH_TRAINING: dict[str, Any] = {"epochs": 1, "lr": 1e-3, "max_train_batches": 4, "max_eval_batches": 1}


def _validate(plugin: Any, raw: dict[str, Any], flag: str) -> Any:
    try:
        return plugin.params_model.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{flag} for {plugin.name!r}: {problems}") from None


def bench_spec(model: str, pruner: str, sparsity: float, runtimes: list[Any], batch_size: int, *, threads: int,
               warmup: int, repeats: int, rounds: int, model_params: dict[str, Any], pruner_params: dict[str, Any],
               seq_len: int, label_len: int, pred_len: int, enc_in: int, atol: float, rtol: float,
               quantize: str | None, quantize_tolerance: float, calibration_batches: int) -> dict[str, Any]:
    """The ad-hoc spec of a bench call: synthetic data with ``enc_in`` channels, the model trained for a few steps
    (``BENCH_TRAINING``), one pruning entry, and with ``quantize`` one INT8 entry per INT8 graph
    format, on the runtimes that open such graphs."""
    pruning: list[dict[str, Any]] = []
    if sparsity > 0:
        pruning.append({"pruner": pruner, "sparsities": [sparsity], "params": pruner_params})
    if quantize is not None:
        formats: dict[str, list[str]] = {}
        for plugin in runtimes:
            if isinstance(plugin, OnnxGraphRuntime):
                formats.setdefault(plugin.int8_format, []).append(plugin.name)
        for int8_format, names in formats.items():
            pruning.append({"pruner": pruner, "sparsities": [sparsity], "params": pruner_params, "runtimes": names,
                            "quantize": {"format": int8_format, "calibration_batches": calibration_batches,
                                         "tolerance": quantize_tolerance}})
    return {
        "name": BENCH_SPEC_NAME,
        "description": "tsbench bench (ad-hoc)",
        "datasets": [{"plugin": "synthetic", "params": {"n_vars": enc_in}, "seq_len": seq_len,
                      "label_len": label_len, "pred_len": [pred_len]}],
        "models": [{"plugin": model, "params": model_params}],
        "training": dict(BENCH_TRAINING),
        "pruning": pruning,
        "runtimes": [{"plugin": plugin.name} for plugin in runtimes],
        "timing": {"batch_sizes": [batch_size], "warmup": warmup, "repeats": repeats, "threads": threads,
                   "rounds": rounds, "atol": atol, "rtol": rtol,
                   "runtime_accuracy": False},  # barely trained weights: their accuracy means nothing
    }


def bench(
    model: str,
    pruner: str,
    sparsity: float,
    runtimes: list[str],
    batch_size: int,
    *,
    threads: int | None = TIMING_DEFAULTS.threads,
    warmup: int = TIMING_DEFAULTS.warmup,
    repeats: int = TIMING_DEFAULTS.repeats,
    model_params: dict[str, Any] | None = None,
    pruner_params: dict[str, Any] | None = None,
    seq_len: int = SEQ_LEN,
    label_len: int = LABEL_LEN,
    pred_len: int = PRED_LEN,
    enc_in: int = ENC_IN,
    atol: float = TIMING_DEFAULTS.atol,
    rtol: float = TIMING_DEFAULTS.rtol,
    rounds: int = TIMING_DEFAULTS.rounds,
    registry: Any = None,
    quantize: str | None = None,
    quantize_tolerance: float = INT8_TOLERANCE,
    calibration_batches: int = 4,
    store: str | Path | None = None,
) -> list[dict[str, Any]]:
    """One row per runtime (and per INT8 runtime with ``quantize="int8"``): dense and pruned latency on that
    runtime, the speedup, the gate's error figures — from the rows `tsbench run` stores for the ad-hoc spec
    (``bench_spec``), run through the same pipeline into ``store`` (default: a temporary one, deleted after).

    ``status`` is ``ok``, ``skipped`` (runtime unavailable, with ``reason``) or ``failed`` (export failure or
    mismatch, with ``reason``). ``dense_ms`` is the dense model timed in interleaved rounds with the pruned one
    (the pair the stored speedup comes from). ``speedup_vs_eager_dense`` (torch-eager's paired dense median over
    this row's median: rows timed apart, in the same run) is filled when ``torch-eager`` is among ``runtimes``.

    With ``quantize="int8"``, every runtime that opens a given ONNX graph (``OnnxGraphRuntime``) also gets a row
    with ``precision="int8"``: the pruned model quantized in the runtime's ``int8_format`` (calibrated on the
    synthetic training windows, the spec default ``keep_float``), gated against torch eager fp32 with the relative
    tolerance and timed beside the fp32 dense model on that runtime (``dense_ms``).
    """
    from tsbench_core.runner import run
    from tsbench_core.spec import parse_spec, validate_against
    from tsbench_core.store import Store

    if registry is None:
        from tsbench_core.registry import load_plugins

        registry = load_plugins()
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"--sparsity must be in [0, 1), got {sparsity}")
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise UserError(f"need --batch-size >= 1, --repeats >= 1, --warmup >= 0 (got {batch_size}, {repeats}, "
                        f"{warmup})")
    if not runtimes:
        raise UserError("give at least one --runtime")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize {quantize!r}: the only quantization is 'int8'")
    if label_len > seq_len:
        raise UserError(f"--label-len ({label_len}) cannot exceed --seq-len ({seq_len})")
    threads = threads or os.cpu_count() or 1
    runtime_plugins = [registry.get("runtime", name) for name in dict.fromkeys(runtimes)]
    mparams = _validate(registry.get("model", model), model_params or {}, "--model-params")
    pparams = _validate(registry.get("pruner", pruner), pruner_params or {}, "--pruner-params")
    raw = bench_spec(model, pruner, sparsity, runtime_plugins, batch_size, threads=threads, warmup=warmup,
                     repeats=repeats, rounds=rounds, model_params=mparams.model_dump(mode="json", exclude_unset=True),
                     pruner_params=pparams.model_dump(mode="json", exclude_unset=True), seq_len=seq_len,
                     label_len=label_len, pred_len=pred_len, enc_in=enc_in, atol=atol, rtol=rtol, quantize=quantize,
                     quantize_tolerance=quantize_tolerance, calibration_batches=calibration_batches)
    spec = parse_spec(json.dumps(raw), "tsbench bench")
    validate_against(spec, registry, "tsbench bench")
    with tempfile.TemporaryDirectory(prefix="tsbench-bench-") as tmp:
        path = Path(store) if store is not None else Path(tmp) / "results.db"
        with Store(path) as db:
            summary = run(spec, db, registry=registry, force=True)  # a bench times now: cached rows are re-timed
            computed = set(summary.computed)
            stored = [r for r in db.rows(BENCH_SPEC_NAME) if r["cell_key"] in computed]
    return bench_rows(stored, [p.name for p in runtime_plugins], sparsity,
                      structure=registry.get("pruner", pruner).structure, pruner=pruner, threads=threads)


def bench_rows(stored: list[dict[str, Any]], runtimes: list[str], sparsity: float, *, structure: str | None,
               pruner: str, threads: int) -> list[dict[str, Any]]:
    """The bench table's rows (one per runtime and precision) from the store rows of one bench run."""

    def find(runtime: str, pruned: bool, int8: bool) -> dict[str, Any] | None:
        for row in stored:
            if (row["runtime"] == runtime and (row["pruner"] != DENSE) == pruned
                    and bool(row["quantize"]) == int8):
                return row
        return None

    out = []
    for runtime in runtimes:
        for int8 in (False, True):
            dense = find(runtime, False, False)
            cell = find(runtime, sparsity > 0, int8)
            if cell is None or dense is None:
                continue
            row = _bench_row(dense, cell, int8=int8, paired=sparsity > 0 or int8)
            out.append({"cpu": cpu_summary(), "model": cell["model"], "pruner": pruner, "structure": structure,
                        "sparsity": sparsity, "batch_size": cell["batch_size"], "threads": threads, **row})
    eager = next((r for r in out if r["runtime"] == REFERENCE_RUNTIME and r["status"] == "ok"), None)
    for row in out:
        if eager is not None and row["status"] == "ok":
            best = row.get("pruned_ms") or row.get("dense_ms")
            row["speedup_vs_eager_dense"] = eager["dense_ms"] / best if best else None
    return out


def _bench_row(dense: dict[str, Any], cell: dict[str, Any], *, int8: bool, paired: bool) -> dict[str, Any]:
    """One runtime's bench row from its dense row and the row of the cell timed beside it."""
    row: dict[str, Any] = {"runtime": cell["runtime"], "precision": "int8" if int8 else "fp32",
                           "params_dense": dense["params_total"], "macs_dense_per_sample": dense["macs_dense"],
                           "dense_cell_key": dense["cell_key"]}
    problem = next((r for r in (dense, cell) if r["status"] != "ok"), None)
    if problem is not None:
        which = "dense" if problem is dense else ("int8" if int8 else "pruned")
        reason = problem.get("error") or ""
        return {**row, "status": problem["status"],
                "reason": reason if problem["status"] == "skipped" else f"{which}: {reason}"}
    row |= {"status": "ok", "dense_max_abs_err": dense["max_abs_err_vs_torch"],
            "dense_info": dense["runtime_info"], "dense_model_bytes": dense["model_bytes"],
            "dense_model_bytes_compressed": dense["model_bytes_compressed"]}
    timing = cell["runtime_info"].get("timing") or {}
    if not paired:  # the dense model alone
        return row | _latency("dense", dense["runtime_info"].get("timing") or {}, dense["batch_size"]) | {
            "repeats": len(timing.get("samples_ms", [])), "warmup": timing.get("warmup"), "timing": "alone"}
    pair = timing.get("pair")
    if pair is None:
        return {**row, "status": "failed",
                "reason": f"dense reference not timed beside it: {cell['runtime_info'].get('timing_pair_error')}"}
    row |= _latency("dense", pair, cell["batch_size"]) | _latency("pruned", timing, cell["batch_size"])
    row |= {"speedup": cell["speedup_vs_dense"], "pruned_max_abs_err": cell["max_abs_err_vs_torch"],
            "pruned_info": cell["runtime_info"], "pruned_model_bytes": cell["model_bytes"],
            "pruned_model_bytes_compressed": cell["model_bytes_compressed"], "cell_key": cell["cell_key"],
            "repeats": len(timing["samples_ms"]), "warmup": timing.get("warmup"),
            "timing": f"interleaved with the dense model, {timing.get('rounds')} rounds"}
    if cell["pruner"] != DENSE:
        row |= {"params_pruned": cell["params_total"], "achieved_sparsity": cell["achieved_sparsity"],
                "prune_info": cell["prune_info"],
                # dense kernels execute macs_dense; only a sparsity-aware kernel can approach macs_effective
                "mac_reduction_dense_kernels": dense["macs_dense"] / max(cell["macs_dense"] or 1, 1),
                "mac_reduction_effective": dense["macs_dense"] / max(cell["macs_effective"] or 1, 1)}
    if int8:
        quantized = cell["runtime_info"].get("quantize") or {}
        row |= {"int8_rel_err": cell["rel_err_vs_torch"], "int8_weights": quantized.get("weights_encoding"),
                "int8_weights_reason": quantized.get("weights_reason"), "mse": cell["mse"]}
    return row


def _latency(variant: str, timing: dict[str, Any], batch_size: int) -> dict[str, Any]:
    median = timing.get("median_ms")
    return {f"{variant}_ms": median, f"{variant}_p10_ms": timing.get("p10_ms"),
            f"{variant}_p90_ms": timing.get("p90_ms"), f"{variant}_iqr_ms": timing.get("iqr_ms"),
            f"{variant}_unstable": timing.get("unstable"),
            f"{variant}_samples_per_s": batch_size * 1000.0 / median if median else None}


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_rows(rows: list[dict[str, Any]], as_json: bool = False) -> None:
    """Print the rows as a rich table, or as JSON (one array) on stdout."""
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    first = rows[0] if rows else {}
    title = (f"tsbench bench: {first.get('model')} / {first.get('pruner')} {first.get('sparsity')} / "
             f"batch {first.get('batch_size')} / {first.get('threads')} threads")
    table = Table(title=title)
    for col in ("runtime", "precision", "status", "dense ms", "pruned ms", "speedup", "vs eager dense", "max err",
                "sparsity", "MAC red.", "MB (compr.)", "notes"):
        table.add_column(col, justify="left" if col in ("runtime", "status", "notes") else "right",
                         no_wrap=col != "notes", overflow="fold")
    for r in rows:
        info = r.get("pruned_info") or r.get("dense_info") or {}
        notes = r.get("reason", "")
        if "fraction_of_supported_ops" in info:
            notes = f"supported ops {info['fraction_of_supported_ops']:.3f} " + notes
        decompression = info.get("sparse_weights_decompression")
        if decompression:
            kernels = f", {decompression.get('sparse_kernels', 0)} sparse kernels" if decompression["enabled"] else ""
            notes = f"sparse decompression {decompression['summary']}{kernels} " + notes
        errs = [r.get(k) for k in ("dense_max_abs_err", "pruned_max_abs_err") if r.get(k) is not None]
        reduction = r.get("mac_reduction_effective") if r.get("structure") != "structured" else \
            r.get("mac_reduction_dense_kernels")
        if r.get("int8_rel_err") is not None:
            notes = f"rel err {r['int8_rel_err']:.3f} " + notes
        size = r.get("pruned_model_bytes_compressed") or r.get("dense_model_bytes_compressed")
        table.add_row(
            r["runtime"], r.get("precision", "fp32"), r.get("status", "?"), _fmt(r.get("dense_ms"), ".2f"),
            _fmt(r.get("pruned_ms"), ".2f"),
            _fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") else ""),
            _fmt(r.get("speedup_vs_eager_dense"), ".2f"), _fmt(max(errs) if errs else None, ".1e"),
            _fmt(r.get("achieved_sparsity"), ".3f"), _fmt(reduction, ".2f"),
            _fmt(size / 1e6 if size else None, ".2f"), notes.strip(),
        )
    console = Console(markup=False)  # notes quote runtimes' messages: brackets in them are text, not markup
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=160, markup=False)
    console.print(table)
    console.print("Latency: median of the timed calls (p10/p90 in --json); other load on the machine affects it.")
    if any(r.get("precision") == "int8" for r in rows):
        console.print("int8 rows: 'pruned ms' is the INT8 (pruned) model, 'dense ms' the fp32 dense model on the same "
                      "runtime; max err vs torch-eager fp32, rel err = RMS error / std of the fp32 output.")
