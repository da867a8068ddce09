"""``tsbench bench``: time one ad-hoc cell on random-initialised weights, next to its dense reference.

Latency does not depend on training, so nothing is trained: the model is built with seed 0, pruned one-shot,
and for every runtime both the dense and the pruned model are exported/compiled, checked against torch eager
on two random batches (the correctness gate) and only then timed, alternating between the two so that load
from elsewhere on the machine hits both alike.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from tsbench_core.accounting import count_macs, count_params
from tsbench_core.cpu import cpu_facts, cpu_summary
from tsbench_core.data import Batch, DataShape, example_inputs
from tsbench_core.errors import CellError, RuntimeUnavailable, UserError
from tsbench_core.protocols import OnnxGraphRuntime, PruneContext, availability_of, int8_plan_of, time_encoding_of
from tsbench_core.spec import DEFAULT_KEEP_FLOAT, QuantizeConfig, Spec, TimingConfig
from tsbench_core.timing import time_sessions_interleaved
from tsbench_core.verify import verify_session

REFERENCE_RUNTIME = "torch-eager"

# The defaults are a spec's: timing, the INT8 gate and the runtime are those of a spec that leaves them unset.
TIMING_DEFAULTS = TimingConfig()
INT8_TOLERANCE = QuantizeConfig().tolerance
DEFAULT_RUNTIMES = [entry.plugin for entry in Spec.model_fields["runtimes"].get_default(call_default_factory=True)]
# What a spec has no default for: the pruning entry, and the windows and channels (ETTh1's, the common benchmark).
DEFAULT_PRUNER, DEFAULT_SPARSITY = "magnitude", 0.9
SEQ_LEN, LABEL_LEN, PRED_LEN, ENC_IN = 96, 48, 96, 7


def _validate(plugin: Any, raw: dict[str, Any], flag: str) -> Any:
    try:
        return plugin.params_model.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{flag} for {plugin.name!r}: {problems}") from None


def _prune_context(model_name: str, shape: DataShape, encoding: str, workdir: Path, pruner: str) -> PruneContext:
    """A context without data or training: random calibration batches, and a ``train`` that refuses (a pruner
    that prunes while training cannot be benched on random weights)."""

    def calibration_batches() -> Iterable[Batch]:
        for seed in range(100, 102):
            inputs = example_inputs(shape, 8, encoding, seed=seed)  # type: ignore[arg-type]
            yield Batch(*inputs, y=torch.zeros(8, shape.pred_len, shape.c_out))

    def train(model: nn.Module, **_: Any) -> dict[str, Any]:
        raise UserError(f"--pruner {pruner}: this pruner prunes while training, and tsbench bench trains nothing "
                        "(random weights); benchmark it through a spec with `tsbench run`, or bench a one-shot "
                        "pruner of the same structure (e.g. --pruner magnitude) for its latency")

    return PruneContext(model_name, example_inputs(shape, 2, encoding), calibration_batches,  # type: ignore[arg-type]
                        lambda p, t: torch.mean((p - t) ** 2), train, seed=0, workdir=workdir)


def _macs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
    counted = count_macs(model, inputs, per_sample=True)
    return {"macs_dense": counted["macs_dense"], "macs_effective": counted["macs_effective"]}


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
    rounds: int = 4,
    registry: Any = None,
    quantize: str | None = None,
    quantize_tolerance: float = INT8_TOLERANCE,
    calibration_batches: int = 4,
) -> list[dict[str, Any]]:
    """One row per runtime: dense and pruned latency on that runtime, the speedup, the gate's error figures.

    ``status`` is ``ok``, ``skipped`` (runtime unavailable, with ``reason``) or ``failed`` (export failure or
    mismatch, with ``reason``). ``speedup_vs_eager_dense`` is filled when ``torch-eager`` is among ``runtimes``.

    With ``quantize="int8"``, every runtime that opens a given ONNX graph (``OnnxGraphRuntime``: onnxruntime,
    deepsparse, openvino) also gets a row with ``precision="int8"``: the (pruned) model quantized to INT8 (in the
    runtime's ``int8_format``: MatMulInteger for onnxruntime and deepsparse, QDQ for openvino; calibrated on random
    batches, since bench has no data; the spec default ``keep_float``, so output heads and DFT/attention-internal
    products stay fp32), gated against torch eager fp32 with the relative tolerance, and timed in the same
    interleaved rounds; its ``pruned_ms`` is the INT8 latency and ``dense_ms`` the fp32 dense latency on that
    runtime.
    """
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
    threads = threads or os.cpu_count() or 1
    model_plugin = registry.get("model", model)
    pruner_plugin = registry.get("pruner", pruner)
    runtime_plugins = [registry.get("runtime", name) for name in dict.fromkeys(runtimes)]
    mparams = _validate(model_plugin, model_params or {}, "--model-params")
    pparams = _validate(pruner_plugin, pruner_params or {}, "--pruner-params")
    if label_len > seq_len:
        raise UserError(f"--label-len ({label_len}) cannot exceed --seq-len ({seq_len})")
    shape = DataShape(enc_in, enc_in, enc_in, seq_len, label_len, pred_len)
    encoding = time_encoding_of(mparams)

    torch.manual_seed(0)
    dense = model_plugin.build(mparams, shape).eval()
    example = example_inputs(shape, batch_size, encoding, seed=0)
    gate_batches = [tuple(t.numpy() for t in example_inputs(shape, batch_size, encoding, seed=s)) for s in (1, 2)]
    timing_inputs = [t.numpy() for t in example]
    small = example_inputs(shape, 2, encoding, seed=3)

    with tempfile.TemporaryDirectory(prefix="tsbench-bench-") as tmp:
        workdir = Path(tmp)
        pruned: nn.Module | None = None
        prune_info: dict[str, Any] = {}
        if sparsity > 0:
            context = _prune_context(model, shape, encoding, workdir, pruner)
            try:
                result = pruner_plugin.prune(copy.deepcopy(dense), sparsity, pparams, context)
            except (CellError, UserError):
                raise
            except Exception as exc:
                raise CellError(f"pruner {pruner!r} failed on {model}: {type(exc).__name__}: {exc}") from exc
            pruned = result.model.eval()
            prune_info = result.info
        dense_macs = _macs(dense, small)
        common = {
            "cpu": cpu_summary(),
            "model": model, "pruner": pruner, "structure": getattr(pruner_plugin, "structure", None),
            "sparsity": sparsity, "batch_size": batch_size, "threads": threads,
            "params_dense": count_params(dense)["params_total"], "macs_dense_per_sample": dense_macs["macs_dense"],
        }
        if pruned is not None:
            counts = count_params(pruned)
            pruned_macs = _macs(pruned, small)
            common.update({
                "params_pruned": counts["params_total"],
                "achieved_sparsity": counts["sparsity_prunable"],
                # dense kernels execute macs_dense; only a sparsity-aware kernel can approach macs_effective
                "mac_reduction_dense_kernels": dense_macs["macs_dense"] / max(pruned_macs["macs_dense"], 1),
                "mac_reduction_effective": dense_macs["macs_dense"] / max(pruned_macs["macs_effective"], 1),
                "prune_info": prune_info,
            })
        rows = []
        sessions: dict[tuple[str, str], Any] = {}
        try:
            for plugin in runtime_plugins:
                row = {**common, "runtime": plugin.name}
                rows.append(row)
                prepared = _prepare_and_gate(row, plugin, dense, pruned, example, gate_batches, threads=threads,
                                             atol=atol, rtol=rtol, workdir=workdir / plugin.name)
                sessions.update({(plugin.name, variant): session for variant, session in prepared.items()})
                _add_sizes(row, workdir / plugin.name)
            if quantize is not None:
                for plugin in runtime_plugins:
                    fp32 = next(r for r in rows if r["runtime"] == plugin.name)
                    if not isinstance(plugin, OnnxGraphRuntime) or fp32.get("status") != "gated":
                        continue
                    row = {**common, "runtime": plugin.name, "precision": "int8"}
                    rows.append(row)
                    session = _prepare_int8(row, plugin, pruned if pruned is not None else dense, example,
                                            gate_batches, shape, encoding, threads=threads,
                                            tolerance=quantize_tolerance, calibration_batches=calibration_batches,
                                            workdir=workdir / plugin.name / "int8")
                    if session is not None:
                        sessions[(plugin.name, "int8")] = session
            # every gated session of every runtime, timed in alternating blocks: on a shared machine, load
            # changes then hit all of them alike, so the ratios between them stay meaningful
            results = time_sessions_interleaved({f"{r}\x00{v}": s for (r, v), s in sessions.items()},
                                                timing_inputs, warmup=warmup, repeats=repeats, rounds=rounds)
        finally:
            for session in sessions.values():
                session.close()
    for row in rows:
        if row.get("status") != "gated":
            continue
        row["status"] = "ok"
        int8 = row.get("precision") == "int8"
        for variant in ("dense", "pruned"):
            timed = "int8" if int8 and variant == "pruned" else variant
            result = results.get(f"{row['runtime']}\x00{timed}")
            if result is None:
                continue
            row[f"{variant}_ms"] = result.median_ms
            row[f"{variant}_p10_ms"] = result.p10_ms
            row[f"{variant}_p90_ms"] = result.p90_ms
            row[f"{variant}_samples_per_s"] = result.throughput_samples_per_s
        if "pruned_ms" in row:
            row["speedup"] = row["dense_ms"] / row["pruned_ms"]
        row["repeats"], row["warmup"], row["timing"] = repeats, warmup, f"interleaved, {rounds} rounds"
    for row in rows:
        row.setdefault("precision", "fp32")
    eager = next((r for r in rows if r["runtime"] == REFERENCE_RUNTIME and r["status"] == "ok"), None)
    for row in rows:
        if eager is not None and row["status"] == "ok":
            best = row.get("pruned_ms") or row.get("dense_ms")
            row["speedup_vs_eager_dense"] = eager["dense_ms"] / best if best else None
    return rows


def _prepare_and_gate(row: dict[str, Any], plugin: Any, dense: nn.Module, pruned: nn.Module | None,
                      example: tuple[torch.Tensor, ...], gate_batches: list[tuple[np.ndarray, ...]], *,
                      threads: int, atol: float, rtol: float, workdir: Path) -> dict[str, Any]:
    """Prepare and gate the dense (and pruned) model on one runtime; sets ``row["status"]`` to ``gated``,
    ``skipped`` or ``failed`` and returns the gated sessions (none unless both variants passed)."""
    available = availability_of(plugin)
    if not available.available:
        row.update(status="skipped", reason=available.reason)
        return {}
    params = plugin.params_model()
    variants = {"dense": dense} if pruned is None else {"dense": dense, "pruned": pruned}
    sessions: dict[str, Any] = {}
    variant = "dense"
    try:
        for variant, module in variants.items():
            session = plugin.prepare(copy.deepcopy(module), example, params, threads=threads,
                                     workdir=workdir / variant)
            sessions[variant] = session
            row[f"{variant}_max_abs_err"] = verify_session(session, module, gate_batches, atol=atol, rtol=rtol)
            row[f"{variant}_info"] = getattr(session, "info", {})
    except Exception as exc:
        for session in sessions.values():
            session.close()
        if isinstance(exc, RuntimeUnavailable):
            row.update(status="skipped", reason=str(exc))
        elif isinstance(exc, CellError):
            row.update(status="failed", reason=f"{variant}: {exc}")
        else:  # a runtime bug must not take the other runtimes' rows down
            row.update(status="failed", reason=f"{variant}: {type(exc).__name__}: {exc}")
        return {}
    row["status"] = "gated"
    return sessions


def _add_sizes(row: dict[str, Any], workdir: Path) -> None:
    """``{variant}_model_bytes`` (+ ``_compressed``) of the ONNX graphs a runtime exported, if any."""
    from sparse_runtime.quantize import model_sizes

    for variant in ("dense", "pruned"):
        found = sorted((workdir / variant).glob("model*.onnx"))
        if found:
            sizes = model_sizes(found[0])
            row[f"{variant}_model_bytes"] = sizes["model_bytes"]
            row[f"{variant}_model_bytes_compressed"] = sizes["model_bytes_compressed"]


def _prepare_int8(row: dict[str, Any], plugin: Any, module: nn.Module, example: tuple[torch.Tensor, ...],
                  gate_batches: list[tuple[np.ndarray, ...]], shape: DataShape, encoding: str, *, threads: int,
                  tolerance: float, calibration_batches: int, workdir: Path) -> Any:
    """Export, quantize (random calibration batches), open and gate the INT8 session of one runtime; sets
    ``row["status"]`` to ``gated`` (and returns the session) or ``failed``/``skipped`` (and returns None)."""
    from sparse_runtime.export import export_onnx
    from sparse_runtime.quantize import WindowCalibrationReader, model_sizes, quantize_onnx
    from tsbench_core.verify import verify_session_relative

    batch_size = int(example[0].shape[0])
    params = plugin.params_model()
    session = None
    plan = int8_plan_of(plugin, cpu_facts(), getattr(plugin, "int8_format", "matmulinteger"))
    row["int8_weights"], row["int8_weights_reason"] = plan.weights, plan.reason
    if plan.unsupported:  # before any work
        row.update(status="skipped", reason=f"int8: {plan.unsupported}")
        return None
    try:
        export = export_onnx(module, example, workdir / "model.fp32.onnx", opset=getattr(params, "opset", 14))
        calibration = [tuple(t.numpy() for t in example_inputs(shape, batch_size, encoding, seed=200 + i))  # type: ignore[arg-type]
                       for i in range(calibration_batches)]
        quantized = quantize_onnx(export, workdir / "model.int8.onnx", WindowCalibrationReader(calibration, export),
                                  keep_float=DEFAULT_KEEP_FLOAT,  # what a spec's quantize entry keeps by default
                                  quant_format=plugin.int8_format, weights=plan.weights, weights_reason=plan.reason)
        session = plugin.open_graph(quantized.export, params, threads=threads, batch_size=batch_size)
        row["pruned_max_abs_err"], row["int8_rel_err"] = verify_session_relative(session, module, gate_batches,
                                                                                  tolerance=tolerance)
    except Exception as exc:
        if session is not None:
            session.close()
        if isinstance(exc, RuntimeUnavailable):
            row.update(status="skipped", reason=str(exc))
        else:
            reason = str(exc) if isinstance(exc, CellError) else f"{type(exc).__name__}: {exc}"
            row.update(status="failed", reason=f"int8: {reason}")
        return None
    row["pruned_info"] = {**getattr(session, "info", {}), "quantize": quantized.info()}
    sizes = model_sizes(quantized.path)
    row["pruned_model_bytes"] = sizes["model_bytes"]
    row["pruned_model_bytes_compressed"] = sizes["model_bytes_compressed"]
    row["status"] = "gated"
    return session


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
