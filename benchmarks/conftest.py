"""Shared set-up of the project's benchmarks (not part of ``make test``).

- ``pytest benchmarks/`` collects the ``bench_*.py`` files (the test suite's ``testpaths`` never reaches here).
- The tsbench pytest plugin is active, so ``--tsbench-spec benchmarks/spec_runtimes.json`` adds every timing
  cell of a spec beside the hand-written benchmarks (see README.md in this folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # Until the package's pytest11 entry point is installed, load the plugin from here (only once either way).
    import tsbench_core.pytest_plugin as plugin

    if not pluginmanager.is_registered(plugin):
        pluginmanager.register(plugin, "tsbench")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # Files named on the command line are collected by pytest itself whatever their name.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
