"""The CLI through subprocess, as a user runs it: exit codes, located messages, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tsbench_testing import REPO, tiny_spec


def tsbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tsbench_core.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=600)


def test_validate_accepts_good_and_rejects_bad_with_exit_2(write_spec):
    good = write_spec(tiny_spec(), "good.json")
    assert tsbench("validate", str(good)).returncode == 0
    bad = write_spec(tiny_spec(models=[{"plugin": "dlinaer"}]), "bad.json")
    empty = write_spec("", "empty.json")
    done = tsbench("validate", str(good), str(bad), str(empty))
    assert done.returncode == 2
    assert f"{bad}: models[0].plugin: unknown model 'dlinaer'; did you mean 'dlinear'?" in done.stderr
    assert f"{empty}: (top level): file is empty" in done.stderr
    assert "Traceback" not in done.stderr


def test_validate_checks_pruners_against_built_models(write_spec):
    pruning = [{"pruner": "structured", "sparsities": [0.5]},
               {"pruner": "magnitude", "sparsities": [0.5], "params": {"exclude": ["no_such_layer"]}}]
    bad = write_spec(tiny_spec(pruning=pruning), "bad.json")
    done = tsbench("validate", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{bad}: pruning[0].pruner: with models[0] (dlinear): structured pruning finds no" in done.stderr
    assert f"{bad}: pruning[1].params.exclude: with models[0] (dlinear):" in done.stderr
    assert "'no_such_layer' matches no module" in done.stderr


def test_missing_spec_file_is_a_user_error(tmp_path):
    done = tsbench("run", str(tmp_path / "nope.json"), "--store", str(tmp_path / "r.db"))
    assert done.returncode == 2 and "no such file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r.db").exists()


def test_run_then_rerun_is_cached_and_results_print_every_format(write_spec, tmp_path):
    spec = write_spec(tiny_spec(name="cli-run"))
    store = str(tmp_path / "results" / "r.db")
    first = tsbench("run", str(spec), "--store", store, "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 cells — 0 cached, 2 run, 2 ok" in first.stdout
    second = tsbench("run", str(spec), "--store", store, "--quiet")
    assert "2 cells — 2 cached, 0 run" in second.stdout
    dry = tsbench("run", str(spec), "--store", store, "--dry-run")
    assert dry.stdout.count("cached ") == 2 and "2 cells, 0 to run, 2 cached" in dry.stdout

    rows = [json.loads(line) for line in tsbench("results", "--store", store, "--format", "jsonl").stdout.splitlines()]
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert {r["pruner"] for r in rows} == {"dense", "magnitude"}
    csv_out = tsbench("results", "--store", store, "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("cell_key,run_id,spec_name") and len(csv_out) == 3
    markdown = tsbench("results", "--store", store, "--format", "markdown").stdout
    assert markdown.startswith("| dataset |") and markdown.count("\n") == 4
    unknown = tsbench("results", "--store", store, "--spec", "nope")
    assert unknown.returncode == 2 and "stored specs: cli-run" in unknown.stderr


def test_plugins_lists_kinds_and_availability():
    done = tsbench("plugins", "--json")
    assert done.returncode == 0
    listing = json.loads(done.stdout)
    kinds = {p["kind"] for p in listing["plugins"]}
    assert kinds == {"model", "dataset", "pruner", "runtime"}
    semi = next(p for p in listing["plugins"] if p["name"] == "semi-structured")
    assert semi["available"] is False and "CUDA" in semi["reason"]


def test_schema_includes_plugin_params(tmp_path):
    out = tmp_path / "schema.json"
    assert tsbench("schema", "--out", str(out)).returncode == 0
    schema = json.loads(out.read_text())
    assert "transformer" in schema["$defs"]["ModelEntry"]["properties"]["plugin"]["enum"]
    assert "d_model" in schema["x-tsbench-plugins"]["model"]["transformer"]["params"]["properties"]
