"""The ``tsbench`` subcommands, one module each: its options beside its code.

argparse with rich-argparse's formatter, not click or typer: the commands were argparse already, so each one
moved with its options unchanged (same flags, defaults, exit codes), and rich-argparse adds the rich help with
one dependency that needs nothing but rich.

A command module has::

    NAME = "verb"                      # the subcommand
    SUMMARY = "one line for `tsbench --help`"
    EXAMPLES = ("tsbench verb ...  # what it does", ...)   # the epilog of `tsbench verb --help`
    def configure(parser: argparse.ArgumentParser) -> None: ...   # add_argument calls, each with help=
    def run(args: argparse.Namespace) -> int: ...                 # returns the exit code

To add a verb, write ``tsbench_core/commands/<verb>.py`` like that and add the module to ``COMMANDS``; to add a
flag, add an ``add_argument`` (with ``help=``) to that command's ``configure``. Keep module-level imports light
(no torch): every module is imported for every invocation; import heavy things inside ``run`` (or ``configure``:
only the invoked command's parser is configured). Raise ``UserError`` for a user's mistake (exit 2, no traceback).
"""

from __future__ import annotations

from tsbench_core.commands import bench, dump, merge, new_plugin, plugins, report, results, run, schema, validate

COMMANDS = (run, validate, schema, plugins, results, bench, report, dump, merge, new_plugin)
