"""Which feed-forward hidden widths DeepSparse 1.8's compiler takes, and which abort the process.

The engine aborts (``Assertion at src/lib/jit/function/fused_ops.cpp:250``) on some structured-pruned models;
this probe reproduces it on a toy FFN ``Linear(d_model -> h) - act - Linear(h -> d_model)``, exported the way
``sparse_runtime/export.py`` exports a model (legacy exporter, opset 14, static shapes). Every compile runs in
its own child process (the abort kills it); the child compiles with ``batch_size`` and one core, runs once,
and prints a marker. One JSON line per configuration goes to ``--out`` (resumable: configurations already in
the file are skipped).

    NM_DISABLE_ANALYTICS=1 nice -n 19 .venv/bin/python benchmarks/deepsparse_width_probe.py \\
        --out benchmarks/results/deepsparse_width_probe/scan.jsonl --widths 960:1101:1 --d-model 512 \\
        --seq-len 96 --act gelu --batch 4
    .venv/bin/python benchmarks/deepsparse_width_probe.py --out ... --summary   # per-group summary
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ACTIVATIONS = {"gelu": lambda x: F.gelu(x), "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
               "relu": F.relu}
_CHILD = """
import sys
import numpy as np
from deepsparse import compile_model
engine = compile_model(sys.argv[1], batch_size=int(sys.argv[2]), num_cores=int(sys.argv[4]))
print("PROBE_COMPILED", flush=True)
shape = [int(s) for s in sys.argv[3].split(",")]
engine.run([np.random.default_rng(0).standard_normal(shape).astype(np.float32)])
print("PROBE_RAN", flush=True)
"""


class ToyFFN(nn.Module):
    """``Linear(d -> h) - act - Linear(h -> d)``, as the models' feed-forward blocks are written."""

    def __init__(self, d_model: int, hidden: int, act: str) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, hidden)
        self.linear2 = nn.Linear(hidden, d_model)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(ACTIVATIONS[self.act](self.linear1(x)))


def parse_widths(spec: str) -> list[int]:
    """``a:b:s`` (range, b exclusive) or ``a,b,c``; several specs joined by ``+``."""
    out: list[int] = []
    for part in spec.split("+"):
        if ":" in part:
            a, b, s = (int(v) for v in part.split(":"))
            out += list(range(a, b, s))
        else:
            out += [int(v) for v in part.split(",") if v]
    return sorted(set(out))


def probe_one(d_model: int, hidden: int, act: str, batch: int, seq_len: int, workdir: Path, cores: int = 1,
              timeout: float = 600.0) -> dict[str, Any]:
    """Export the toy FFN and compile + run it in a child; the outcome as a JSON-able dict."""
    from sparse_runtime.export import export_onnx

    torch.manual_seed(0)
    model = ToyFFN(d_model, hidden, act).eval()
    shape = (batch, seq_len, d_model) if seq_len else (batch, d_model)
    path = workdir / f"ffn_{d_model}_{hidden}_{act}_{batch}_{seq_len}.onnx"
    export = export_onnx(model, (torch.randn(*shape),), path)
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
    row: dict[str, Any] = {"d_model": d_model, "hidden": hidden, "act": act, "batch": batch, "seq_len": seq_len,
                           "cores": cores, "ops": sorted(export.op_counts)}
    try:
        args = [sys.executable, "-c", _CHILD, str(path), str(batch), ",".join(map(str, shape)), str(cores)]
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        row.update(status="timeout")
        return row
    finally:
        path.unlink(missing_ok=True)
    log = proc.stdout + "\n" + proc.stderr
    if "PROBE_RAN" in proc.stdout:
        row["status"] = "ok"
    else:
        assertion = next((ln.strip() for ln in log.splitlines() if ln.startswith("Assertion at")), "")
        stage = "run" if "PROBE_COMPILED" in proc.stdout else "compile"
        row.update(status="abort" if assertion else "error", stage=stage, exit_code=proc.returncode,
                   message=assertion or log.strip().splitlines()[-1][:300] if log.strip() else "")
    return row


def _key(row: dict[str, Any]) -> tuple:
    return (row["d_model"], row["hidden"], row["act"], row["batch"], row["seq_len"], row.get("cores", 1))


def run(out: Path, configs: Iterable[tuple[int, int, str, int, int, int]], log: Any = print) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {_key(json.loads(line)) for line in out.read_text().splitlines()} if out.exists() else set()
    with tempfile.TemporaryDirectory(prefix="ds-width-probe-") as tmp:
        for d_model, hidden, act, batch, seq_len, cores in configs:
            if (d_model, hidden, act, batch, seq_len, cores) in done:
                continue
            row = probe_one(d_model, hidden, act, batch, seq_len, Path(tmp), cores)
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            log(f"d={d_model} h={hidden} act={act} B={batch} L={seq_len} cores={cores}: {row['status']} "
                f"{row.get('message', '')}")


def _intervals(values: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    runs: list[list[int]] = []
    for v in sorted(set(values)):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def summary(rows: Sequence[dict[str, Any]], period: int = 64) -> str:
    """Per (d_model, act, batch, seq_len, cores): widths scanned, the failing ones and their residues."""
    lines = []
    rows = list({_key(r): r for r in rows}.values())  # the last row of a configuration wins
    group_key = lambda r: (r["d_model"], r["act"], r["batch"], r["seq_len"], r.get("cores", 1))  # noqa: E731
    for (d_model, act, batch, seq_len, cores), group in itertools.groupby(
            sorted(rows, key=lambda r: (group_key(r), r["hidden"])), key=group_key):
        items = list(group)
        bad = [r["hidden"] for r in items if r["status"] != "ok"]
        good = [r["hidden"] for r in items if r["status"] == "ok"]
        lines.append(f"d_model={d_model} act={act} batch={batch} seq_len={seq_len or '-'} cores={cores}: "
                     f"{len(items)} widths in [{min(r['hidden'] for r in items)}, "
                     f"{max(r['hidden'] for r in items)}], {len(bad)} not ok" + (f": {_intervals(bad)}" if bad else ""))
        if bad:
            messages = sorted({r.get("message", "") for r in items if r["status"] != "ok"})
            lines.append(f"    failing widths mod {period}: {_intervals(h % period for h in bad)}; "
                         f"compiling widths mod {period}: {_intervals(h % period for h in good)}; {messages}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON-lines file (appended, resumable)")
    ap.add_argument("--widths", default="960:1101:1", help="a:b:s, or a,b,c; joined by +")
    ap.add_argument("--d-model", default="512", help="comma-separated")
    ap.add_argument("--act", default="gelu", help=f"comma-separated, of {sorted(ACTIVATIONS)}")
    ap.add_argument("--batch", default="4", help="comma-separated")
    ap.add_argument("--seq-len", default="0", help="comma-separated; 0 = 2-D input [B, d_model]")
    ap.add_argument("--cores", default="1", help="comma-separated num_cores of the compile")
    ap.add_argument("--summary", action="store_true", help="print the summary of --out and exit")
    args = ap.parse_args(argv)
    if not args.summary:
        ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
        configs = itertools.product(ints(args.d_model), parse_widths(args.widths), args.act.split(","),
                                    ints(args.batch), ints(args.seq_len), ints(args.cores))
        run(args.out, list(configs))
    print(summary([json.loads(line) for line in args.out.read_text().splitlines()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
