"""A small real run shared by the report and pytest-plugin tests: trained, pruned, verified and timed once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from report_helpers import SPEC_NAME, report_spec

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


@pytest.fixture(scope="session")
def report_registry():
    from tsbench_core.registry import load_plugins

    return load_plugins()


@pytest.fixture(scope="session")
def report_store(tmp_path_factory: pytest.TempPathFactory, report_registry) -> Path:
    """The results database of one real run of ``report_spec()`` (checkpoints in its folder)."""
    from tsbench_core.runner import run
    from tsbench_core.spec import parse_spec, validate_against

    spec = parse_spec(json.dumps(report_spec()), "report-tiny.json")
    validate_against(spec, report_registry, "report-tiny.json")
    path = tmp_path_factory.mktemp("report-store") / "results.db"
    summary = run(spec, path, registry=report_registry)
    assert summary.failed == 0, summary.failures
    return path


@pytest.fixture(scope="session")
def stored_rows(report_store: Path) -> list[dict[str, Any]]:
    from tsbench_core.store import Store

    with Store(report_store) as store:
        return store.rows(SPEC_NAME)
