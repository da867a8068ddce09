"""pytest-benchmark JSON files (``pytest --benchmark-json``) read for the report, beside the store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsbench_core.errors import UserError
from tsbench_core.report.tables import Table


@dataclass
class BenchEntry:
    """One benchmark of one file; times in milliseconds (pytest-benchmark stores seconds)."""

    source: str  # the file's label
    name: str
    fullname: str
    group: str | None
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    rounds: int
    extra_info: dict[str, Any]


def load_benchmark_json(path: Path) -> list[BenchEntry]:
    """Every benchmark of a pytest-benchmark JSON file; ``UserError`` naming the file when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such pytest-benchmark JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UserError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list); "
                        "write one with `pytest --benchmark-json FILE`")
    label = _label(path, doc)
    entries = []
    for i, bench in enumerate(doc["benchmarks"]):
        try:
            stats = bench["stats"]
            entries.append(BenchEntry(
                source=label, name=str(bench["name"]), fullname=str(bench.get("fullname") or bench["name"]),
                group=bench.get("group"), median_ms=1e3 * float(stats["median"]), q1_ms=1e3 * float(stats["q1"]),
                q3_ms=1e3 * float(stats["q3"]), min_ms=1e3 * float(stats["min"]), rounds=int(stats["rounds"]),
                extra_info=dict(bench.get("extra_info") or {}),
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: benchmarks[{i}] lacks pytest-benchmark stats ({exc})") from None
    return entries


def _label(path: Path, doc: dict[str, Any]) -> str:
    """File name plus when and where it was measured, to tell runs and machines apart in legends."""
    machine = (doc.get("machine_info") or {}).get("node")
    when = str(doc.get("datetime") or "")[:16].replace("T", " ")
    details = ", ".join(x for x in (machine, when) if x)
    return f"{path.name} ({details})" if details else path.name


def benchmark_table(entries: list[BenchEntry], store_rows: list[dict[str, Any]]) -> Table:
    """Each benchmark's median (and IQR), beside the store's median for the same cell when it has it."""
    by_key = {r["cell_key"]: r for r in store_rows if r.get("cell_key")}
    body = []
    for e in entries:
        stored = by_key.get(e.extra_info.get("cell_key", ""))
        store_ms = stored.get("latency_ms_median") if stored else None
        body.append([e.source, e.name, f"{e.median_ms:.3f}", f"{e.q1_ms:.3f}–{e.q3_ms:.3f}", str(e.rounds),
                     "–" if store_ms is None else f"{store_ms:.3f}"])
    headers = ["file", "benchmark", "median ms", "IQR ms", "rounds", "store median ms"]
    return Table("pytest-benchmark results", headers, body, [False, False, True, True, True, True])
