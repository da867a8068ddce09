"""NM_DISABLE_ANALYTICS set but empty still ends with the Neural Magic stack's telemetry off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tsbench_testing import REPO

PROBE = """
import os, sys
if sys.argv[1] == "with-tsbench":
    import tsbench_core
print(repr(os.environ.get("NM_DISABLE_ANALYTICS")))
try:
    import sparsezoo.analytics as analytics
except ImportError:
    print("no-sparsezoo")
else:
    analytics.is_gdpr_country = lambda: False  # never ask the network; only the variable may disable it
    print(bool(analytics.analytics_disabled()))
"""


def probe(value: str | None, tsbench: bool = True) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NM_DISABLE_ANALYTICS"}
    if value is not None:
        env["NM_DISABLE_ANALYTICS"] = value
    env["PYTHONPATH"] = str(REPO)
    mode = "with-tsbench" if tsbench else "alone"
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()  # the variable as a repr: never an empty word


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_or_empty_variable_disables_telemetry(value):
    variable, disabled = probe(value)
    assert variable == "'1'"
    if disabled == "no-sparsezoo":
        pytest.skip("sparsezoo is not installed: its own check cannot be asked")
    assert disabled == "True"


def test_an_explicit_value_is_kept():
    assert probe("yes")[0] == "'yes'"


def test_without_tsbench_an_empty_variable_leaves_sparsezoo_reporting():
    """The independent source: SparseZoo's own check does not count an empty variable as disabling."""
    variable, disabled = probe("", tsbench=False)
    if disabled == "no-sparsezoo":
        pytest.skip("sparsezoo is not installed: its own check cannot be asked")
    assert disabled == "False"
