"""``tsbench dump``: a store written as JSON lines and merged back (``tsbench merge DUMP --into NEW.db``) is the
same store, column by column (read with sqlite3, not through tsbench), with the same ``results`` and ``report``;
dumps are byte-stable; merging a dump follows the rules of merging a store; a malformed dump is a located error
(exit 2) and nothing is written."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tsbench_core.cli import main
from tsbench_core.merge import merge_stores
from tsbench_core.report import write_report
from tsbench_core.store import Store

Table = dict[str, dict[str, tuple[str, Any]]]


def table(path: Path, name: str, key: str) -> Table:
    """``{key: {column: (SQLite type, value)}}`` of one table, read with sqlite3 directly (the type tells 1 from
    1.0 and '1')."""
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info({name})")]
        selected = ", ".join(f"typeof({c}), {c}" for c in columns)
        out = {}
        for values in conn.execute(f"SELECT {selected} FROM {name}"):
            row = {c: (values[2 * i], values[2 * i + 1]) for i, c in enumerate(columns)}
            out[row[key][1]] = row
    return out


def digest(path: Path) -> str:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


def dump(store: Path, out: Path, *extra: str) -> Path:
    assert main(["dump", "--store", str(store), "--out", str(out), *extra]) == 0
    return out


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def dumped(report_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dump(report_store, tmp_path_factory.mktemp("dump") / "chunks" / "tiny.jsonl")


@pytest.fixture(scope="module")
def rebuilt(dumped: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    into = tmp_path_factory.mktemp("rebuilt") / "all.db"
    assert main(["merge", str(dumped), "--into", str(into)]) == 0
    return into


def test_a_store_rebuilt_from_its_dump_equals_the_original_column_by_column(report_store: Path,
                                                                            rebuilt: Path) -> None:
    original, again = table(report_store, "cells", "cell_key"), table(rebuilt, "cells", "cell_key")
    assert len(original) >= 4 and {v["status"][1] for v in original.values()} == {"ok"}
    assert again == original
    floats = [v for row in original.values() for v in row.values() if v[0] == "real"]
    assert len(floats) > 10 * len(original)  # real measurements, compared exactly
    runs, runs_again = table(report_store, "runs", "run_id"), table(rebuilt, "runs", "run_id")
    assert len(runs) == 1 and runs_again == runs
    environment = json.loads(next(iter(runs.values()))["environment"][1])
    assert environment["cpu"] and environment["torch"]  # the machine a run was timed on survives the round trip


def test_results_and_report_of_the_rebuilt_store_equal_the_originals(report_store: Path, rebuilt: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("csv", "jsonl", "markdown", "table"):
        code, original, _ = cli(capsys, "results", "--store", str(report_store), "--format", fmt)
        code_again, again, _ = cli(capsys, "results", "--store", str(rebuilt), "--format", fmt)
        assert code == code_again == 0 and original.count("\n") > 2
        assert again.replace(str(rebuilt), "STORE") == original.replace(str(report_store), "STORE"), fmt
    write_report(report_store, None, tmp_path / "original", [])
    write_report(rebuilt, None, tmp_path / "rebuilt", [])
    for name in ("report.md", "results.csv"):
        original = (tmp_path / "original" / name).read_text(encoding="utf-8")
        again = (tmp_path / "rebuilt" / name).read_text(encoding="utf-8")
        assert "| magnitude" in (tmp_path / "original" / "report.md").read_text(encoding="utf-8")
        assert again.replace(str(rebuilt), "STORE") == original.replace(str(report_store), "STORE"), name


def test_dumps_are_byte_stable_and_stdout_equals_the_file(report_store: Path, dumped: Path, rebuilt: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = dumped.read_bytes()
    assert dump(report_store, tmp_path / "again.jsonl").read_bytes() == text
    assert dump(rebuilt, tmp_path / "rebuilt.jsonl").read_bytes() == text  # stored in another order, same dump
    code, out, _ = cli(capsys, "dump", "--store", str(report_store))
    assert code == 0 and out.encode() == text
    lines = [json.loads(line) for line in text.decode().splitlines()]
    assert lines[0] == {"table": "header", "format": "tsbench-dump", "version": 1}
    tags = [line["table"] for line in lines[1:]]
    assert tags == sorted(tags, key=lambda t: t != "run") and tags.count("run") == 1  # runs first, then rows
    keys = [(line["spec_name"], line["cell_key"]) for line in lines if line["table"] == "row"]
    assert keys == sorted(keys)
    assert not list(tmp_path.glob(".*.tmp")), "the atomic write left a temporary file"


def test_merging_a_dump_twice_adds_nothing(dumped: Path, rebuilt: Path, tmp_path: Path) -> None:
    into = tmp_path / "all.db"
    shutil.copy(rebuilt, into)
    before = digest(into)
    rows = len(table(into, "cells", "cell_key"))
    again = merge_stores([dumped, dumped], into)
    assert (again.added, again.identical, again.runs_added, again.conflicts) == (0, 2 * rows, 0, [])
    assert digest(into) == before


def test_a_dump_merges_with_a_store_and_conflicts_with_a_differing_one(report_store: Path, dumped: Path,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with Store(report_store) as store:
        rows = store.rows()
    retimed = tmp_path / "retimed.db"
    changed = rows[0]
    with Store(retimed) as store:  # the same cells, one of them timed again
        for row in rows:
            store.put({**row, "latency_ms_median": row["latency_ms_median"] * 1.5} if row is changed else row)
    into = tmp_path / "all.db"
    result = merge_stores([report_store, dumped], into)  # a store and its own dump: the same rows
    assert (result.added, result.identical, result.conflicts) == (len(rows), len(rows), [])
    before = digest(into)
    code, _, err = cli(capsys, "merge", str(retimed), "--into", str(into))
    assert code == 1 and err.count("conflict:") == 1
    assert changed["cell_key"] in err and "latency_ms_median" in err and "nothing was merged" in err
    assert digest(into) == before
    retimed_into = tmp_path / "retimed-first.db"
    merge_stores([retimed], retimed_into)
    result = merge_stores([dumped], retimed_into)  # the other way round: the dump is the conflicting source
    assert [(c.source, c.cell_key) for c in result.conflicts] == [(dumped, changed["cell_key"])]


def test_an_ok_row_of_a_dump_replaces_a_failed_one_and_older_dumps_lack_late_columns(
        report_store: Path, dumped: Path, tmp_path: Path) -> None:
    with Store(report_store) as store:
        rows = store.rows()
    failed = tmp_path / "failed.db"
    with Store(failed) as store:
        for row in rows:
            store.put({**row, "status": "failed", "error": "boom", "mse": None})
    into = tmp_path / "all.db"
    merge_stores([dump(failed, tmp_path / "failed.jsonl")], into)
    result = merge_stores([dumped, tmp_path / "failed.jsonl"], into)
    assert (result.replaced_failed, result.not_taken, result.conflicts) == (len(rows), len(rows), [])
    assert {v["status"][1] for v in table(into, "cells", "cell_key").values()} == {"ok"}
    late = ("seed", "fine_tune", "variant", "train_key", "prune_key")
    old = tmp_path / "old.jsonl"  # a dump written before these columns existed
    old.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k not in late}) + "\n"
                           for line in dumped.read_text().splitlines()))
    result = merge_stores([old], into)
    assert (result.identical, result.added, result.conflicts) == (len(rows), 0, [])


def test_stored_json_text_tsbench_would_not_write_survives_verbatim(tmp_path: Path) -> None:
    store = tmp_path / "odd.db"
    with Store(store) as s:
        s.start_run("odd", "h", {"cpu": "x"}, 3, 0)
        for key in ("a", "b", "c"):
            s.put({"cell_key": key, "spec_name": "odd", "status": "ok", "mse": 0.1 + 0.2, "seq_len": 96,
                   "target_sparsity": 1.0, "runtime_info": {"k": [1, 2.5, None]}})
    with sqlite3.connect(store) as conn:  # texts that parsing and serialising would change
        conn.execute("""UPDATE cells SET runtime_info = '{"k":1}' WHERE cell_key = 'b'""")
        conn.execute("UPDATE cells SET runtime_info = 'null', prune_info = '' WHERE cell_key = 'c'")
        conn.execute("UPDATE runs SET environment = 'not json'")
    out = dump(store, tmp_path / "odd.jsonl")
    lines = {line.get("cell_key"): line for line in map(json.loads, out.read_text().splitlines())}
    assert lines["a"]["runtime_info"] == {"k": [1, 2.5, None]} and "verbatim" not in lines["a"]
    assert lines["b"]["verbatim"] == ["runtime_info"] and lines["c"]["verbatim"] == ["runtime_info", "prune_info"]
    into = tmp_path / "back.db"
    merge_stores([out], into)
    assert table(into, "cells", "cell_key") == table(store, "cells", "cell_key")
    assert table(into, "runs", "run_id") == table(store, "runs", "run_id")


def test_dump_selects_specs_and_refuses_bad_stores(report_store: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    other = tmp_path / "two.db"
    merge_stores([report_store], other)
    with Store(other) as store:
        store.start_run("second", "h2", {}, 1, 0)
        store.put({"cell_key": "second-cell", "spec_name": "second", "status": "ok"})
    code, out, _ = cli(capsys, "dump", "--store", str(other), "--spec", "second")
    lines = [json.loads(line) for line in out.splitlines()[1:]]
    assert code == 0 and {line["spec_name"] for line in lines} == {"second"} and len(lines) == 2
    code, out, _ = cli(capsys, "dump", "--store", str(other), "--spec", "second", "report-tiny")
    assert code == 0 and len(out.splitlines()) == len(table(other, "cells", "cell_key")) + 3
    code, _, err = cli(capsys, "dump", "--store", str(other), "--spec", "nope")
    assert code == 2 and "nope" in err and "stored specs: report-tiny, second" in err
    code, _, err = cli(capsys, "dump", "--store", str(tmp_path / "missing.db"))
    assert code == 2 and "missing.db" in err
    before = digest(other)
    code, _, err = cli(capsys, "dump", "--store", str(other), "--out", str(other))
    assert code == 2 and "is the store itself" in err and digest(other) == before
    with sqlite3.connect(other) as conn:
        conn.execute("ALTER TABLE cells ADD COLUMN from_the_future REAL")
    code, _, err = cli(capsys, "dump", "--store", str(other), "--out", str(tmp_path / "x.jsonl"))
    assert code == 2 and "from_the_future" in err and "newer tsbench" in err
    assert not (tmp_path / "x.jsonl").exists()


def _corrupt(lines: list[str], index: int, edit: Any) -> list[str]:
    line = json.loads(lines[index])
    return [*lines[:index], edit(line), *lines[index + 1:]]


MALFORMED = {
    "bad JSON": (2, lambda line: json.dumps(line)[:-5], "not a JSON line"),
    "conflict marker": (2, lambda line: "<<<<<<< HEAD", "git conflict marker"),
    "unknown table": (2, lambda line: json.dumps({**line, "table": "cell"}), "unknown table 'cell'"),
    "unknown column": (3, lambda line: json.dumps({**line, "msee": 1.0}), "unknown column 'msee'"),
    "missing cell_key": (3, lambda line: json.dumps({k: v for k, v in line.items() if k != "cell_key"}),
                         "without its cell_key"),
    "object in a scalar column": (3, lambda line: json.dumps({**line, "mse": {"x": 1}}), "column 'mse'"),
    "repeated key": (4, lambda line: json.dumps({**line, "cell_key": "__previous__"}), "appears again"),
    "no header": (1, lambda line: json.dumps({"cell_key": "k", "mse": 1.0}), "tsbench results --format jsonl"),
    "newer format": (1, lambda line: json.dumps({**line, "version": 99}), "newer tsbench"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_dump_is_a_located_error_and_nothing_is_written(case: str, dumped: Path, rebuilt: Path,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    number, edit, message = MALFORMED[case]
    lines = dumped.read_text().splitlines()
    previous_key = json.loads(lines[number - 2]).get("cell_key") if number > 1 else None
    corrupted = _corrupt(lines, number - 1, edit)
    corrupted = [line.replace("__previous__", str(previous_key)) for line in corrupted]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(corrupted) + "\n")
    new = tmp_path / "new.db"
    code, _, err = cli(capsys, "merge", str(dumped), str(bad), "--into", str(new))
    assert code == 2 and f"{bad}:{number}: " in err and message in err, err
    assert "Traceback" not in err and "; " in err  # what is wrong; what to do
    assert not new.exists(), "a malformed dump created the target"
    existing = tmp_path / "existing.db"
    shutil.copy(rebuilt, existing)
    before = digest(existing)
    assert main(["merge", str(bad), "--into", str(existing)]) == 2
    assert digest(existing) == before


def test_rows_that_tie_on_the_sort_columns_list_in_one_order_however_stored(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two fine-tuning configs of one setting tie on every sorted column but the key: a store rebuilt from a
    dump (rows stored by key) must list them as the original (rows stored as computed) does."""
    base = {"spec_name": "s", "dataset": "d", "pred_len": 8, "model": "m", "pruner": "magnitude",
            "target_sparsity": 0.5, "runtime": "torch-eager", "batch_size": 1, "seed": 0, "status": "ok"}
    tied = [{**base, "cell_key": "z-epochs-1", "fine_tune": '{"epochs": 1}'},
            {**base, "cell_key": "a-epochs-2", "fine_tune": '{"epochs": 2}'}]
    outputs = []
    for name, order in (("forward", tied), ("backward", tied[::-1])):
        with Store(tmp_path / f"{name}.db") as store:
            for row in order:
                store.put(row)
        outputs.append(cli(capsys, "results", "--store", str(tmp_path / f"{name}.db"), "--format", "csv")[1])
    assert outputs[0] == outputs[1]


def test_a_gz_dump_is_the_same_text_gzipped_deterministically_and_merges_like_the_plain_one(
        report_store: Path, dumped: Path, rebuilt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    packed = dump(report_store, tmp_path / "tiny.jsonl.gz")
    assert gzip.decompress(packed.read_bytes()) == dumped.read_bytes()
    assert dump(report_store, tmp_path / "again.jsonl.gz").read_bytes() == packed.read_bytes()  # no mtime inside
    into = tmp_path / "from_gz.db"
    assert main(["merge", str(packed), "--into", str(into)]) == 0
    assert table(into, "cells", "cell_key") == table(rebuilt, "cells", "cell_key")
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) // 2])
    code, _, err = cli(capsys, "merge", str(damaged), "--into", str(tmp_path / "never.db"))
    assert code == 2 and "damaged.jsonl.gz" in err and "gzip" in err and "Traceback" not in err
    assert not (tmp_path / "never.db").exists()
