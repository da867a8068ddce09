"""Correctness-gate matrix: every model x {dense, magnitude 90 %, structured 50 %} x every CPU runtime.

For each model at its ETTh1 defaults (random weights, seed 0) the three variants are built once (one-shot
pruning, no training, as ``tsbench bench`` does), then every runtime prepares each variant and the session is
gated against torch eager on the same weights with the project's one gate (``tsbench_core.bench``'s
``_prepare_and_gate`` -> ``verify_session``). Nothing is timed: this is the "exports and passes the gate" half
of issue #6; ``benchmarks/sweep.py`` times.

Gate inputs are two real ETTh1 test batches when the data is found (``TSBENCH_DATA_DIR`` or ``--data-dir``),
random inputs otherwise (recorded in ``inputs``). One JSON file per model in ``--out`` (resumable: existing
files are kept unless ``--force``), then ``gate_matrix.json`` and ``gate_matrix.md`` over all of them.

    NM_DISABLE_ANALYTICS=1 .venv/bin/python benchmarks/gate_matrix.py --out gate-matrix/ [--models a,b]
    # re-gate some cells of an existing matrix, merging them into its files:
    ... gate_matrix.py --out gate-matrix/ --update --models transformer --variants structured50 --runtimes deepsparse
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tsbench_core.accounting import count_macs, count_params  # noqa: E402
from tsbench_core.bench import _prepare_and_gate, _prune_context  # noqa: E402
from tsbench_core.data import DataShape, Windows, example_inputs  # noqa: E402
from tsbench_core.protocols import time_encoding_of  # noqa: E402

MODELS = ("transformer", "informer", "autoformer", "fedformer", "dlinear", "crossformer", "patchtst", "itransformer")
RUNTIMES = ("torch-compile", "onnxruntime", "deepsparse")
# (variant name, pruner, sparsity)
VARIANTS = (("dense", None, 0.0), ("magnitude90", "magnitude", 0.9), ("structured50", "structured", 0.5))
SHAPE = DataShape(7, 7, 7, 96, 48, 96)  # ETTh1 defaults: 7 variables, 96 -> 96 with a 48-step label


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def gate_batches(encoding: str, batch_size: int, data_dir: Path | None, registry: Any,
                 shape: DataShape = SHAPE) -> tuple[list[tuple[np.ndarray, ...]], str]:
    """Two gate batches: real ETTh1 test windows when the data is there, else random inputs; and which."""
    if data_dir is not None and (data_dir / "ETT-small" / "ETTh1.csv").exists():
        from tsbench_core.steps.measure import static_batches

        dataset = registry.get("dataset", "etth1")
        splits = dataset.load(dataset.params_model(), Windows(shape.seq_len, shape.label_len, shape.pred_len),
                              data_dir)
        split = splits.test.with_time_encoding(encoding)  # type: ignore[arg-type]
        return static_batches(split, batch_size, 2), "etth1 test"
    return [tuple(t.numpy() for t in example_inputs(shape, batch_size, encoding, seed=s))  # type: ignore[arg-type]
            for s in (1, 2)], "random"


def _variant_facts(dense: nn.Module, module: nn.Module, prune_info: dict[str, Any],
                   small: tuple[torch.Tensor, ...]) -> dict[str, Any]:
    dense_macs = count_macs(dense, small, per_sample=True)
    macs = count_macs(module, small, per_sample=True)
    params_dense = count_params(dense)["params_total"]
    counts = count_params(module)
    return {
        "params_dense": params_dense, "params": counts["params_total"],
        "param_reduction": params_dense / max(counts["params_total"], 1),
        "zeros_over_prunable": counts["sparsity_prunable"],
        "macs_dense_per_sample": dense_macs["macs_dense"], "macs_per_sample": macs["macs_dense"],
        "macs_effective_per_sample": macs["macs_effective"],
        "mac_reduction_dense_kernels": dense_macs["macs_dense"] / max(macs["macs_dense"], 1),
        "mac_reduction_effective": dense_macs["macs_dense"] / max(macs["macs_effective"], 1),
        "prune_info": {k: v for k, v in prune_info.items() if k != "search"},
    }


def _cell(row: dict[str, Any], info_key: str, err_key: str) -> dict[str, Any]:
    """The gate row of ``_prepare_and_gate`` reduced to what the matrix reports."""
    info = row.get(info_key) or {}
    fallbacks = info.get("fallbacks") or {}
    status = {"gated": "ok"}.get(row.get("status", "?"), row.get("status", "?"))
    cell = {"status": status, "max_abs_err": row.get(err_key), "reason": row.get("reason"),
            "prepare_s": row.get("prepare_s")}
    for key in ("fraction_of_supported_ops", "exported_weight_sparsity", "deepsparse_risky_ops",
                "pattern_matcher", "compile_retries", "cpu_avx_type", "padded_widths", "padding_rejected",
                "compile_probe"):
        if key in info:
            cell[key] = info[key]
    if not cell.get("padded_widths"):
        cell.pop("padded_widths", None)
    if fallbacks:
        cell["fallback_ops"] = fallbacks.get("fallback_ops")
        cell["compile_errors"] = fallbacks.get("compile_errors")
    return {k: v for k, v in cell.items() if v is not None}


def gate_model(model_name: str, *, runtimes: Sequence[str] = RUNTIMES, variants: Sequence[tuple] = VARIANTS,
               batch_size: int = 4, threads: int = 1, data_dir: Path | None = None, registry: Any = None,
               shape: DataShape = SHAPE, model_params: dict[str, Any] | None = None,
               log: Any = None) -> dict[str, Any]:
    """Gate every variant of one model on every runtime; returns ``{"model", "variants": {...}}``.

    ``model_params`` overrides the model's defaults (tests use tiny widths). DeepSparse 1.8 can abort the
    process while compiling; the deepsparse runtime itself probes in a subprocess first (``probe_compile``),
    so an abort fails the cell, not the matrix.
    """
    if registry is None:
        from tsbench_core.registry import load_plugins

        registry = load_plugins()
    plugin = registry.get("model", model_name)
    mparams = plugin.params_model.model_validate(model_params or {})
    encoding = time_encoding_of(mparams)
    torch.manual_seed(0)
    dense = plugin.build(mparams, shape).eval()
    batches, inputs_kind = gate_batches(encoding, batch_size, data_dir, registry, shape)
    example = tuple(torch.from_numpy(a) for a in batches[0])
    small = example_inputs(shape, 2, encoding, seed=3)  # type: ignore[arg-type]
    out: dict[str, Any] = {"model": model_name, "batch_size": batch_size, "threads": threads,
                           "inputs": inputs_kind, "shape": vars(shape), "model_params": model_params or {},
                           "variants": {}}
    with tempfile.TemporaryDirectory(prefix="tsbench-gate-") as tmp:
        workdir = Path(tmp)
        for variant, pruner_name, sparsity in variants:
            entry: dict[str, Any] = {"pruner": pruner_name, "sparsity": sparsity, "runtimes": {}}
            out["variants"][variant] = entry
            module, prune_info = dense, {}
            if pruner_name is not None:
                pruner = registry.get("pruner", pruner_name)
                context = _prune_context(model_name, shape, encoding, workdir, pruner_name)
                try:
                    result = pruner.prune(copy.deepcopy(dense), sparsity, pruner.params_model(), context)
                except Exception as exc:  # a pruning failure is this variant's result, not the matrix's end
                    # DLinear has no inner width for channel pruning: not a failure of the runtimes
                    entry["status"] = "not applicable" if "no inner channel group" in str(exc) else "prune failed"
                    entry["reason"] = f"{type(exc).__name__}: {exc}"
                    continue
                module, prune_info = result.model.eval(), result.info
            entry.update(_variant_facts(dense, module, prune_info, small))
            for runtime_name in runtimes:
                runtime = registry.get("runtime", runtime_name)
                row: dict[str, Any] = {"runtime": runtime_name}
                started = time.perf_counter()
                cell_dir = workdir / f"{variant}-{runtime_name}"
                sessions = _prepare_and_gate(row, runtime, module, None, example, batches, threads=threads,
                                             atol=1e-3, rtol=1e-3, workdir=cell_dir)
                row["prepare_s"] = round(time.perf_counter() - started, 1)
                for session in sessions.values():
                    session.close()
                cell = _cell(row, "dense_info", "dense_max_abs_err")
                entry["runtimes"][runtime_name] = cell
                if log is not None:
                    log(f"{model_name:12s} {variant:13s} {runtime_name:13s} {cell['status']:7s} "
                        f"err={cell.get('max_abs_err')} {cell.get('reason', '')[:200]} ({row['prepare_s']} s)")
    return out


# --- report -----------------------------------------------------------------------------------------------

def _fmt_cell(cell: dict[str, Any] | None) -> str:
    if not cell:
        return "not run"
    if cell["status"] == "ok":
        text = f"ok {cell['max_abs_err']:.1e}"
        if "fraction_of_supported_ops" in cell:
            text += f", ops {cell['fraction_of_supported_ops']:.3f}"
        return text + (" (earlier build†)" if cell.get("earlier_build") else "")
    reason = (cell.get("reason") or "").replace("|", "/").replace("\n", " ")
    return f"**{cell['status']}**: {reason[:160]}"


def markdown(results: Sequence[dict[str, Any]], runtimes: Sequence[str] = RUNTIMES) -> str:
    """The matrix as markdown: one row per model and variant, one column per runtime, then the fallbacks."""
    lines = [
        "| model | variant | params (reduction) | MACs/sample (reduction) | " + " | ".join(runtimes) + " |",
        "|---|---|---|---|" + "---|" * len(runtimes),
    ]
    notes, padded = [], []
    for res in results:
        if res.get("error"):
            lines.append(f"| {res['model']} | all | **error**: {res['error'][:160].replace('|', '/')} | | "
                         + " | ".join("-" for _ in runtimes) + " |")
        for variant, entry in res["variants"].items():
            if entry.get("status") in ("prune failed", "not applicable"):
                status = "not applicable" if "no inner channel group" in entry.get("reason", "") else entry["status"]
                lines.append(f"| {res['model']} | {variant} | **{status}**: "
                             f"{entry['reason'][:160].replace('|', '/')} | | " + " | ".join("-" for _ in runtimes)
                             + " |")
                continue
            structured = entry.get("pruner") == "structured"
            red = entry["mac_reduction_dense_kernels"] if structured else entry["mac_reduction_effective"]
            macs = entry["macs_per_sample"] if structured else entry["macs_effective_per_sample"]
            params = f"{entry['params'] / 1e6:.2f} M ({entry['param_reduction']:.2f}×)" if structured else \
                f"{entry['params'] / 1e6:.2f} M, {entry['zeros_over_prunable']:.2f} zeros"
            mac_text = f"{macs / 1e6:.1f} M ({red:.2f}×{'' if structured or variant == 'dense' else ' eff.'})"
            cells = [_fmt_cell(entry["runtimes"].get(r)) for r in runtimes]
            lines.append(f"| {res['model']} | {variant} | {params} | {mac_text} | " + " | ".join(cells) + " |")
            for runtime, cell in entry["runtimes"].items():
                if cell.get("fallback_ops"):
                    ops = ", ".join(f"{k} ×{v}" for k, v in cell["fallback_ops"].items())
                    notes.append(f"- {res['model']} {variant} on {runtime}: outside the engine: {ops}")
                if cell.get("padded_widths"):
                    widths = ", ".join(f"{name} {a}→{b}" for name, (a, b) in cell["padded_widths"].items())
                    padded.append(f"- {res['model']} {variant} on {runtime}: {widths}")
    inputs = sorted({r.get("inputs", "?") for r in results})
    batch = sorted({r["batch_size"] for r in results if r.get("batch_size")})
    lines += ["", f"Gate: max abs error vs torch eager (training form, same weights) on two batches of "
              f"{', '.join(map(str, batch))} ({', '.join(inputs)}); tolerance 1e-3 + 1e-3·|ref|. 'ops' = "
              "DeepSparse fraction of supported ops. MACs: dense-kernel MACs for dense/structured, effective "
              "(non-zero weight) MACs for magnitude."]
    if any(c.get("earlier_build") for r in results for e in r["variants"].values()
           for c in e.get("runtimes", {}).values()):
        lines += ["", "† gated on an earlier build of the model (its code changed before the variant's other "
                  "cells were re-run; `earlier_build` in the JSON has the old parameter/MAC counts)."]
    if notes:
        lines += ["", "Ops outside DeepSparse's engine:", *notes]
    if padded:
        lines += ["", "FFN hidden widths padded for DeepSparse 1.8 (exact zero channels; "
                  "sparse_runtime/ffn_padding.py):", *padded]
    return "\n".join(lines) + "\n"


_BUILD_FACTS = ("params_dense", "params", "macs_dense_per_sample", "macs_per_sample")


def merge(old: dict[str, Any], new: dict[str, Any], runtimes: Sequence[str]) -> dict[str, Any]:
    """``old`` with the re-run variants' facts and runtime cells of ``new``; what was merged is recorded.

    Kept cells of a re-run variant whose model facts changed (the model code changed in between) get
    ``earlier_build`` with the old facts; the markdown marks them."""
    merged = copy.deepcopy(old)
    for variant, entry in new["variants"].items():
        target = merged["variants"].setdefault(variant, {"runtimes": {}})
        changed = [k for k in _BUILD_FACTS if k in target and target[k] != entry.get(k)]
        if changed:  # the model changed since the kept cells were gated: say so on each of them
            for cell in target.get("runtimes", {}).values():
                cell.setdefault("earlier_build", {k: target[k] for k in changed})
        cells = {**target.get("runtimes", {}), **entry.get("runtimes", {})}
        target.update({k: v for k, v in entry.items() if k != "runtimes"}, runtimes=cells)
    merged.setdefault("updates", []).append({"variants": sorted(new["variants"]), "runtimes": list(runtimes),
                                             "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    return merged


def collect(out: Path, models: Sequence[str]) -> list[dict[str, Any]]:
    return [json.loads((out / f"{m}.json").read_text()) for m in models if (out / f"{m}.json").exists()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for <model>.json, gate_matrix.{json,md}")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all eight; \"\" only "
                    "rewrites the reports from the folder's JSON files)")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="1 by default: the gate is not timing-sensitive")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: $TSBENCH_DATA_DIR (random inputs if "
                    "neither has ETT-small/ETTh1.csv)")
    ap.add_argument("--variants", default=",".join(v[0] for v in VARIANTS), help="comma-separated, of "
                    + ", ".join(v[0] for v in VARIANTS))
    ap.add_argument("--force", action="store_true", help="re-run models whose JSON exists")
    ap.add_argument("--update", action="store_true", help="re-run the given variants x runtimes and merge "
                    "their cells into the existing <model>.json; the reports cover every model and runtime")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    runtimes = [r for r in args.runtimes.split(",") if r]
    wanted = [v for v in args.variants.split(",") if v]
    variants = [v for v in VARIANTS if v[0] in wanted]
    if len(variants) != len(wanted):
        ap.error(f"--variants: unknown among {wanted} (known: {[v[0] for v in VARIANTS]})")
    data_dir = args.data_dir or (Path(os.environ["TSBENCH_DATA_DIR"]) if os.environ.get("TSBENCH_DATA_DIR")
                                 else None)
    args.out.mkdir(parents=True, exist_ok=True)
    from tsbench_core.registry import load_plugins

    registry = load_plugins()
    for model in models:
        path = args.out / f"{model}.json"
        if path.exists() and not (args.force or args.update):
            print(f"{model}: {path} exists, kept (--force to re-run, --update to merge new cells)", flush=True)
            continue
        try:
            result = gate_model(model, runtimes=runtimes, variants=variants, batch_size=args.batch_size,
                                threads=args.threads, data_dir=data_dir, registry=registry,
                                log=lambda s: print(s, flush=True))
        except Exception as exc:  # record and go on with the next model
            traceback.print_exc()
            result = {"model": model, "error": f"{type(exc).__name__}: {exc}", "variants": {}}
        if args.update and path.exists() and "error" not in result:
            result = merge(json.loads(path.read_text()), result, runtimes)
        _write_json(path, result)
    # the reports cover every model and runtime of the folder, not only this call's (--models "" only rewrites them)
    results = collect(args.out, MODELS)
    _write_json(args.out / "gate_matrix.json", results)
    (args.out / "gate_matrix.md").write_text(markdown(results, RUNTIMES))
    print(markdown(results, RUNTIMES))
    failed = [(r["model"], v, rt) for r in results for v, e in r["variants"].items()
              for rt, c in e.get("runtimes", {}).items() if c["status"] != "ok"]
    return 1 if failed or any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
