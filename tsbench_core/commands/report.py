"""``tsbench report``: write report.md/report.html, the plots and results.csv from a store."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsbench_core.commands.common import EXIT_OK, print_json
from tsbench_core.errors import UserError
from tsbench_core.store import DEFAULT_STORE

NAME = "report"
SUMMARY = "write report.md/html, plots and results.csv"
EXAMPLES = (
    "tsbench report --out report/                      # report.md, report.html, plots, results.csv",
    "tsbench report --out report/ --spec quickstart --benchmark-json bench.json",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=str(DEFAULT_STORE), metavar="FILE", help="SQLite results file")
    parser.add_argument("--spec", metavar="NAME", help="only this spec (the spec's name); default: every stored spec")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--benchmark-json", action="append", metavar="FILE",
                        help="pytest-benchmark JSON file to plot beside the store; repeat for several")
    parser.add_argument("--no-samples", action="store_true",
                        help="results.csv without the raw per-call latencies (as `tsbench results --no-samples`)")
    parser.add_argument("--json", action="store_true", help="print the written files as a JSON list")


def run(args: argparse.Namespace) -> int:
    try:
        from tsbench_core.report import write_report
    except ImportError as exc:
        raise UserError(f"reports need matplotlib: {exc}") from None
    written = write_report(store_path=Path(args.store), spec_name=args.spec, out_dir=Path(args.out),
                           benchmark_json=[Path(p) for p in args.benchmark_json or []], samples=not args.no_samples)
    if args.json:
        print_json([str(path) for path in written])
    else:
        for path in written:
            print(path)
    return EXIT_OK
