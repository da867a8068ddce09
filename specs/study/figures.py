"""The figures docs/study.md quotes, computed from docs/study/results.csv (``tsbench results --format csv``).

Runs nothing and trains nothing: it reads the CSV, picks each setting's rows (one per seed) and prints mean ± sd
over the seeds with n, per model, as Markdown tables. Print them with
``python specs/study/figures.py [docs/study/results.csv]``.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

Row = dict[str, str]
DEFAULT_CSV = Path(__file__).resolve().parents[2] / "docs" / "study" / "results.csv"
# the one-shot grid's sparsities nearest the fine-tuned ones: 1 - 0.8**3, 1 - 0.8**10, and 0.05 density
ONE_SHOT = ("0.488", "0.892626", "0.95")
BUDGETS_MS = (1.0, 5.0, 20.0, 50.0, 200.0)
ONE_SHOT_GRID = ("0.2", "0.36", "0.488", "0.5904", "0.67232", "0.737856", "0.790285", "0.832228", "0.865782",
                   "0.892626", "0.95")


def load(path: Path) -> list[Row]:
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if r["status"] == "ok"]


def number(text: str) -> float | None:
    return float(text) if text not in ("", None) else None


def mean_sd(values: Iterable[float | None], digits: int = 4, suffix: str = "") -> str:
    """``mean ± sd (n)`` with the sample sd; one value is shown alone with n = 1 (no spread)."""
    found = [v for v in values if v is not None]
    if not found:
        return "–"
    if len(found) == 1:
        return f"{found[0]:.{digits}f}{suffix} (n = 1)"
    return (f"{statistics.mean(found):.{digits}f} ± {statistics.stdev(found):.{digits}f}{suffix}"
            f" (n = {len(found)})")


def pick(rows: list[Row], model: str, *, pruner: str, runtime: str = "torch-eager", batch: str = "32",
         target: str | None = None, fine_tuned: bool = False, int8: bool = False) -> list[Row]:
    """One setting's rows, one per seed."""
    return [r for r in rows if r["model"] == model and r["pruner"] == pruner and r["runtime"] == runtime
            and r["batch_size"] == batch and (target is None or r["target_sparsity"] == target)
            and bool(r["fine_tune"]) == fine_tuned and bool(r["quantize"]) == int8]


def column(rows: list[Row], name: str) -> list[float | None]:
    return [number(r[name]) for r in rows]


def dense_baselines(rows: list[Row], models: list[str]) -> list[str]:
    out = ["| model | test MSE | test MAE | epochs run (best) per seed | rows timed on |", "|---|---|---|---|---|"]
    for model in models:
        dense = sorted(pick(rows, model, pruner="dense"), key=lambda r: r["seed"])
        epochs = [json.loads(r["train_info"] or "{}") for r in dense]
        runs = ", ".join(f"{e.get('epochs_run')} ({e.get('best_epoch', -1) + 1})" for e in epochs)
        cpus = Counter(r.get("cpu_label") or "not in this CSV" for r in rows if r["model"] == model)
        timed_on = "; ".join(f"{label} ({n})" for label, n in cpus.most_common())
        out.append(f"| {model} | {mean_sd(column(dense, 'mse'))} | {mean_sd(column(dense, 'mae'))} | {runs} "
                   f"| {timed_on} |")
    return out


def accuracy_settings() -> list[tuple[str, Callable[[list[Row], str], list[Row]]]]:
    settings: list[tuple[str, Callable[[list[Row], str], list[Row]]]] = [
        ("dense", lambda r, m: pick(r, m, pruner="dense")),
        ("dense control (dense + the FT epoch)", lambda r, m: pick(r, m, pruner="dense", fine_tuned=True)),
    ]
    for target in ("0.5", "0.8", "0.9"):
        settings.append((f"magnitude {float(target):.0%} + FT",
                         lambda r, m, t=target: pick(r, m, pruner="magnitude", target=t, fine_tuned=True)))
    settings += [
        ("gradual magnitude to 90 %", lambda r, m: pick(r, m, pruner="gradual-magnitude")),
        ("magnitude 90 % + FT, INT8 (DeepSparse)",
         lambda r, m: pick(r, m, pruner="magnitude", runtime="deepsparse", target="0.9", fine_tuned=True, int8=True)),
        ("N:M 2:4, no FT", lambda r, m: pick(r, m, pruner="nm")),
    ]
    for target in ONE_SHOT:
        settings.append((f"one-shot magnitude {float(target):.1%}",
                         lambda r, m, t=target: pick(r, m, pruner="magnitude", target=t)))
    for target in ONE_SHOT:
        settings.append((f"structured one-shot {float(target):.1%}",
                         lambda r, m, t=target: pick(r, m, pruner="structured", runtime="onnxruntime", target=t)))
    for target in ("0.5", "0.8"):
        settings.append((f"structured {float(target):.0%} + FT",
                         lambda r, m, t=target: pick(r, m, pruner="structured", runtime="onnxruntime", target=t,
                                                     fine_tuned=True)))
    return settings


def accuracy_table(rows: list[Row], models: list[str]) -> list[str]:
    out = ["| setting (test MSE) | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for label, select in accuracy_settings():
        out.append(f"| {label} | " + " | ".join(mean_sd(column(select(rows, m), "mse")) for m in models) + " |")
    return out


def structured_table(rows: list[Row], model: str) -> list[str]:
    out = [f"| {model}, structured, ONNX Runtime, batch 32 | MAC reduction | paired speedup | speedup / MACs |",
           "|---|---|---|---|"]
    for target in ONE_SHOT_GRID:
        cells = pick(rows, model, pruner="structured", runtime="onnxruntime", target=target)
        # a structured model is physically smaller: its own macs_dense are the pruned MACs, so the reduction
        # is the dense model's MACs (same seed) over the pruned model's
        dense = {r["seed"]: number(r["macs_dense"]) for r in pick(rows, model, pruner="dense")}
        macs = [(dense.get(r["seed"]) or 0) / float(r["macs_effective"]) if r["macs_effective"] else None
                for r in cells]
        speed = column(cells, "speedup_vs_dense")
        per = [s / m for s, m in zip(speed, macs, strict=True) if s is not None and m]
        out.append(f"| {float(target):.1%} | {mean_sd(macs, 2, '×')} | {mean_sd(speed, 2, '×')} | "
                   f"{mean_sd(per, 2)} |")
    return out


def magnitude_table(rows: list[Row], model: str) -> list[str]:
    """The one-shot magnitude curve: test MSE (torch) and the paired speedup on DeepSparse and in torch eager,
    batch 32, per sparsity of the grid."""
    out = [f"| {model}, one-shot magnitude, batch 32 | test MSE | paired speedup, DeepSparse | "
           "paired speedup, torch eager |", "|---|---|---|---|"]
    for target in ONE_SHOT_GRID:
        eager = pick(rows, model, pruner="magnitude", target=target)
        sparse = pick(rows, model, pruner="magnitude", runtime="deepsparse", target=target)
        out.append(f"| {float(target):.1%} | {mean_sd(column(eager, 'mse'))} | "
                   f"{mean_sd(column(sparse, 'speedup_vs_dense'), 2, '×')} | "
                   f"{mean_sd(column(eager, 'speedup_vs_dense'), 2, '×')} |")
    return out


def speed_settings() -> list[tuple[str, dict]]:
    settings = []
    for batch in ("32", "1"):
        settings += [
            (f"magnitude 90 % + FT, DeepSparse, batch {batch}",
             dict(pruner="magnitude", runtime="deepsparse", batch=batch, target="0.9", fine_tuned=True)),
            (f"gradual 90 %, DeepSparse, batch {batch}",
             dict(pruner="gradual-magnitude", runtime="deepsparse", batch=batch)),
            (f"dense control, DeepSparse, batch {batch}",
             dict(pruner="dense", runtime="deepsparse", batch=batch, fine_tuned=True)),
            (f"structured 50 % + FT, ONNX Runtime, batch {batch}",
             dict(pruner="structured", runtime="onnxruntime", batch=batch, target="0.5", fine_tuned=True)),
            (f"structured 80 % + FT, ONNX Runtime, batch {batch}",
             dict(pruner="structured", runtime="onnxruntime", batch=batch, target="0.8", fine_tuned=True)),
            (f"structured 50 % + FT, torch-compile, batch {batch}",
             dict(pruner="structured", runtime="torch-compile", batch=batch, target="0.5", fine_tuned=True)),
        ]
    settings.append(("magnitude 90 % + FT, INT8, DeepSparse, batch 32",
                     dict(pruner="magnitude", runtime="deepsparse", batch="32", target="0.9", fine_tuned=True,
                          int8=True)))
    settings.append(("dense INT8 vs dense fp32, DeepSparse, batch 32",
                     dict(pruner="dense", runtime="deepsparse", batch="32", int8=True)))
    return settings


def speed_table(rows: list[Row], models: list[str]) -> list[str]:
    out = ["| paired speedup vs dense | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for label, how in speed_settings():
        out.append(f"| {label} | " + " | ".join(
            mean_sd(column(pick(rows, m, **how), "speedup_vs_dense"), 3, "×") for m in models) + " |")
    out.append("| dense median latency, ms (batch 32): torch-eager / DeepSparse / ONNX Runtime | " + " | ".join(
        " / ".join(mean_sd(column(pick(rows, m, pruner="dense", runtime=rt), "latency_ms_median"), 2)
                   for rt in ("torch-eager", "deepsparse", "onnxruntime")) for m in models) + " |")
    return out


def setting_label(row: Row) -> str:
    sparsity = float(row["target_sparsity"] or 0)
    parts = [row["model"], row["pruner"] + (f" {sparsity:.1%}" if sparsity else ""),
             "+ FT" if row["fine_tune"] else "", "INT8" if row["quantize"] else "", row["runtime"]]
    return " ".join(p for p in parts if p)


def budget_table(rows: list[Row], budgets_ms: tuple[float, ...] = BUDGETS_MS) -> list[str]:
    """Per latency budget (batch of 32), the setting with the lowest mean test MSE over its seeds among those
    whose every seed's median latency is within the budget; settings are grouped over seeds."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for r in rows:
        if r["batch_size"] == "32" and r["latency_ms_median"]:
            key = (r["model"], r["pruner"], r["target_sparsity"], r["fine_tune"], r["quantize"], r["runtime"],
                   r["variant"])
            groups.setdefault(key, []).append(r)
    out = ["| budget (ms per batch of 32) | best setting | test MSE | median latency, ms | settings within |",
           "|---|---|---|---|---|"]
    for budget in budgets_ms:
        within = [g for g in groups.values() if all(float(r["latency_ms_median"]) <= budget for r in g)]
        if not within:
            out.append(f"| {budget:g} | none | – | – | 0 |")
            continue
        # equal MSE to 6 digits (the same weights on two runtimes): the faster setting wins
        best = min(within, key=lambda g: (round(statistics.mean(float(r["mse"]) for r in g), 6),
                                          statistics.mean(float(r["latency_ms_median"]) for r in g)))
        out.append(f"| {budget:g} | {setting_label(best[0])} | {mean_sd(column(best, 'mse'))} | "
                   f"{mean_sd(column(best, 'latency_ms_median'), 2)} | {len(within)} of {len(groups)} |")
    return out


def main(argv: list[str]) -> int:
    rows = load(Path(argv[0]) if argv else DEFAULT_CSV)
    models = sorted({r["model"] for r in rows})
    blocks = [dense_baselines(rows, models), accuracy_table(rows, models), speed_table(rows, models),
              budget_table(rows)]
    blocks += [structured_table(rows, m) for m in models if pick(rows, m, pruner="structured",
                                                                  runtime="onnxruntime")]
    blocks += [magnitude_table(rows, m) for m in models if pick(rows, m, pruner="magnitude")]
    print("\n\n".join("\n".join(b) for b in blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
