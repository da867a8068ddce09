"""``tsbench validate``: check spec files against their schema and the installed plugins, running nothing."""

from __future__ import annotations

import argparse

from tsbench_core.commands.common import EXIT_OK, load_specs, print_json, registry

NAME = "validate"
SUMMARY = "validate spec files; exit 2 with a located problem per line"
EXAMPLES = (
    "tsbench validate specs/*.json          # `file: json.path: message` lines, exit 2 if any",
    "tsbench validate specs/quickstart.json --json",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="spec JSON files; every file's problems are listed")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="print nothing when the specs are valid (exit code only)")
    output.add_argument("--json", action="store_true",
                        help='print [{"path": ..., "name": ...}] for valid specs (problems still go to stderr)')


def run(args: argparse.Namespace) -> int:
    specs = load_specs(args.specs, registry(quiet=args.quiet))
    if args.json:
        print_json([{"path": path, "name": spec.name} for path, spec in zip(args.specs, specs, strict=True)])
    elif not args.quiet:
        for path, spec in zip(args.specs, specs, strict=True):
            print(f"{path}: ok ({spec.name})")
    return EXIT_OK
