"""``tsbench dump``: a store's runs and rows as deterministic JSON lines, to commit and merge back (``dump.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tsbench_core.commands.common import EXIT_OK
from tsbench_core.store import DEFAULT_STORE

NAME = "dump"
SUMMARY = "write a store's runs and rows as lossless JSON lines (for git); `tsbench merge` reads them back"
EXAMPLES = (
    "tsbench dump --store $S/results.db --out docs/study/chunks/transformer.jsonl.gz",
    "tsbench merge docs/study/chunks/*.jsonl --into all.db    # the store rebuilt from the dumps",
    "tsbench dump --spec quickstart | grep '\"table\": \"run\"'",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=str(DEFAULT_STORE), metavar="FILE", help="SQLite results file (read-only)")
    parser.add_argument("--spec", action="extend", nargs="+", metavar="NAME",
                        help="only these specs' rows and runs (the spec's name, not its file); default: all")
    parser.add_argument("--out", metavar="FILE",
                        help="write it here atomically (folder created; gzip if FILE ends in .gz); default: stdout")


def run(args: argparse.Namespace) -> int:
    from tsbench_core.dump import dump_text, write_dump

    if args.out:
        write_dump(Path(args.store), Path(args.out), args.spec)
    else:
        sys.stdout.write(dump_text(Path(args.store), args.spec))
    return EXIT_OK
