"""A separately installed third-party package shows up in `tsbench plugins` and runs in a spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tsbench_testing import REPO

EXAMPLE = REPO / "examples" / "tsbench-plugin-example"


def test_example_package_installs_lists_and_runs(tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(EXAMPLE)],
        check=True, capture_output=True, timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "NM_DISABLE_ANALYTICS": "1"}
    env.pop("TSBENCH_DISABLE_PLUGIN_AUTOLOAD", None)
    env.pop("TSBENCH_PLUGINS", None)

    def tsbench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tsbench_core.cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)

    listing = json.loads(tsbench("plugins", "--json").stdout)
    ours = {(p["kind"], p["name"]): p for p in listing["plugins"] if p["distribution"] == "tsbench-plugin-example"}
    assert set(ours) == {("model", "seasonal-linear"), ("dataset", "random-walk")}
    assert ours[("model", "seasonal-linear")]["version"] == "0.1.0"

    done = tsbench("run", str(EXAMPLE / "spec.json"), "--store", str(tmp_path / "r.db"), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "example-plugin: 2 cells — 0 cached, 2 run, 2 ok" in done.stdout

    env["TSBENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    names = {p["name"] for p in json.loads(tsbench("plugins", "--json").stdout)["plugins"]}
    assert "seasonal-linear" not in names and "dlinear" in names
