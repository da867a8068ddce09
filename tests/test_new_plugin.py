"""`tsbench new-plugin`: every kind's package installs with pip, is listed by `tsbench plugins`, and its own
test passes against the installed tsbench — in a throw-away venv, never the shared one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from tsbench_core.cli import main
from tsbench_core.scaffold import KINDS

PLUGIN_SWITCHES = ("TSBENCH_DISABLE_PLUGIN_AUTOLOAD", "TSBENCH_PLUGINS", "TSBENCH_BLOCK_PLUGINS")


def _venv(path: Path) -> Path:
    """A venv seeing this interpreter's packages (tsbench, torch, pip, pytest) but installing into its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(path)], check=True,
                   capture_output=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # a venv made from a venv sees the base interpreter's packages; add this one's (with its .pth files)
    shared = sysconfig.get_paths()["purelib"]
    Path(site, "tsbench_shared_env.pth").write_text(f"import site; site.addsitedir({shared!r})\n")
    return python


def test_every_kind_installs_lists_and_passes_its_own_test(tmp_path):
    for kind in KINDS:
        assert main(["new-plugin", f"demo-{kind}", "--kind", kind, "--out", str(tmp_path)]) == 0
    packages = [tmp_path / f"tsbench-demo-{kind}" for kind in KINDS]
    python = _venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in PLUGIN_SWITCHES}
    env["NM_DISABLE_ANALYTICS"] = "1"

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=600)

    installed = call("-m", "pip", "install", "-q", "--no-build-isolation", *map(str, packages))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    venv_site = Path(call("-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    assert sorted(p.name.split("-")[0] for p in venv_site.glob("tsbench_demo_*.dist-info")) == sorted(
        f"tsbench_demo_{kind}" for kind in KINDS)
    assert not list(Path(sysconfig.get_paths()["purelib"]).glob("tsbench_demo_*"))  # the shared env untouched

    listing = json.loads(call("-m", "tsbench_core.cli", "plugins", "--json").stdout)
    ours = {(p["kind"], p["name"]): p["distribution"] for p in listing["plugins"]
            if p["distribution"].startswith("tsbench-demo-")}
    assert ours == {(kind, f"demo-{kind}"): f"tsbench-demo-{kind}" for kind in KINDS}
    assert listing["load_errors"] == []

    validated = call("-m", "tsbench_core.cli", "validate", *(str(p / "spec.json") for p in packages))
    assert validated.returncode == 0, validated.stderr
    tested = call("-m", "pytest", "-q", "-p", "no:cacheprovider", *(str(p / "tests") for p in packages))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "9 passed" in tested.stdout  # 3 model + 3 dataset + 2 pruner + 1 runtime tests


def test_bad_name_or_existing_folder_is_exit_2_and_writes_nothing(tmp_path, capsys):
    assert main(["new-plugin", "Demo_Model", "--out", str(tmp_path)]) == 2
    assert "lower-case letters and digits" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["new-plugin", "demo", "--kind", "pruner", "--out", str(tmp_path), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["path"] == str(tmp_path / "tsbench-demo")
    assert "tests/test_tsbench_demo.py" in written["files"] and "tsbench_demo/__init__.py" in written["files"]
    before = (tmp_path / "tsbench-demo" / "pyproject.toml").read_text()
    assert main(["new-plugin", "demo", "--kind", "model", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "tsbench-demo" / "pyproject.toml").read_text() == before
    assert 'demo = "tsbench_demo"' in before and 'dependencies = ["tsbench"]' in before
