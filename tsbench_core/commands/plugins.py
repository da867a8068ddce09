"""``tsbench plugins``: every installed plugin, where it comes from, and whether it can run here."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from tsbench_core.commands.common import EXIT_OK, console, print_json, registry, styled

NAME = "plugins"
SUMMARY = "list plugins, where they come from and whether they are available"
EXAMPLES = (
    "tsbench plugins                                  # a table: kind, name, distribution, available, description",
    "tsbench plugins --json                           # the same for scripts, with the load errors",
    "TSBENCH_DISABLE_PLUGIN_AUTOLOAD=1 tsbench plugins   # built-ins only",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help='print {"plugins": [...], "load_errors": [...]} as JSON instead of a table')


def run(args: argparse.Namespace) -> int:
    plugins = registry()
    records = plugins.all_records()
    if args.json:
        listing: list[dict[str, Any]] = []
        for rec in records:
            availability = rec.availability()
            listing.append({"kind": rec.kind, "name": rec.name, "description": rec.plugin.description,
                            "distribution": rec.distribution, "version": rec.version, "source": rec.source,
                            "available": availability.available, "reason": availability.reason})
        print_json({"plugins": listing, "load_errors": [asdict(e) for e in plugins.load_errors]})
        return EXIT_OK
    from rich.table import Table

    table = Table(title="tsbench plugins")
    for column in ("kind", "name", "distribution", "available", "description"):
        table.add_column(column, overflow="fold")
    for rec in records:
        availability = rec.availability()
        status = "yes" if availability.available else styled(("no", "red"), f": {availability.reason}")
        table.add_row(rec.kind, rec.name, f"{rec.distribution} {rec.version}".strip(), status, rec.plugin.description)
    out = console()
    out.print(table)
    for err in plugins.load_errors:
        out.print(styled(("failed to load", "red"), f" {err.entry_point} ({err.distribution}): {err.error}"))
    return EXIT_OK
