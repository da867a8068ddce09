"""A store whose rows come from two CPUs: the report says so, names each section's CPUs and shows each CPU's
environment — a merged study must not present one machine's figures under another's heading."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

from tsbench_core.report import write_report
from tsbench_core.report.machines import UNRECORDED, machine_label, machines, with_cpu

ZEN4 = {"cpu_model": "AMD EPYC", "cpu_fingerprint": "aaaa", "cpu": {"family": 25, "model": 17, "stepping": 1}}
ZEN5 = {"cpu_model": "AMD EPYC", "cpu_fingerprint": "bbbb", "cpu": {"family": 26, "model": 2, "stepping": 1}}


def test_rows_are_counted_per_cpu_through_their_run() -> None:
    runs = [{"run_id": "r1", "environment": ZEN4}, {"run_id": "r2", "environment": ZEN5},
            {"run_id": "r3", "environment": ZEN4}]
    rows = [{"run_id": r} for r in ("r1", "r2", "r2", "r3", "r3", "r3", "gone")]
    found = {m.fingerprint: (m.rows, m.run_ids) for m in machines(runs, rows)}
    assert found == {"aaaa": (4, ["r1", "r3"]), "bbbb": (2, ["r2"]), UNRECORDED: (1, [])}
    # a CPU whose runs measured none of these rows is not listed
    assert [m.fingerprint for m in machines(runs, rows[:1])] == ["aaaa"]


def test_a_label_tells_two_cpus_of_one_model_name_apart() -> None:
    assert machine_label(ZEN4, "aaaa") == "AMD EPYC (family 25 model 17), fingerprint aaaa"
    assert machine_label(ZEN5, "bbbb") != machine_label(ZEN4, "aaaa")
    # an older run without a fingerprint falls back to host and model
    old = [{"run_id": "x", "environment": {"host": "vm", "cpu_model": "Xeon"}}]
    assert [m.fingerprint for m in machines(old, [{"run_id": "x"}])] == ["vm/Xeon"]


def _second_cpu(store: Path, moved: int) -> str:
    """Give ``moved`` of the store's rows to a new run recorded on another CPU; returns its label."""
    with sqlite3.connect(store) as conn:
        run_id, spec, env_text = conn.execute(
            "SELECT run_id, spec_name, environment FROM runs ORDER BY started_at LIMIT 1").fetchone()
        env = json.loads(env_text)
        env["cpu_fingerprint"] = "0ther0cpu"
        env["cpu"] = {**(env.get("cpu") or {}), "family": 99, "model": 7}
        conn.execute("INSERT INTO runs (run_id, spec_name, spec_hash, started_at, environment) VALUES "
                     "('other-cpu-run', ?, 'h', 1e10, ?)", (spec, json.dumps(env)))
        keys = [k for (k,) in conn.execute("SELECT cell_key FROM cells ORDER BY cell_key LIMIT ?", (moved,))]
        conn.executemany("UPDATE cells SET run_id = 'other-cpu-run' WHERE cell_key = ?", [(k,) for k in keys])
    return machine_label(env, "0ther0cpu")


def test_a_report_over_two_cpus_names_both(report_store: Path, tmp_path: Path) -> None:
    write_report(report_store, None, tmp_path / "one", [])
    single = (tmp_path / "one" / "report.md").read_text()
    assert "## Environment (most recent run)" in single and "different CPUs" not in single

    store = tmp_path / "two.db"
    shutil.copy(report_store, store)
    with sqlite3.connect(store) as conn:
        total = conn.execute("SELECT count(*) FROM cells").fetchone()[0]
        env = json.loads(conn.execute("SELECT environment FROM runs LIMIT 1").fetchone()[0])
    first = machine_label(env, env["cpu_fingerprint"])
    other = _second_cpu(store, moved=1)
    write_report(store, None, tmp_path / "two", [])
    markdown = (tmp_path / "two" / "report.md").read_text()
    assert "measured on 2 different CPUs" in markdown
    assert "## Environments (2 CPUs)" in markdown and f"### {other}" in markdown
    assert f"{first} ({total - 1} rows); {other} (1 row)." in markdown
    assert "This section mixes CPUs" in markdown
    assert "| cpu_family_model_stepping | 99 / 7 /" in markdown
    with open(tmp_path / "two" / "results.csv", newline="") as f:
        fingerprints = [r["cpu_fingerprint"] for r in csv.DictReader(f)]
    assert len(fingerprints) == total and fingerprints.count("0ther0cpu") == 1


def test_each_row_gets_the_cpu_of_its_run() -> None:
    runs = [{"run_id": "r1", "environment": ZEN4}, {"run_id": "r2", "environment": {}}]
    rows = with_cpu([{"run_id": "r1", "mse": 1.0}, {"run_id": "r2"}, {"run_id": "nowhere"}], runs)
    assert [r["cpu_fingerprint"] for r in rows] == ["aaaa", UNRECORDED, UNRECORDED]
    assert rows[0]["cpu_label"] == machine_label(ZEN4, "aaaa") and rows[0]["mse"] == 1.0
