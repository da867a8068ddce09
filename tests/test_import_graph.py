"""No module of the host imports a plugin package: the host knows kinds, not instances (DESIGN.md)."""

from __future__ import annotations

import ast

from tsbench_testing import REPO

PLUGIN_PACKAGES = ("sparse_runtime", "plugins")


def _imported(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):  # function-level imports and TYPE_CHECKING blocks count too
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_host_module_imports_a_plugin_package() -> None:
    importing = {}
    for path in sorted((REPO / "tsbench_core").rglob("*.py")):
        plugins = {n for n in _imported(path) if n.split(".")[0] in PLUGIN_PACKAGES}
        if plugins:
            importing[str(path.relative_to(REPO))] = plugins
    assert importing == {}
