"""Sparse + INT8 timings of issue #9 for every model: one ``tsbench bench --quantize int8`` call per
(model, sparsity, block), each in its own process, then ``summary.md`` with one table.

Each call writes ``<out>/<model>-<sparsity>-b<block>.json`` (the rows of ``tsbench bench --json``, written
atomically) and is skipped when that file exists, so an interrupted sweep resumes. A call that dies (DeepSparse
can abort the process) leaves a file with one failed row and the end of its stderr.

    NM_DISABLE_ANALYTICS=1 .venv/bin/python benchmarks/int8_sweep.py --out int8/ [--models a,b] \
        [--sparsities 0.9] [--blocks 4,1] [--repeats 8 --warmup 1] [--pause-file PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

MODELS = ("transformer", "informer", "autoformer", "fedformer", "crossformer", "patchtst", "itransformer", "dlinear")
RUNTIMES = ("torch-eager", "onnxruntime", "deepsparse")
TARGET_VS_EAGER = 8.0  # DeepSparse sparse INT8 vs torch-eager dense fp32 (Transformer, 90 %)


def call_filename(model: str, sparsity: float, block: int) -> str:
    return f"{model}-{sparsity:g}-b{block}.json"


def bench_command(model: str, sparsity: float, block: int, *, batch_size: int, repeats: int,
                  warmup: int) -> list[str]:
    """The ``tsbench bench`` command line of one call (block 1 is plain unstructured magnitude pruning)."""
    command = [sys.executable, "-m", "tsbench_core.cli", "bench", "--model", model, "--pruner", "magnitude",
               "--sparsity", f"{sparsity:g}", "--batch-size", str(batch_size), "--quantize", "int8",
               "--repeats", str(repeats), "--warmup", str(warmup), "--json"]
    for runtime in RUNTIMES:
        command += ["--runtime", runtime]
    if block > 1:
        command += ["--pruner-params", json.dumps({"block": block})]
    return command


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_call(command: list[str], path: Path) -> None:
    """Run one call; its JSON rows go to ``path``, or one failed row when the process died."""
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        rows = [{"status": "failed", "reason": f"exit code {done.returncode}: {' | '.join(tail)}"}]
    _write_json(path, rows)


def _wait_while(pause_file: Path | None) -> None:
    while pause_file is not None and pause_file.exists():
        time.sleep(5)


def summary_rows(out: Path) -> list[dict[str, Any]]:
    """One line per (model, sparsity, block): the ms and ratios of every runtime and precision."""
    lines = []
    for path in sorted(out.glob("*-b*.json")):
        rows = json.loads(path.read_text())
        model, sparsity, block = path.stem.rsplit("-", 2)
        eager = next((r for r in rows if r.get("runtime") == "torch-eager" and r.get("status") == "ok"), None)
        line: dict[str, Any] = {"model": model, "sparsity": float(sparsity), "block": int(block[1:]),
                                "eager_dense_ms": eager["dense_ms"] if eager else None, "cells": {}}
        for r in rows:
            key = f"{r.get('runtime')}/{r.get('precision', 'fp32')}"
            line["cells"][key] = ({"ms": r["pruned_ms"], "dense_ms": r["dense_ms"], "speedup": r["speedup"],
                                   "vs_eager": r.get("speedup_vs_eager_dense")} if r.get("status") == "ok"
                                  else {"failed": r.get("reason", "")})
        lines.append(line)
    return lines


def _cell(line: dict[str, Any], key: str) -> str:
    cell = line["cells"].get(key)
    if cell is None:
        return "–"
    if "failed" in cell:
        return "failed"
    vs = f"{cell['vs_eager']:.2f}×" if cell.get("vs_eager") else "–"
    return f"{cell['ms']:.1f} ({cell['speedup']:.2f}× / {vs})"


def write_summary(out: Path) -> Path:
    keys = ("onnxruntime/fp32", "onnxruntime/int8", "deepsparse/fp32", "deepsparse/int8")
    table = ["| model | sparsity | block | torch-eager dense fp32 ms | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for line in summary_rows(out):
        eager = f"{line['eager_dense_ms']:.1f}" if line["eager_dense_ms"] else "–"
        table.append(f"| {line['model']} | {line['sparsity']:g} | 1×{line['block']} | {eager} | "
                     + " | ".join(_cell(line, k) for k in keys) + " |")
    text = ("Each cell: pruned ms (speedup over the same runtime's dense fp32 model / over torch-eager dense "
            f"fp32). Target (Transformer, 90 %, DeepSparse INT8 vs torch-eager dense fp32): ≥ {TARGET_VS_EAGER:g}×.\n\n"
            + "\n".join(table) + "\n")
    path = out / "summary.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--sparsities", default="0.9")
    ap.add_argument("--blocks", default="4", help="1×b input-channel blocks; 1 is unstructured")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--pause-file", type=Path, help="wait before each call while this file exists")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for model in filter(None, args.models.split(",")):
            for sparsity in (float(s) for s in args.sparsities.split(",") if s):
                for block in (int(b) for b in args.blocks.split(",") if b):
                    path = args.out / call_filename(model, sparsity, block)
                    if path.exists():
                        print(f"skip {path.name} (exists)", flush=True)
                        continue
                    _wait_while(args.pause_file)
                    started = time.time()
                    run_call(bench_command(model, sparsity, block, batch_size=args.batch_size,
                                           repeats=args.repeats, warmup=args.warmup), path)
                    print(f"{path.name}: {time.time() - started:.0f} s", flush=True)
    print(f"wrote {write_summary(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
