"""The ``tsbench`` command line: run | validate | schema | plugins | results | bench | report | dump | merge |
new-plugin.

Each subcommand lives in ``tsbench_core/commands/`` with its options (see that package's docstring for how to
add one). User mistakes (bad spec, unknown plugin, missing data, a bad option) print one clear message per problem
and exit 2, without a traceback. A run whose cells failed exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tsbench_core.commands import COMMANDS
from tsbench_core.commands.common import (
    EXIT_FAILED_CELLS,
    EXIT_OK,
    EXIT_USAGE,
    HelpFormatter,
    console,
    examples,
    styled,
)
from tsbench_core.errors import PluginError, TsbenchError, UserError

__all__ = ["EXIT_FAILED_CELLS", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

PRECEDENCE = ("settings: a command-line option wins over its environment variable (TSBENCH_DATA_DIR, ...), "
              "which wins over the spec, which wins over the default")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("tsbench")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; with ``only``, only that subcommand's options are configured (the others
    are listed with their summary), so that ``tsbench results`` does not import what ``bench`` needs."""
    parser = argparse.ArgumentParser(
        prog="tsbench", description="Benchmark pruned Transformer time-series forecasters: specs in, results out.",
        formatter_class=HelpFormatter,
        epilog=examples("tsbench plugins", "tsbench validate specs/*.json", "tsbench run specs/quickstart.json",
                        "tsbench results --format markdown", "tsbench new-plugin demo-model --kind model",
                        "tsbench COMMAND --help                    # the options and examples of a command")
        + f"\n\n{PRECEDENCE}.\nexit codes: 0 ok, 1 some cells failed (merge: conflicting cells), 2 a mistake in the "
        "input (message on stderr).",
    )
    parser.add_argument("--version", action="version", version=f"tsbench {version()}",
                        help="print the installed tsbench version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.SUMMARY, description=command.SUMMARY,
                           epilog=examples(*command.EXAMPLES), formatter_class=HelpFormatter)
        if only is None or only == command.NAME:
            command.configure(p)
        p.set_defaults(func=command.run)
    return parser


def _invoked(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word: the top level has no options taking a value); "" when
    none is (``tsbench --version``): then no subcommand's options are configured."""
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(only=_invoked(argv)).parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        console(stderr=True).print(styled(("error:", "red"), f" {exc}"))
        return EXIT_USAGE
    except PluginError as exc:
        console(stderr=True).print(styled(("plugin error:", "red"), f" {exc}"))
        return EXIT_USAGE
    except TsbenchError as exc:  # a failure outside any cell (e.g. of an ad-hoc bench): one line, no traceback
        console(stderr=True).print(styled(("error:", "red"), f" {exc}"))
        return EXIT_FAILED_CELLS
    except KeyboardInterrupt:
        print("interrupted; stored cells are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
