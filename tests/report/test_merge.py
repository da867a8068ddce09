"""``tsbench merge``: stores of separate runs join into one whose report equals a single run's; merging twice adds
nothing; the same cell with different content is a reported conflict and nothing is written."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from report_helpers import report_spec

from tsbench_core.errors import UserError
from tsbench_core.merge import merge_stores
from tsbench_core.report import write_report
from tsbench_core.store import Store

NAME = "merge-tiny"


def merge_spec() -> dict[str, Any]:
    spec = report_spec(NAME, models=[{"plugin": "dlinear"}], pruning=[{"pruner": "magnitude", "sparsities": [0.5]}])
    spec.pop("seed")
    spec["seeds"] = [0, 1]
    return spec


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, report_registry: Any) -> dict[str, Path]:
    """``seed0`` and ``seed1``: the spec run one seed each, in separate folders (separate runs, separate
    artifacts); ``single``: the whole spec in one run."""
    from tsbench_core.runner import run
    from tsbench_core.spec import parse_spec, validate_against

    spec = parse_spec(json.dumps(merge_spec()), "merge.json")
    validate_against(spec, report_registry, "merge.json")
    out = {}
    for name, only in (("seed0", {"seed": {"0"}}), ("seed1", {"seed": {"1"}}), ("single", None)):
        path = tmp_path_factory.mktemp(name) / "results.db"
        summary = run(spec, path, registry=report_registry, only=only)
        assert summary.failed == 0, summary.failures
        out[name] = path
    return out


def rows_of(path: Path) -> list[dict[str, Any]]:
    with Store(path) as store:
        return store.rows()


def digest(path: Path) -> str:
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        dump = "\n".join(conn.iterdump())
    return hashlib.sha256(dump.encode()).hexdigest()


def md_table(path: Path, title_word: str) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**") and title_word in line)
    out = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        out.append([c.strip() for c in line.strip("|").split("|")])
    return out


def test_two_separate_runs_merge_into_a_single_runs_report(stores: dict[str, Path], tmp_path: Path) -> None:
    before = {name: digest(stores[name]) for name in ("seed0", "seed1")}
    merged = tmp_path / "elsewhere" / "all.db"  # no artifacts beside it
    result = merge_stores([stores["seed0"], stores["seed1"]], merged)
    assert not result.conflicts
    assert (result.added, result.identical, result.runs_added) == (4, 0, 2)
    assert {name: digest(stores[name]) for name in ("seed0", "seed1")} == before, "a source was modified"
    assert not (merged.parent / "artifacts").exists()
    single = rows_of(stores["single"])
    both = rows_of(merged)
    assert sorted(r["cell_key"] for r in both) == sorted(r["cell_key"] for r in single)
    by_key = {r["cell_key"]: r for r in single}
    for row in both:  # training, pruning and evaluation are deterministic per seed: the same numbers
        assert (row["seed"], row["mse"], row["mae"]) == tuple(by_key[row["cell_key"]][c] for c in ("seed", "mse",
                                                                                                   "mae"))
    # speedups filled in the merged store from its own dense rows
    assert all(r["speedup_vs_dense"] > 0 for r in both if r["pruner"] != "dense")
    write_report(merged, NAME, tmp_path / "merged", [])
    write_report(stores["single"], NAME, tmp_path / "single", [])
    merged_acc = md_table(tmp_path / "merged" / "report.md", "Accuracy")
    assert merged_acc == md_table(tmp_path / "single" / "report.md", "Accuracy")
    assert [line[9] for line in merged_acc[2:]] == ["2", "2"]  # n = 2 seeds per setting
    merged_lat = md_table(tmp_path / "merged" / "report.md", "Latency")
    single_lat = md_table(tmp_path / "single" / "report.md", "Latency")
    assert [line[:6] for line in merged_lat] == [line[:6] for line in single_lat]  # timings differ, rows do not


def test_merging_twice_adds_nothing(stores: dict[str, Path], tmp_path: Path) -> None:
    merged = tmp_path / "all.db"
    merge_stores([stores["seed0"]], merged)
    first = digest(merged)
    again = merge_stores([stores["seed0"], stores["seed0"]], merged)
    assert (again.added, again.identical, again.runs_added, again.conflicts) == (0, 4, 0, [])
    assert digest(merged) == first


def test_a_conflict_is_reported_and_nothing_is_written(stores: dict[str, Path], tmp_path: Path) -> None:
    merged = tmp_path / "all.db"
    merge_stores([stores["seed0"]], merged)
    first = digest(merged)
    # the single run timed the cells of both seeds again: same keys, other latencies
    result = merge_stores([stores["seed1"], stores["single"]], merged)
    assert len(result.conflicts) == 4
    assert {c.source for c in result.conflicts} == {stores["single"]}
    texts = [c.describe() for c in result.conflicts]
    assert all("latency_ms_median" in t and str(stores["single"]) in t for t in texts)
    assert sum("seed 0" in t for t in texts) == sum("seed 1" in t for t in texts) == 2
    assert "nothing was merged" in result.summary()
    assert digest(merged) == first, "a conflicting merge wrote something"


def test_ok_row_replaces_a_failed_one_never_the_reverse(stores: dict[str, Path], tmp_path: Path) -> None:
    failed = tmp_path / "failed.db"
    with Store(failed) as store:
        for row in rows_of(stores["seed0"]):
            store.put({**row, "status": "failed", "error": "boom", "mse": None})
    merged = tmp_path / "all.db"
    assert merge_stores([failed], merged).added == 2
    result = merge_stores([stores["seed0"], failed], merged)
    assert (result.replaced_failed, result.not_taken, result.conflicts) == (2, 2, [])
    assert {r["status"] for r in rows_of(merged)} == {"ok"}


def test_bad_sources_are_user_errors(stores: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such store"):
        merge_stores([tmp_path / "missing.db"], tmp_path / "all.db")
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite")
    with pytest.raises(UserError, match="junk.db: not a tsbench results store"):
        merge_stores([junk], tmp_path / "all.db")
    with pytest.raises(UserError, match="is the target store itself"):
        merge_stores([stores["seed0"]], stores["seed0"])


def test_cli_merge_exit_codes_and_messages(stores: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tsbench_core.cli import main

    into = tmp_path / "all.db"
    assert main(["merge", str(stores["seed0"]), str(stores["seed1"]), "--into", str(into)]) == 0
    assert "4 rows added" in capsys.readouterr().out
    assert main(["merge", str(stores["seed0"]), "--into", str(into), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["added"], counts["identical"], counts["conflicts"]) == (0, 2, [])
    assert main(["merge", str(stores["single"]), "--into", str(into)]) == 1
    err = capsys.readouterr().err
    assert err.count("conflict:") == 4 and "nothing was merged" in err and "latency_ms_median" in err
    assert main(["merge", str(tmp_path / "nope.db"), "--into", str(into)]) == 2
    assert "nope.db: no such store" in capsys.readouterr().err


def test_rows_from_before_the_seed_column_match_their_newer_copy(stores: dict[str, Path], tmp_path: Path) -> None:
    """The same cell stored by an older tsbench (no seed, fine_tune, variant columns) is not a conflict."""
    import shutil

    old = tmp_path / "old.db"
    with Store(stores["seed0"]):  # checkpoint the WAL into the main file
        pass
    shutil.copy(stores["seed0"], old)
    with sqlite3.connect(old) as conn:
        for column in ("seed", "fine_tune", "variant", "train_key", "prune_key"):
            conn.execute(f"ALTER TABLE cells DROP COLUMN {column}")
    merged = tmp_path / "all.db"
    merge_stores([stores["seed0"]], merged)
    result = merge_stores([old], merged)
    assert (result.identical, result.added, result.conflicts) == (2, 0, [])
