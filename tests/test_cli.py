"""The CLI through subprocess, as a user runs it: exit codes, located messages, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tsbench_testing import REPO, tiny_spec


def tsbench(*args: str, cwd: Path | None = None, **env_vars: str | None) -> subprocess.CompletedProcess:
    """``tsbench ARGS`` in a subprocess; ``NAME=value`` sets an environment variable, ``NAME=None`` unsets it."""
    env = {**os.environ, "NM_DISABLE_ANALYTICS": "1", "COLUMNS": "200", **env_vars}
    env = {name: value for name, value in env.items() if value is not None}
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
    planned = json.loads(tsbench("run", str(spec), "--store", store, "--dry-run", "--json").stdout)["specs"][0]
    assert (planned["total"], planned["to_run"], planned["cached"]) == (2, 0, 2)
    assert {c["status"] for c in planned["cells"]} == {"cached"}

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
    assert kinds == {"model", "dataset", "pruner", "runtime", "quantizer"}
    semi = next(p for p in listing["plugins"] if p["name"] == "semi-structured")
    assert semi["available"] is False and "CUDA" in semi["reason"]


def test_schema_includes_plugin_params(tmp_path):
    out = tmp_path / "schema.json"
    assert tsbench("schema", "--out", str(out)).returncode == 0
    schema = json.loads(out.read_text())
    assert "transformer" in schema["$defs"]["ModelEntry"]["properties"]["plugin"]["enum"]
    assert "d_model" in schema["x-tsbench-plugins"]["model"]["transformer"]["params"]["properties"]


# --- the command line itself: help, version, output that keeps its text, precedence ---------------------------


def _subparsers(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_of_every_subcommand_has_help_and_each_command_examples():
    from tsbench_core.cli import build_parser

    parser = build_parser()
    commands = _subparsers(parser)
    assert {"run", "validate", "schema", "plugins", "results", "bench", "report", "new-plugin"} <= set(commands)
    undescribed = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, sub in commands.items()
                   for a in sub._actions if not (a.help or "").strip()]
    assert undescribed == []
    for name, sub in commands.items():
        assert f"tsbench {name}" in (sub.epilog or ""), f"{name} has no example"
    assert sum(len(sub._actions) for sub in commands.values()) > 35  # the check saw the real options


def test_help_shows_defaults_and_version_is_the_installed_one():
    from importlib.metadata import version

    bench_help = tsbench("bench", "--help")
    assert bench_help.returncode == 0
    assert "(default: 20)" in bench_help.stdout and "(default: magnitude)" in bench_help.stdout
    done = tsbench("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"tsbench {version('tsbench')}"


def test_usage_mistakes_exit_2_naming_the_option():
    done = tsbench("results", "--format", "xml")
    assert done.returncode == 2 and "--format" in done.stderr and "'xml'" in done.stderr
    assert tsbench("run").returncode == 2
    assert "Traceback" not in done.stderr


def test_bracketed_text_in_messages_is_printed_as_is(tmp_path):
    store = tmp_path / "[nm_ort run]" / "[red]r.db"
    done = tsbench("results", "--store", str(store))
    assert done.returncode == 2
    assert f"no results store at {store}" in done.stderr.replace("\n", "")


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path):
    missing = str(tmp_path / "none.db")
    piped = tsbench("results", "--store", missing)
    assert "\x1b[" not in piped.stderr
    forced = tsbench("results", "--store", missing, FORCE_COLOR="1", NO_COLOR=None)  # as on a terminal
    assert "\x1b[31m" in forced.stderr  # the red "error:"
    no_color = tsbench("results", "--store", missing, FORCE_COLOR="1", NO_COLOR="1")
    assert "\x1b[31m" not in no_color.stderr and "error: no results store" in no_color.stderr


def test_validate_quiet_and_json(write_spec):
    good = write_spec(tiny_spec(name="quiet-one"))
    quiet = tsbench("validate", str(good), "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == ""
    listed = json.loads(tsbench("validate", str(good), "--json").stdout)
    assert listed == [{"path": str(good), "name": "quiet-one"}]


def _series_csv(folder: Path, rows: int) -> Path:
    """An hourly CSV of ``rows`` rows (the row count tells the copies apart)."""
    import numpy as np
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(rows)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=rows, freq="h"),
                          "a": np.sin(t / 6.0), "OT": np.cos(t / 6.0)})
    frame.to_csv(folder / "series.csv", index=False)
    return folder / "series.csv"


def test_data_dir_option_wins_over_the_spec(write_spec, tmp_path):
    spec_copy = _series_csv(tmp_path / "spec-data", 300)
    option_copy = _series_csv(tmp_path / "option-data", 360)
    spec = tiny_spec(name="data-dir", pruning=[], data_dir=str(spec_copy.parent),
                     datasets=[{"plugin": "csv", "params": {"path": "series.csv"}, "seq_len": 16, "label_len": 8,
                                "pred_len": [8]}])
    path = write_spec(spec)

    def stored_file(store: Path, *options: str) -> str:
        done = tsbench("run", str(path), "--store", str(store), "--json", *options, TSBENCH_DATA_DIR=None)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["specs"][0]["statuses"] == {"ok": 1}
        dense = [meta for meta in (json.loads(f.read_text()) for f in (store.parent / "artifacts").glob("*.json"))
                 if meta.get("kind") == "dense"]
        assert len(dense) == 1
        return dense[0]["dataset_info"]["file"]  # the file the dense model was trained on

    assert stored_file(tmp_path / "a" / "r.db", "--data-dir", str(option_copy.parent)) == str(option_copy)
    assert stored_file(tmp_path / "b" / "r.db") == str(spec_copy)


def test_data_dir_precedence_option_environment_spec(monkeypatch, tmp_path, registry):
    from tsbench_core.cells import expand
    from tsbench_core.pipeline import Workspace, load_splits
    from tsbench_core.spec import Spec

    copies = {where: _series_csv(tmp_path / where, rows) for where, rows in
              (("option", 360), ("env", 330), ("spec", 300))}
    spec = Spec.model_validate(tiny_spec(pruning=[], data_dir=str(copies["spec"].parent), datasets=[
        {"plugin": "csv", "params": {"path": "series.csv"}, "seq_len": 16, "label_len": 8, "pred_len": [8]}]))
    job = expand(spec, registry)[0].prune.train

    def read(option: str | None) -> str:
        ws = Workspace(tmp_path / "artifacts", option, registry)
        return load_splits(ws, job).info["file"]

    monkeypatch.setenv("TSBENCH_DATA_DIR", str(copies["env"].parent))
    assert read(str(copies["option"].parent)) == str(copies["option"])
    assert read(None) == str(copies["env"])
    monkeypatch.delenv("TSBENCH_DATA_DIR")
    assert read(None) == str(copies["spec"])


def test_bench_defaults_are_the_spec_defaults():
    from tsbench_core.cli import build_parser
    from tsbench_core.spec import QuantizeConfig, Spec, TimingConfig

    bench = _subparsers(build_parser(only="bench"))["bench"]
    defaults = {a.dest: a.default for a in bench._actions}
    timing = TimingConfig()
    assert (defaults["batch_size"], defaults["warmup"], defaults["repeats"], defaults["threads"]) == (
        timing.batch_sizes[0], timing.warmup, timing.repeats, timing.threads)
    assert defaults["int8_tolerance"] == QuantizeConfig().tolerance
    assert "torch-eager" in next(a.help for a in bench._actions if a.dest == "runtime")
    assert [r.plugin for r in Spec.model_fields["runtimes"].get_default(call_default_factory=True)] == ["torch-eager"]


def test_bench_table_keeps_bracketed_runtime_messages(capsys):
    from tsbench_core.bench import render_rows

    reason = "[nm_ort 7f3a] engine refused the graph [red]"
    render_rows([{"runtime": "deepsparse", "status": "failed", "reason": reason, "model": "m", "pruner": "p"}])
    body = [line.split("│") for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    notes = " ".join(cells[-2].strip() for cells in body if cells[-2].strip())  # the last column, wrapped
    assert notes == reason
