"""``benchmarks/int8_sweep.py``: the command of a call, a dead call's file, the summary table.

The summary test uses FABRICATED rows (made up here, not measurements); one test runs a real ``tsbench bench
--quantize int8`` call on a tiny DLinear through the script's ``run_call``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    path = ROOT / "benchmarks" / "int8_sweep.py"
    spec = importlib.util.spec_from_file_location("tsbench_benchmarks_int8_sweep", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


int8_sweep = _load()


def test_the_command_names_every_runtime_and_the_block_only_when_blocked():
    blocked = int8_sweep.bench_command("transformer", 0.9, 4, batch_size=32, repeats=8, warmup=1)
    assert blocked[blocked.index("--pruner-params") + 1] == '{"block": 4}'
    assert [blocked[i + 1] for i, a in enumerate(blocked) if a == "--runtime"] == list(int8_sweep.RUNTIMES)
    assert blocked[blocked.index("--quantize") + 1] == "int8" and "--json" in blocked
    assert "--pruner-params" not in int8_sweep.bench_command("transformer", 0.9, 1, batch_size=32, repeats=8,
                                                             warmup=1)


def test_a_call_that_dies_leaves_one_failed_row_quoting_its_stderr(tmp_path):
    path = tmp_path / "m-0.9-b4.json"
    int8_sweep.run_call([sys.executable, "-c", "import sys; sys.stderr.write('Assertion at x.hpp:43\\n'); "
                         "sys.exit(134)"], path)
    rows = json.loads(path.read_text())
    assert len(rows) == 1 and rows[0]["status"] == "failed"
    assert "exit code 134" in rows[0]["reason"] and "Assertion at x.hpp:43" in rows[0]["reason"]


def test_summary_puts_each_runtime_and_precision_in_its_column(tmp_path):
    def row(runtime, precision, dense, pruned, vs_eager=None):
        return {"runtime": runtime, "precision": precision, "status": "ok", "dense_ms": dense, "pruned_ms": pruned,
                "speedup": dense / pruned, "speedup_vs_eager_dense": vs_eager, "fabricated": True}

    rows = [row("torch-eager", "fp32", 500.0, 490.0, 500 / 490), row("deepsparse", "fp32", 400.0, 100.0, 5.0),
            row("deepsparse", "int8", 400.0, 80.0, 6.25),
            {"runtime": "onnxruntime", "precision": "int8", "status": "failed", "reason": "gate", "fabricated": True}]
    (tmp_path / "transformer-0.9-b4.json").write_text(json.dumps(rows))
    text = int8_sweep.write_summary(tmp_path).read_text()
    line = next(x for x in text.splitlines() if x.startswith("| transformer"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:4] == ["transformer", "0.9", "1×4", "500.0"]
    assert cells[4] == "–" and cells[5] == "failed"  # ORT fp32 absent, ORT int8 failed
    assert cells[6] == "100.0 (4.00× / 5.00×)" and cells[7] == "80.0 (5.00× / 6.25×)"


def test_a_real_call_on_a_tiny_dlinear(tmp_path):
    command = int8_sweep.bench_command("dlinear", 0.8, 1, batch_size=4, repeats=2, warmup=1)
    command[command.index("--model") + 2:command.index("--model") + 2] = ["--seq-len", "16", "--label-len", "8",
                                                                           "--pred-len", "8", "--threads", "1"]
    at = command.index("deepsparse")
    del command[at - 1:at + 1]  # the DeepSparse part is covered by the INT8 runtime tests; keep this one quick
    path = tmp_path / "dlinear-0.8-b1.json"
    int8_sweep.run_call(command, path)
    rows = json.loads(path.read_text())
    by = {(r["runtime"], r["precision"]): r for r in rows}
    assert by[("torch-eager", "fp32")]["status"] == "ok"
    assert by[("onnxruntime", "int8")]["status"] == "ok", by[("onnxruntime", "int8")].get("reason")
    assert by[("onnxruntime", "int8")]["pruned_ms"] > 0
