"""Seeds: ``seeds`` in specs, one cell per seed, the seed in every row (and filled into older stores), and the
aggregation of results and reports over seeds checked against numpy/scipy computed from the stored rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_helpers import markdown_table_rows, report_spec
from scipy import stats

from tsbench_core.cells import expand, select
from tsbench_core.report import write_report
from tsbench_core.report.data import group_sections
from tsbench_core.report.tables import accuracy_table, latency_table
from tsbench_core.seed_stats import Spread, format_spread, paired_p_value
from tsbench_core.spec import SpecProblems, parse_spec, validate_against
from tsbench_core.store import Store
from tsbench_core.tables import summary_table

SEEDS = [0, 1, 2]
NAME = "seeds-tiny"


def seeds_spec(**overrides: Any) -> dict[str, Any]:
    """The report spec with three seeds, DLinear only, magnitude at 0.5 and 0.9."""
    spec = report_spec(NAME, models=[{"plugin": "dlinear"}],
                       pruning=[{"pruner": "magnitude", "sparsities": [0.5, 0.9]}])
    spec.pop("seed")
    spec["seeds"] = SEEDS
    spec.update(overrides)
    return spec


def load(spec: dict[str, Any], registry: Any) -> Any:
    parsed = parse_spec(json.dumps(spec), "seeds.json")
    validate_against(parsed, registry, "seeds.json")
    return parsed


@pytest.fixture(scope="module")
def seeds_store(tmp_path_factory: pytest.TempPathFactory, report_registry: Any) -> Path:
    from tsbench_core.runner import run

    path = tmp_path_factory.mktemp("seeds-store") / "results.db"
    summary = run(load(seeds_spec(), report_registry), path, registry=report_registry)
    assert summary.failed == 0, summary.failures
    return path


@pytest.fixture(scope="module")
def seed_rows(seeds_store: Path) -> list[dict[str, Any]]:
    with Store(seeds_store) as store:
        return store.rows(NAME)


# --- spec --------------------------------------------------------------------------------------------------


def test_seed_and_seeds_together_is_a_located_error() -> None:
    spec = seeds_spec(seed=3)
    with pytest.raises(SpecProblems, match=r"seeds\.json: .*either 'seed' \(one seed\) or 'seeds'"):
        parse_spec(json.dumps(spec), "seeds.json")
    with pytest.raises(SpecProblems, match=r"seeds\.json: seeds: .*seed 1 given more than once"):
        parse_spec(json.dumps(seeds_spec(seeds=[1, 2, 1])), "seeds.json")
    with pytest.raises(SpecProblems, match=r"seeds\.json: seeds: List should have at least 1 item"):
        parse_spec(json.dumps(seeds_spec(seeds=[])), "seeds.json")
    with pytest.raises(SpecProblems, match=r"seeds\[1\]: Input should be a valid integer"):
        parse_spec(json.dumps(seeds_spec(seeds=[1, "x"])), "seeds.json")


def test_one_seed_specs_keep_their_dump_and_cells(report_registry: Any) -> None:
    one = load(report_spec(seed=7), report_registry)
    assert "seeds" not in one.model_dump(mode="json")  # spec hashes of existing specs do not change
    as_list = load(seeds_spec(seeds=[7]), report_registry)
    assert one.seed_list() == as_list.seed_list() == [7]
    # the same seed gives the same training key either way (the spec name is not part of it)
    assert {c.prune.train.key for c in expand(one, report_registry) if c.prune.train.model == "dlinear"} == \
        {c.prune.train.key for c in expand(as_list, report_registry)}


def test_one_cell_per_seed_and_only_seed(report_registry: Any) -> None:
    spec = load(seeds_spec(), report_registry)
    cells = expand(spec, report_registry)
    single = expand(load(seeds_spec(seeds=[0]), report_registry), report_registry)
    assert len(cells) == len(SEEDS) * len(single) == 9
    assert len({c.prune.train.key for c in cells}) == len(SEEDS)
    assert len({c.key for c in cells}) == len(cells)
    picked = select(cells, {"seed": {"1"}})
    assert len(picked) == 3 and {c.prune.train.seed for c in picked} == {1}
    # each seed's dense reference is its own
    for cell in cells:
        dense = next(c for c in cells if c.key == cell.dense_key)
        assert dense.prune.train.seed == cell.prune.train.seed


# --- a real 3-seed run -------------------------------------------------------------------------------------


def test_three_rows_per_setting_with_their_seeds(seed_rows: list[dict[str, Any]]) -> None:
    settings: dict[tuple[Any, ...], list[int]] = {}
    for row in seed_rows:
        settings.setdefault((row["pruner"], row["target_sparsity"]), []).append(row["seed"])
    assert {k: sorted(v) for k, v in settings.items()} == {("dense", 0.0): SEEDS, ("magnitude", 0.5): SEEDS,
                                                          ("magnitude", 0.9): SEEDS}
    dense_mse = [r["mse"] for r in seed_rows if r["pruner"] == "dense"]
    assert len(set(dense_mse)) == 3, "the seeds trained the same model"


def _by_setting(rows: list[dict[str, Any]], pruner: str, target: float) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in rows if r["pruner"] == pruner and r["target_sparsity"] == target}


def test_report_mean_ci_and_paired_test_match_scipy(seeds_store: Path, seed_rows: list[dict[str, Any]],
                                                    tmp_path: Path) -> None:
    write_report(seeds_store, NAME, tmp_path, [])
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "paired t-test across seeds (scipy.stats.ttest_rel" in markdown
    table = {(r[1], r[3]): r for r in markdown_table_rows(markdown, "Accuracy")}
    dense = _by_setting(seed_rows, "dense", 0.0)
    dense_mse = np.array([dense[s]["mse"] for s in SEEDS])
    for pruner, target, shown_target in (("dense", 0.0, "–"), ("magnitude", 0.5, "0.500"),
                                         ("magnitude", 0.9, "0.900")):
        rows = _by_setting(seed_rows, pruner, target)
        mse = np.array([rows[s]["mse"] for s in SEEDS])
        mae = np.array([rows[s]["mae"] for s in SEEDS])
        line = table[(pruner, shown_target)]
        # model pruner fine-tuning target sparsity params params≠0 MACs-dense MACs-eff n MSE CI MAE ΔMSE test against
        assert line[9] == "3"
        assert line[10] == f"{mse.mean():.4f} ± {mse.std(ddof=1):.4f}"
        low, high = stats.t.interval(0.95, len(mse) - 1, loc=mse.mean(), scale=stats.sem(mse))
        assert line[11] == f"{low:.4f} – {high:.4f}"
        assert line[12] == f"{mae.mean():.4f} ± {mae.std(ddof=1):.4f}"
        if pruner == "dense":
            assert line[13:] == ["–", "–", "–"]
            continue
        change = 100.0 * (mse / dense_mse - 1.0)
        assert line[13] == f"{change.mean():+.1f}% ± {change.std(ddof=1):.1f}%"
        p_value = stats.ttest_rel(mse, dense_mse).pvalue
        assert line[14] == ("significant" if p_value < 0.05 else "not significant")
        assert line[15] == "dense"
    latency = {(r[1], r[3]): r for r in markdown_table_rows(markdown, "Latency")}
    for pruner, target, shown_target in (("dense", 0.0, "–"), ("magnitude", 0.9, "0.900")):
        ms = np.array([r["latency_ms_median"] for r in _by_setting(seed_rows, pruner, target).values()])
        assert latency[(pruner, shown_target)][6].startswith(f"{ms.mean():.3f} ± {ms.std(ddof=1):.3f}")


def test_results_table_aggregates_over_seeds(seed_rows: list[dict[str, Any]]) -> None:
    headers, lines, statuses = summary_table(seed_rows)
    assert len(lines) == 3 and statuses == ["ok"] * 3
    column = {h: i for i, h in enumerate(headers)}
    pruned = next(line for line in lines if line[column["target"]] == "0.500")
    mse = np.array([r["mse"] for r in _by_setting(seed_rows, "magnitude", 0.5).values()])
    assert pruned[column["n"]] == "3"
    assert pruned[column["MSE"]] == f"{mse.mean():.4f} ± {mse.std(ddof=1):.4f}"
    assert pruned[column["vs ref"]] in ("significant", "not significant")
    assert pruned[column["Δ against"]] == "dense" and pruned[column["fine-tuning"]] == "none"


def test_one_seed_shows_no_spread() -> None:
    assert format_spread(Spread((0.25,)), lambda v: f"{v:.4f}") == "0.2500"
    assert Spread((0.25,)).ci is None and paired_p_value([0.3], [0.2]) is None
    rows = [{"spec_name": "s", "dataset": "d", "pred_len": 8, "seq_len": 16, "model": "m", "seed": 0,
             "pruner": p, "target_sparsity": t, "runtime": "torch-eager", "batch_size": 4, "status": "ok",
             "mse": mse, "mae": mse, "latency_ms_median": 1.0} for p, t, mse in (("dense", 0.0, 0.4),
                                                                              ("magnitude", 0.5, 0.5))]
    section = group_sections(rows)[0]
    accuracy = accuracy_table(section)
    assert "MSE 95% CI" not in accuracy.headers and "vs reference" not in accuracy.headers
    assert "±" not in json.dumps(accuracy.rows + latency_table(section).rows, ensure_ascii=False)
    headers, _, _ = summary_table(rows)
    assert "MSE 95% CI" not in headers and "vs ref" not in headers


def test_paired_p_value_edge_cases() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(5), rng.random(5)
    assert paired_p_value(list(a), list(b)) == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_p_value([1.0, 2.0], [1.0, 2.0]) == 1.0  # no difference at all
    assert paired_p_value([1.5, 2.5], [1.0, 2.0]) == 0.0  # the same non-zero difference on every seed


def test_old_store_rows_get_their_specs_seed(seeds_store: Path, report_registry: Any, tmp_path: Path) -> None:
    """A store written before the seed column existed opens, and a run of its spec fills the seed of its rows."""
    import shutil

    from tsbench_core.runner import run

    old = tmp_path / "old.db"
    with Store(seeds_store):  # checkpoint the WAL so one file holds everything
        pass
    shutil.copy(seeds_store, old)
    with sqlite3.connect(old) as conn:
        conn.execute("ALTER TABLE cells DROP COLUMN seed")
    with Store(old) as store:
        assert {r["seed"] for r in store.rows()} == {None}
        again = run(load(seeds_spec(), report_registry), store, registry=report_registry)
        assert again.cached == again.total == 9  # nothing reran
        assert sorted(r["seed"] for r in store.rows()) == sorted(SEEDS * 3)


def test_results_table_keeps_variants_apart_and_names_their_options() -> None:
    base = {"spec_name": "s", "dataset": "d", "pred_len": 8, "model": "m", "pruner": "magnitude",
            "target_sparsity": 0.5, "runtime": "torch-eager", "batch_size": 4, "status": "ok", "mae": 0.1}
    rows = [{**base, "seed": s, "variant": v, "mse": m, "cell_key": f"{v}{s}"}
            for s, v, m in ((0, "", 0.2), (1, "", 0.3), (0, "block=4", 0.5), (1, "block=4", 0.7))]
    headers, lines, _ = summary_table(rows)
    column = {h: i for i, h in enumerate(headers)}
    assert [(line[column["pruner"]], line[column["n"]], line[column["MSE"]]) for line in lines] == [
        ("magnitude", "2", f"{np.mean([0.2, 0.3]):.4f} ± {np.std([0.2, 0.3], ddof=1):.4f}"),
        ("magnitude (block=4)", "2", f"{np.mean([0.5, 0.7]):.4f} ± {np.std([0.5, 0.7], ddof=1):.4f}")]
