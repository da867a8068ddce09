"""``tsbench new-plugin``: write a ready third-party plugin package (pyproject, one plugin, its test, a README).

The package's files are templates next to this module (``templates/<kind>/`` and ``templates/common/``), filled
with ``string.Template`` (``$name`` placeholders), so that each is readable as the file it becomes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from tsbench_core.errors import UserError

KINDS = ("model", "dataset", "pruner", "runtime")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Names:
    """The names one plugin name gives a package: ``demo-model`` → ``tsbench-demo-model``,
    ``tsbench_demo_model``, ``DemoModel``."""

    plugin: str
    kind: str

    @property
    def distribution(self) -> str:
        return f"tsbench-{self.plugin}"

    @property
    def module(self) -> str:
        return self.distribution.replace("-", "_")

    @property
    def camel(self) -> str:
        return "".join(part.capitalize() for part in self.plugin.split("-"))

    def substitutions(self) -> dict[str, str]:
        return {"name": self.plugin, "kind": self.kind, "distribution": self.distribution, "module": self.module,
                "Camel": self.camel, "hook": f"tsbench_register_{self.kind}s"}


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise UserError(f"new-plugin {name!r}: a plugin name is lower-case letters and digits in words joined by "
                        "'-', starting with a letter (e.g. 'demo-model')")


def _templates(kind: str) -> list[tuple[str, str]]:
    """(relative path, template text) of every file of a package of ``kind``; ``MODULE`` in a path is the
    package's import name, a ``.tmpl`` suffix is dropped."""
    root = resources.files(__package__) / "templates"
    out: list[tuple[str, str]] = []
    for folder in (root / "common", root / kind):
        stack = [(folder, "")]
        while stack:
            here, prefix = stack.pop()
            for entry in sorted(here.iterdir(), key=lambda e: e.name):
                rel = f"{prefix}{entry.name}"
                if entry.is_dir():
                    stack.append((entry, f"{rel}/"))
                elif entry.name.endswith(".tmpl"):
                    out.append((rel.removesuffix(".tmpl"), entry.read_text()))
    return out


def write_package(name: str, kind: str, parent: Path) -> Path:
    """Write ``parent/tsbench-<name>/`` and return it; nothing is written if that folder exists."""
    check_name(name)
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: one of {', '.join(KINDS)}")
    names = Names(name, kind)
    target = parent / names.distribution
    if target.exists():
        raise UserError(f"{target} already exists; choose another name or --out folder (nothing was written)")
    values = names.substitutions()
    files = [(rel.replace("MODULE", names.module), Template(text).substitute(values))
             for rel, text in _templates(kind)]
    for rel, text in files:
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return target
