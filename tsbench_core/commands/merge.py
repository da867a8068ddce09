"""``tsbench merge``: join the rows and runs of other stores or dumps into one store (see ``tsbench_core/merge.py``)."""

from __future__ import annotations

import argparse

from tsbench_core.commands.common import EXIT_OK, console, print_json, styled

NAME = "merge"
SUMMARY = "merge stores or dumps into one store (idempotent; conflicting cells are reported, nothing overwritten)"
EXAMPLES = (
    "tsbench merge node1/results.db node2/results.db --into all/results.db",
    "tsbench merge day2.db --into all.db            # again later: rows already there are skipped",
    "tsbench merge docs/study/chunks/*.jsonl --into all.db   # a store rebuilt from committed dumps",
)
EXIT_CONFLICTS = 1


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stores", nargs="+", metavar="SOURCE",
                        help="results stores (SQLite, opened read-only) or `tsbench dump` files (JSON lines) to merge")
    parser.add_argument("--into", required=True, metavar="FILE",
                        help="the store to merge into (created if missing); with conflicts nothing is written")
    parser.add_argument("--json", action="store_true", help="print the counts and conflicts as one JSON object")


def run(args: argparse.Namespace) -> int:
    from tsbench_core.merge import merge_stores

    result = merge_stores(args.stores, args.into)
    if args.json:
        print_json({"into": str(result.into), "added": result.added, "identical": result.identical,
                    "replaced_failed": result.replaced_failed, "not_taken": result.not_taken,
                    "runs_added": result.runs_added,
                    "conflicts": [{"store": str(c.source), "cell_key": c.cell_key, "cell": c.label,
                                   "columns": [d[0] for d in c.differences]} for c in result.conflicts]})
    elif result.conflicts:
        err = console(stderr=True)
        for conflict in result.conflicts:
            err.print(styled(("conflict:", "red"), f" {conflict.describe()}"))
        err.print(styled(("error:", "red"), f" {result.summary()}"))
    else:
        console().print(result.summary())
    return EXIT_CONFLICTS if result.conflicts else EXIT_OK
