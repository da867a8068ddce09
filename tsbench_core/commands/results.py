"""``tsbench results``: print the stored rows as a table, CSV, JSON lines or Markdown."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tsbench_core.commands.common import EXIT_OK, console
from tsbench_core.errors import UserError
from tsbench_core.store import DEFAULT_STORE

NAME = "results"
SUMMARY = "print stored results"
EXAMPLES = (
    "tsbench results                                  # a table of every stored cell",
    "tsbench results --format markdown --spec quickstart",
    "tsbench results --format jsonl | jq .mse         # one JSON object per cell, every column",
    "tsbench results --failed                         # failed cells: error and traceback",
    "tsbench results --format csv --no-samples > results.csv   # every column, without raw timing samples",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=str(DEFAULT_STORE), metavar="FILE", help="SQLite results file")
    parser.add_argument("--spec", metavar="NAME", help="only this spec's rows (the spec's name, not its file)")
    parser.add_argument("--format", choices=("table", "csv", "jsonl", "markdown"), default="table",
                        help="table: one line per setting over its seeds (mean ± sd, n, ΔMSE vs its dense "
                             "reference), for people; markdown: the same for documents; csv/jsonl: every column of "
                             "every row (one per seed), for programs")
    parser.add_argument("--no-samples", action="store_true",
                        help="csv/jsonl: leave the raw per-call latencies (samples_ms) out of runtime_info; their "
                             "median, IQR, p10/p90 and outlier counts stay (the store and `tsbench dump` keep them)")
    parser.add_argument("--failed", action="store_true",
                        help="only the failed cells; as a table: each one's error and traceback (the details "
                             "column); rerun them with `tsbench run --retry-failed`")


def run(args: argparse.Namespace) -> int:
    from tsbench_core.report.machines import with_cpu
    from tsbench_core.store import Store
    from tsbench_core.tables import rich_table, to_csv, to_jsonl, to_markdown, without_samples

    if not Path(args.store).exists():
        raise UserError(f"no results store at {args.store}; run a spec first or pass --store PATH")
    with Store(args.store) as store:
        if args.spec and args.spec not in store.spec_names():
            known = ", ".join(store.spec_names()) or "none"
            raise UserError(f"--spec {args.spec!r}: no rows for that spec in {args.store} (stored specs: {known})")
        rows = with_cpu(store.rows(args.spec), store.runs())
    if args.no_samples:
        rows = [without_samples(r) for r in rows]
    if args.failed:
        rows = [r for r in rows if r.get("status") == "failed"]
        if args.format == "table":
            sys.stdout.write(failure_report(rows))
            return EXIT_OK
    if args.format == "table":
        console().print(rich_table(rows, title=f"{len(rows)} cells in {args.store}"))
    else:
        writer: Callable[[list[dict[str, Any]]], str] = {"csv": to_csv, "jsonl": to_jsonl,
                                                          "markdown": to_markdown}[args.format]
        sys.stdout.write(writer(rows))
    return EXIT_OK


def failure_report(rows: list[dict[str, Any]]) -> str:
    """Each failed cell: what it is, its error, and the traceback stored with it."""
    if not rows:
        return "no failed cells\n"
    parts = []
    for r in rows:
        label = " ".join(str(r.get(k)) for k in ("spec_name", "dataset", "pred_len", "model", "pruner",
                                                 "target_sparsity", "runtime", "batch_size"))
        details = (r.get("details") or "(no traceback stored: a row from before tsbench kept them)").rstrip()
        parts.append(f"{r['cell_key']}  {label}\n  error: {r.get('error')}\n"
                     + "".join(f"    {line}\n" for line in details.splitlines()))
    return "\n".join(parts) + f"\n{len(rows)} failed cells; rerun them with: tsbench run SPEC --retry-failed\n"
