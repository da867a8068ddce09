"""``tsbench new-plugin``: write a ready third-party plugin package to start from."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsbench_core.commands.common import EXIT_OK, console, print_json, styled

NAME = "new-plugin"
SUMMARY = "write a ready third-party plugin package (pyproject, one plugin, its test, a README)"
EXAMPLES = (
    "tsbench new-plugin demo-model                     # ./tsbench-demo-model, a model plugin",
    "tsbench new-plugin my-sine --kind dataset --out ~/src",
    "pip install ./tsbench-demo-model && tsbench plugins && pytest tsbench-demo-model/tests",
)


def configure(parser: argparse.ArgumentParser) -> None:
    from tsbench_core.scaffold import KINDS

    parser.add_argument("name", metavar="NAME",
                        help="the plugin's name, as specs will refer to it (lower case, words joined by '-'); the "
                             "package is tsbench-NAME, its module tsbench_NAME")
    parser.add_argument("--kind", choices=KINDS, default="model", help="what the plugin provides")
    parser.add_argument("--out", default=".", metavar="DIR", help="folder in which tsbench-NAME/ is created")
    parser.add_argument("--json", action="store_true", help='print {"path": ..., "files": [...]} as JSON')


def run(args: argparse.Namespace) -> int:
    from tsbench_core.scaffold import write_package

    target = write_package(args.name, args.kind, Path(args.out))
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    if args.json:
        print_json({"path": str(target), "kind": args.kind, "name": args.name, "files": files})
        return EXIT_OK
    out = console()
    out.print(styled("wrote ", (str(target), "bold"), f" ({args.kind} plugin {args.name!r}): {', '.join(files)}"))
    out.print(f"next: pip install {target}   then: tsbench plugins   and: pytest {target / 'tests'}")
    return EXIT_OK
