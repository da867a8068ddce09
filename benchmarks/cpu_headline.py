"""The headline ratios of docs/performance.md, re-measured on the CPU at hand: three ``tsbench bench`` calls (each
in its own process), then ``headline.md`` with one row per ratio and the CPU the rows name.

Calls (Transformer, ETTh1 shape defaults, random weights, batch 32, all cores, interleaved timing):
* ``magnitude90``: 90 % global magnitude on torch-eager and DeepSparse — DeepSparse pruned vs DeepSparse dense
  and vs torch-eager dense;
* ``int8``: 90 % in 1×4 blocks with ``--quantize int8`` on torch-eager, ONNX Runtime and DeepSparse — sparse INT8
  vs torch-eager dense fp32;
* ``structured50``: structured 50 % on ONNX Runtime and torch-compile — speedup / MAC reduction.

About 10 minutes on 2 cores. Each call's rows go to ``<out>/<call>.json`` (kept when it exists: resumable).

    NM_DISABLE_ANALYTICS=1 .venv/bin/python benchmarks/cpu_headline.py --out cpu_headline/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

COMMON = ["--model", "transformer", "--batch-size", "32", "--repeats", "8", "--warmup", "1", "--json"]
CALLS: dict[str, list[str]] = {
    "magnitude90": ["--pruner", "magnitude", "--sparsity", "0.9", "--runtime", "torch-eager",
                    "--runtime", "deepsparse"],
    "int8": ["--pruner", "magnitude", "--sparsity", "0.9", "--pruner-params", '{"block": 4}', "--quantize", "int8",
             "--runtime", "torch-eager", "--runtime", "onnxruntime", "--runtime", "deepsparse"],
    "structured50": ["--pruner", "structured", "--sparsity", "0.5", "--runtime", "onnxruntime",
                     "--runtime", "torch-compile"],
}


def command(call: str) -> list[str]:
    return [sys.executable, "-m", "tsbench_core.cli", "bench", *COMMON, *CALLS[call]]


def _row(rows: list[dict[str, Any]], runtime: str, precision: str = "fp32") -> dict[str, Any] | None:
    return next((r for r in rows if r.get("runtime") == runtime and r.get("precision", "fp32") == precision), None)


def _ratio(row: dict[str, Any] | None, value: Any, suffix: str = "×") -> str:
    if row is None:
        return "not measured"
    if row.get("status") != "ok" or value is None:
        return f"{row.get('status')}: {row.get('reason', 'no figure')}"
    return f"{value:.2f}{suffix}"


def headline(calls: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """(ratio, value) pairs from the calls' rows; a missing or failed row says so."""
    magnitude, int8, structured = (calls.get(k, []) for k in ("magnitude90", "int8", "structured50"))
    ds = _row(magnitude, "deepsparse")
    out = [("DeepSparse 90 % vs DeepSparse dense", _ratio(ds, ds and ds.get("speedup"))),
           ("DeepSparse 90 % vs torch-eager dense", _ratio(ds, ds and ds.get("speedup_vs_eager_dense")))]
    for runtime, label in (("deepsparse", "DeepSparse"), ("onnxruntime", "ONNX Runtime")):
        row = _row(int8, runtime, "int8")
        out.append((f"{label} INT8, 90 % 1×4 blocks, vs torch-eager dense fp32",
                    _ratio(row, row and row.get("speedup_vs_eager_dense"))))
    for runtime in ("onnxruntime", "torch-compile"):
        row = _row(structured, runtime)
        value = row and row.get("speedup") and row["speedup"] / row["mac_reduction_dense_kernels"]
        out.append((f"structured 50 %, {runtime}: speedup / MAC reduction", _ratio(row, value, "")))
    return out


def cpu_of(calls: dict[str, list[dict[str, Any]]]) -> str:
    """The CPU the rows name (model name and features), or a note when they disagree or name none."""
    seen = {json.dumps(r["cpu"], sort_keys=True) for rows in calls.values() for r in rows if r.get("cpu")}
    if not seen:
        return "unknown (rows without a cpu field)"
    if len(seen) > 1:
        return "several CPUs (the calls ran on different machines)"
    cpu = json.loads(seen.pop())
    return f"{cpu['model_name']} ({', '.join(cpu['features']) or 'no AVX2'}; fingerprint {cpu['fingerprint']})"


def render(calls: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"CPU: {cpu_of(calls)}", "", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in headline(calls)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    calls = {}
    for call in CALLS:
        path = args.out / f"{call}.json"
        if not path.exists():
            done = subprocess.run(command(call), capture_output=True, text=True, check=False)
            try:
                rows = json.loads(done.stdout)
            except json.JSONDecodeError:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                rows = [{"status": "failed", "reason": f"exit code {done.returncode}: {' | '.join(tail)}"}]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(rows, indent=2, default=str) + "\n")
            os.replace(tmp, path)
        calls[call] = json.loads(path.read_text())
    text = render(calls)
    (args.out / "headline.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
