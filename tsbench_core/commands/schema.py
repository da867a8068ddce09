"""``tsbench schema``: the JSON Schema of spec files, with every installed plugin's params."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tsbench_core.commands.common import EXIT_OK, registry

NAME = "schema"
SUMMARY = "print the JSON Schema of specs, with every plugin's params"
EXAMPLES = (
    "tsbench schema > spec.schema.json     # for editors that validate JSON against a schema",
    "tsbench schema --out spec.schema.json",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", help="write the schema to this file instead of stdout")


def run(args: argparse.Namespace) -> int:
    from tsbench_core.spec import spec_json_schema

    text = json.dumps(spec_json_schema(registry()), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return EXIT_OK
