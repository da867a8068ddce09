"""Which modules of the host import a plugin package: the host knows kinds, not instances (DESIGN.md)."""

from __future__ import annotations

import ast

from tsbench_testing import REPO

# Until quantizers are a plugin kind (issue #17 item 4), the INT8 path of the measure step and the QAT artifact
# step still call sparse_runtime's quantization directly; no other module of the host may import a plugin.
INT8_PATH = {"tsbench_core/steps/measure.py", "tsbench_core/pipeline.py"}
PLUGIN_PACKAGES = ("sparse_runtime", "plugins")


def _imported(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_host_module_imports_a_plugin_package_beyond_the_int8_path() -> None:
    importing = {}
    for path in sorted((REPO / "tsbench_core").rglob("*.py")):
        plugins = {n for n in _imported(path) if n.split(".")[0] in PLUGIN_PACKAGES}
        if plugins:
            importing[str(path.relative_to(REPO))] = plugins
    assert set(importing) <= INT8_PATH, importing
    for modules in importing.values():  # and there only the quantization modules
        assert modules <= {"sparse_runtime.export", "sparse_runtime.quantize", "sparse_runtime.qat"}, modules
