"""What the subcommands share: exit codes, the help formatter, consoles that cannot lose text, small helpers.

Consoles are made with rich markup *off*: a message, a table cell or a plugin's reason is printed as the text it
is, so bracketed text such as ``[nm_ort …]`` cannot vanish; styling goes through :func:`styled` instead.
Colour follows rich's rules: none when the stream is not a terminal or when ``NO_COLOR`` is set.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from rich_argparse import RawDescriptionRichHelpFormatter

from tsbench_core.errors import UserError

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE = 0, 1, 2


class HelpFormatter(RawDescriptionRichHelpFormatter):
    """Rich help; epilogs (the examples) kept as written; every default that is a value is shown."""

    help_markup = False  # help texts are plain text: ``[,V2]`` in a help string stays visible
    text_markup = False

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def examples(*lines: str) -> str:
    """An epilog of example command lines (each ``command  # comment``)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False)
    if not out.is_terminal:  # logs and pipes: do not squeeze the results table into 80 columns
        out.width = max(out.width, 180)
    return out


def styled(*parts: str | tuple[str, str]) -> Any:
    """Text built from plain strings and ``(text, style)`` pairs; no part is read as markup."""
    from rich.text import Text

    return Text.assemble(*parts)


def registry(quiet: bool = False) -> Any:
    """The plugin registry; a plugin that failed to load is a warning on stderr (unless ``quiet``)."""
    from tsbench_core.registry import load_plugins

    loaded = load_plugins()
    for err in [] if quiet else loaded.load_errors:
        console(stderr=True).print(styled(("warning:", "yellow"), f" plugin {err.entry_point} from {err.distribution}"
                                          f" failed to load and was skipped: {err.error}"))
    return loaded


def load_specs(paths: Sequence[str], plugins: Any) -> list[Any]:
    """Validate every file before anything runs; collect the problems of all files."""
    from tsbench_core.spec import SpecProblems, load_spec

    specs, problems = [], []
    for path in paths:
        try:
            specs.append(load_spec(path, plugins))
        except SpecProblems as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("\n".join(problems))
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(f"several spec files share the name {', '.join(duplicated)}; spec names must be unique")
    return specs


def json_arg(raw: str | None, flag: str) -> dict[str, Any]:
    """A JSON-object option value (``--model-params '{"d_model": 64}'``), ``{}`` when not given."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag}: not valid JSON ({exc.msg}): {raw!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag}: expected a JSON object like '{{\"d_model\": 64}}', got {raw!r}")
    return value


def print_json(payload: Any) -> None:
    """Machine-readable output: one JSON document on stdout."""
    import sys

    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
