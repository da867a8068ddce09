"""Budget estimate of the study's chunks (issue #22) from figures measured earlier in this repository.

Runs nothing: it expands the specs of this folder (as ``tsbench run --dry-run`` does), selects each chunk's cells
(as ``--only`` does) and prices them with the constants below, each taken from a named file of the repository.
Print the table with ``PYTHONPATH=. python specs/study/budget.py`` (``--json`` for the raw figures).

Model of a chunk's wall time (2 cores, nothing else running):
  dense training (when the chunk holds the dense cells)   epochs x EPOCH_S[model], epochs 4 (low) .. 10 (high)
  per pruned checkpoint                                   test evaluation in torch: TEST_BATCHES x EAGER_MS
    + fine-tuning (``fine_tune.epochs``)                  epochs x EPOCH_S (a structured model is smaller: high)
    + gradual magnitude (its ``epochs``, + 1 possible)    epochs x EPOCH_S
  per cell                                                session set-up + (warm-up + gate batches) x latency
                                                          + max(repeats x latency, min_time_s); twice for a
                                                          pruned cell, timed beside a freshly prepared dense
                                                          reference (issue #17's protocol of record)
    + the runtime's own test accuracy                     TEST_BATCHES x latency, where timing.accuracy_at(batch
                                                          size) says so (fp32) and for every INT8 cell
  per dense control (issue #23: dense + a fine-tuning)    its epochs x EPOCH_S + the test evaluation
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tsbench_core.cells import DENSE, Cell, expand, select
from tsbench_core.registry import load_plugins
from tsbench_core.spec import load_spec

HERE = Path(__file__).resolve().parent
SEEDS = ("2021", "2022", "2023")

# Seconds per full training epoch (264 steps of 32 windows + one validation pass) on a 2-core CPU.
EPOCH_S = {
    # docs/performance_data/int8_etth1_2026-12-01/results.csv, train_info.seconds: 0.79 s for 3 epochs of at most
    # 150 batches (AMD EPYC, alone), scaled to 264 batches
    "dlinear": 0.79 / 450 * 264,
    # same file: 7.94 s for 3 epochs of at most 150 batches, scaled to 264 batches
    "itransformer": 7.94 / 450 * 264,
    # docs/reproduction.md: 3 epochs in 378 s, alone on the machine (2026-12-01)
    "patchtst": 378 / 3,
    # same results.csv: 263 s for 80 batches + one validation pass (~45 s = TEST_BATCHES x EAGER_MS), scaled
    # (docs/reproduction.md's 5351 s for one epoch was under load 12-19 and is not used)
    "transformer": (263 - 45) / 80 * 264 + 45,
    # docs/reproduction.md: 3 epochs in 2076 s, alone (2026-12-01)
    "informer": 2076 / 3,
    # docs/reproduction.md: one epoch in 821 s (2026-11-22, Intel Xeon, load average 12-19)
    "autoformer": 821,
    # docs/reproduction.md: one epoch in 663 s (2026-12-01, shared machine)
    "fedformer": 663,
    # docs/reproduction.md: one epoch in 3487 s including a 12-minute pause, shared machine
    "crossformer": 3487 - 12 * 60,
}
# torch-eager dense latency of one batch of 32 (ms): docs/performance_history.md, "Sparse + INT8, all eight models
# (2026-12-01, AMD EPYC)", column "torch-eager dense fp32 ms", the 1x1 rows
EAGER_MS = {"transformer": 506.7, "informer": 543.6, "autoformer": 636.0, "fedformer": 674.0,
            "crossformer": 880.1, "patchtst": 136.3, "itransformer": 7.6, "dlinear": 0.9}
TEST_BATCHES = 88  # ETTh1 96 -> 96: 2785 test windows (docs/reproduction.md) in batches of 32
SWEEP = HERE.parents[1] / "docs" / "performance_data" / "sweep_2026-12-01"
GATE_BATCHES = 2  # timing.verify_batches (default)


@dataclass
class Estimate:
    cells: int = 0
    training_low_s: float = 0.0
    training_high_s: float = 0.0
    prune_s: float = 0.0
    measure_s: float = 0.0

    @property
    def low_s(self) -> float:
        return self.training_low_s + self.prune_s + self.measure_s

    @property
    def high_s(self) -> float:
        return self.training_high_s + self.prune_s + self.measure_s


def sweep_costs() -> dict[tuple[str, str], tuple[float, float]]:
    """(model, runtime) -> (setup seconds per session, batch-32 latency in s) from the 2026-12-01 sweep's
    ``tsbench bench`` files (Intel Xeon, random weights): each call's duration minus its timed and gated calls,
    shared evenly by its sessions (dense + pruned per runtime); latency the median of the dense sessions."""
    setups: dict[tuple[str, str], list[float]] = {}
    latency: dict[tuple[str, str], list[float]] = {}
    for path in sorted(SWEEP.glob("*.json")):
        data = json.loads(path.read_text())
        if "job" not in data or not data.get("duration_s"):
            continue
        kw = data["bench_kwargs"]
        calls = kw["warmup"] + kw["repeats"] + GATE_BATCHES
        rows = [r for r in data["rows"] if r.get("status") == "ok" and r.get("dense_ms") and r.get("pruned_ms")]
        if not rows:
            continue
        timed = sum(calls * (r["dense_ms"] + r["pruned_ms"]) / 1000 for r in rows)
        per_session = max(data["duration_s"] - timed, 0.0) / (2 * len(rows))
        for r in rows:
            setups.setdefault((r["model"], r["runtime"]), []).append(per_session)
            latency.setdefault((r["model"], r["runtime"]), []).append(r["dense_ms"] / 1000)
    return {k: (max(v), sorted(latency[k])[len(latency[k]) // 2]) for k, v in setups.items()}


def estimate(cells: list[Cell], costs: dict[tuple[str, str], tuple[float, float]]) -> Estimate:
    """The chunk of ``cells`` (one model)."""
    out = Estimate(cells=len(cells))
    if not cells:
        return out
    model = cells[0].prune.train.model
    epoch = EPOCH_S[model]
    if any(c.is_reference for c in cells):
        training = cells[0].prune.train.training
        out.training_low_s += min(4, training.epochs) * epoch
        out.training_high_s += training.epochs * epoch
    for job in {c.prune.key: c.prune for c in cells if c.prune.pruner == DENSE and c.prune.fine_tune}.values():
        out.training_low_s += job.fine_tune.epochs * epoch  # a dense control (issue #23)
        out.training_high_s += job.fine_tune.epochs * epoch
        out.prune_s += TEST_BATCHES * EAGER_MS[model] / 1000
    for job in {c.prune.key: c.prune for c in cells if c.prune.pruner != DENSE}.values():
        out.prune_s += TEST_BATCHES * EAGER_MS[model] / 1000
        epochs = job.fine_tune.epochs if job.fine_tune else 0
        if job.pruner == "gradual-magnitude":
            gradual = int(job.pruner_params.epochs)
            out.training_low_s += gradual * epoch
            out.training_high_s += (gradual + int(job.pruner_params.final_epochs)) * epoch
        out.training_low_s += epochs * epoch
        out.training_high_s += epochs * epoch
    for cell in cells:
        runtime = cell.runtime if (model, cell.runtime) in costs else "onnxruntime"
        setup, latency = costs.get((model, runtime), (0.0, 0.0))
        timing = cell.timing
        session = (setup + (timing.warmup + timing.verify_batches) * latency
                   + max(timing.repeats * latency, timing.min_time_s))  # batch 1 priced as batch 32: an upper bound
        out.measure_s += session if cell.is_reference else 2 * session
        if cell.quantize is not None or timing.accuracy_at(cell.batch_size):  # the runtime's own test accuracy
            out.measure_s += TEST_BATCHES * latency  # at batch 32; a batch-1 pass would be ~2785 calls
    return out


def chunks() -> list[tuple[str, str, dict[str, set[str]]]]:
    """(label, spec file, --only selection) in the order sessions should run them."""
    out: list[tuple[str, str, dict[str, set[str]]]] = [
        ("dlinear, 3 seeds", "etth1_dlinear.json", {}),
        ("itransformer, 3 seeds", "etth1_itransformer.json", {}),
    ]
    out += [(f"patchtst seed {s}", "etth1_patchtst.json", {"seed": {s}}) for s in SEEDS]
    large = [("transformer", "2021"), ("informer", "2021"), ("fedformer", "2021"), ("autoformer", "2021"),
             ("crossformer", "2021"), ("transformer", "2022"), ("transformer", "2023")]
    parts = [("dense", {"pruner": {"dense"}, "fine_tune": {"none"}}),
             ("dense control", {"pruner": {"dense"}, "fine_tune": {"1"}}),
             ("magnitude", {"pruner": {"magnitude"}}), ("structured", {"pruner": {"structured"}}),
             ("gradual+nm", {"pruner": {"gradual-magnitude", "nm"}})]
    # Crossformer's epochs are the longest: its pruned chunks split further (one-shot / each fine-tuned density)
    finer = [parts[0], parts[1],
             ("magnitude one-shot", {"pruner": {"magnitude"}, "fine_tune": {"none"}}),
             *((f"magnitude fine-tuned {s}", {"pruner": {"magnitude"}, "fine_tune": {"1"}, "sparsity": {s}})
               for s in ("0.5", "0.8", "0.9")),
             ("structured one-shot", {"pruner": {"structured"}, "fine_tune": {"none"}}),
             ("structured fine-tuned", {"pruner": {"structured"}, "fine_tune": {"1"}}),
             ("gradual", {"pruner": {"gradual-magnitude"}}), ("nm", {"pruner": {"nm"}})]
    for model, seed in large:
        out += [(f"{model} seed {seed} {name}", f"etth1_{model}.json", {"seed": {seed}, **only})
                for name, only in (finer if model == "crossformer" else parts)]
    return out


def only_args(selection: dict[str, set[str]]) -> str:
    return " ".join(f"--only {k}={','.join(sorted(v))}" for k, v in selection.items())


def main(argv: list[str]) -> int:
    registry = load_plugins()
    costs = sweep_costs()
    specs = {}
    rows = []
    for label, filename, selection in chunks():
        if filename not in specs:
            specs[filename] = expand(load_spec(HERE / filename, registry), registry)
        est = estimate(select(specs[filename], selection), costs)
        rows.append({"chunk": label, "command": f"specs/study/{filename} {only_args(selection)}".strip(),
                     "cells": est.cells, "low_h": est.low_s / 3600, "high_h": est.high_s / 3600,
                     "training_h": [est.training_low_s / 3600, est.training_high_s / 3600],
                     "prune_h": est.prune_s / 3600, "measure_h": est.measure_s / 3600})
    if "--json" in argv:
        print(json.dumps(rows, indent=1))
        return 0
    print("| # | chunk | `tsbench run` arguments | cells | training + fine-tuning h | pruning + test eval h "
          "| measuring + runtime accuracy h | **total h (low–high)** |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        low, high = r["training_h"]
        print(f"| {i} | {r['chunk']} | `{r['command']}` | {r['cells']} | {low:.2f}–{high:.2f} | {r['prune_h']:.2f} "
              f"| {r['measure_h']:.2f} | **{r['low_h']:.2f}–{r['high_h']:.2f}** |")

    def total(name: str) -> float:
        return sum(r[name] for r in rows)

    print(f"| | **total** | | **{total('cells')}** | | | | **{total('low_h'):.1f}–{total('high_h'):.1f}** |")
    print("\nPer model and seed (sum of its chunks; chunks of several seeds divided by their seeds), hours:\n")
    print("| model | seeds in the specs | per seed (low–high) | all its seeds (low–high) |")
    print("|---|---|---|---|")
    for filename in dict.fromkeys(r["command"].split()[0] for r in rows):
        mine = [r for r in rows if r["command"].split()[0] == filename]
        seeds = len({c.prune.train.seed for c in specs[Path(filename).name]})
        low, high = sum(r["low_h"] for r in mine), sum(r["high_h"] for r in mine)
        model = Path(filename).stem.removeprefix("etth1_")
        print(f"| {model} | {seeds} | {low / seeds:.2f}–{high / seeds:.2f} | {low:.2f}–{high:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
