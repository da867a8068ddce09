"""Dense controls for fine-tuning budgets, the summary table, and plots that tell models apart at scale."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.legend import Legend
from matplotlib.text import Annotation
from report_helpers import markdown_table_rows, report_spec

from tsbench_core.cells import DENSE, expand
from tsbench_core.report import write_report
from tsbench_core.report.data import group_sections
from tsbench_core.report.plots import PLOTS, accuracy_latency_pareto
from tsbench_core.report.summary import summary_table
from tsbench_core.spec import parse_spec, validate_against
from tsbench_core.store import Store

NAME = "controls-tiny"
FINE_TUNE = {"epochs": 1, "lr": 0.0005, "max_train_batches": 3}


def controls_spec(**overrides: Any) -> dict[str, Any]:
    spec = report_spec(NAME, models=[{"plugin": "dlinear"}], pruning=[
        {"pruner": "magnitude", "sparsities": [0.0, 0.5], "fine_tune": FINE_TUNE},
        {"pruner": "magnitude", "sparsities": [0.5]},
    ])
    spec.pop("seed")
    spec["seeds"] = [0, 1]
    spec.update(overrides)
    return spec


def load(spec: dict[str, Any], registry: Any) -> Any:
    parsed = parse_spec(json.dumps(spec), "controls.json")
    validate_against(parsed, registry, "controls.json")
    return parsed


def test_fine_tuning_adds_one_dense_control_per_budget(report_registry: Any) -> None:
    spec = load(controls_spec(), report_registry)
    cells = expand(spec, report_registry)
    controls = [c for c in cells if c.prune.pruner == DENSE and c.prune.fine_tune is not None]
    assert len(controls) == 2  # one budget x 2 seeds x 1 runtime x 1 batch size
    for control in controls:
        assert control.prune.fine_tune.model_dump() == {**FINE_TUNE}
        assert not control.is_reference and control.prune.is_control
        plain = next(c for c in cells if c.key == control.dense_key)
        assert plain.prune.is_identity and plain.prune.train == control.prune.train
        assert control.prune.key != plain.prune.key
    # a second budget gets its own control; the plain dense cells keep their keys
    two = controls_spec()
    two["pruning"].append({"pruner": "magnitude", "sparsities": [0.9], "fine_tune": {"epochs": 2, "lr": 0.0005}})
    more = expand(load(two, report_registry), report_registry)
    assert len([c for c in more if c.prune.is_control]) == 4
    one_shot = controls_spec(pruning=[{"pruner": "magnitude", "sparsities": [0.5]}])
    assert {c.key for c in expand(load(one_shot, report_registry), report_registry)} <= {c.key for c in cells}


@pytest.fixture(scope="module")
def controls_store(tmp_path_factory: pytest.TempPathFactory, report_registry: Any) -> Path:
    from tsbench_core.runner import run

    path = tmp_path_factory.mktemp("controls") / "results.db"
    summary = run(load(controls_spec(), report_registry), path, registry=report_registry)
    assert summary.failed == 0, summary.failures
    return path


def test_control_is_the_dense_model_given_the_same_training(controls_store: Path, report_registry: Any) -> None:
    """Recompute each control independently: the dense checkpoint, trained once more with the fine-tuning
    config and the seed, evaluated on the test split."""
    from tsbench_core.pipeline import Workspace, build_dense, load_splits
    from tsbench_core.steps.artifacts import load_weights
    from tsbench_core.steps.train import evaluate, train_model

    spec = load(controls_spec(), report_registry)
    ws = Workspace(controls_store.parent / "artifacts", None, report_registry)
    with Store(controls_store) as store:
        rows = store.rows(NAME)
    for cell in (c for c in expand(spec, report_registry) if c.prune.is_control):
        job = cell.prune.train
        splits = load_splits(ws, job)
        model = build_dense(ws, job, splits)
        model.load_state_dict(load_weights(ws.cached(job.key)))
        train_model(model, splits, job.training, seed=job.seed, epochs=FINE_TUNE["epochs"], lr=FINE_TUNE["lr"],
                    max_train_batches=FINE_TUNE["max_train_batches"])
        expected = evaluate(model, splits, job.training.batch_size, max_batches=job.training.max_eval_batches)
        row = next(r for r in rows if r["cell_key"] == cell.key)
        assert row["pruner"] == DENSE and row["fine_tuned"] == 1 and json.loads(row["fine_tune"]) == FINE_TUNE
        assert row["mse"] == pytest.approx(expected["mse"], rel=1e-6)
        plain = next(r for r in rows if r["cell_key"] == cell.dense_key)
        assert plain["mse"] != row["mse"], "the control got no extra training"


def test_fine_tuned_rows_are_compared_with_their_control(controls_store: Path, tmp_path: Path) -> None:
    with Store(controls_store) as store:
        rows = store.rows(NAME)
    write_report(controls_store, NAME, tmp_path, [])
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    table = {(r[1], r[2], r[3]): r for r in markdown_table_rows(markdown, "Accuracy")}
    ft_label = "1 epoch, lr 0.0005, ≤ 3 batches/epoch"

    def mse(pruner: str, target: float, fine_tuned: int) -> np.ndarray:
        return np.array([r["mse"] for r in sorted(rows, key=lambda r: r["seed"]) if r["pruner"] == pruner
                         and r["target_sparsity"] == target and r["fine_tuned"] == fine_tuned])

    plain, control = mse("dense", 0.0, 0), mse("dense", 0.0, 1)
    expected = {
        ("magnitude", ft_label, "0.000"): (mse("magnitude", 0.0, 1), control, f"dense + {ft_label}"),
        ("magnitude", ft_label, "0.500"): (mse("magnitude", 0.5, 1), control, f"dense + {ft_label}"),
        ("magnitude", "none", "0.500"): (mse("magnitude", 0.5, 0), plain, "dense"),
        ("dense", ft_label, "–"): (control, plain, "dense"),
    }
    for key, (values, reference, against) in expected.items():
        change = 100.0 * (values / reference - 1.0)
        line = table[key]
        assert line[13] == f"{change.mean():+.1f}% ± {change.std(ddof=1):.1f}%", key
        assert line[-1] == against
    # pruning nothing and fine-tuning is the control: no change, not credited with the extra epoch
    assert np.allclose(mse("magnitude", 0.0, 1), control, rtol=1e-6)
    assert table[("dense", "none", "–")][13:] == ["–", "–", "–"]


# --- a synthetic store of a few hundred rows ---------------------------------------------------------------

MODELS = ("dlinear", "transformer", "informer", "patchtst")
RUNTIMES = ("torch-eager", "onnxruntime", "deepsparse")
SPARSITIES = (0.2, 0.5, 0.8, 0.9)
SEEDS = (0, 1)
FT = json.dumps({"epochs": 1, "lr": 0.0005, "max_train_batches": None})


def synthetic_rows() -> list[dict[str, Any]]:
    """Dense, its fine-tuning control and two pruners (one-shot and fine-tuned) at four sparsities for four models
    on three runtimes and two seeds: MSE grows with sparsity (less when fine-tuned), latency falls with it."""
    rng = np.random.default_rng(0)
    keys = itertools.count()
    rows = []
    for m_i, model in enumerate(MODELS):
        for seed in SEEDS:
            dense_mse = 0.4 + 0.05 * m_i + 0.01 * seed
            jobs = [("dense", 0.0, 0, dense_mse), ("dense", 0.0, 1, dense_mse * 0.99)]
            for pruner, slope in (("magnitude", 0.3), ("random", 1.0)):
                for sparsity in SPARSITIES:
                    for fine_tuned in (0, 1):
                        grow = slope * sparsity ** 3 * (0.5 if fine_tuned else 1.0)
                        jobs.append((pruner, sparsity, fine_tuned, dense_mse * (1 + grow) * rng.uniform(0.995, 1.005)))
            for r_i, runtime in enumerate(RUNTIMES):
                for pruner, sparsity, fine_tuned, mse in jobs:
                    latency = (2.0 + m_i + r_i) * (1.0 - 0.8 * sparsity * (r_i == 2)) * rng.uniform(0.97, 1.03)
                    rows.append({
                        "cell_key": f"k{next(keys)}", "spec_name": "big", "dataset": "etth1", "seq_len": 96,
                        "label_len": 48, "pred_len": 96, "model": model, "seed": seed, "pruner": pruner,
                        "target_sparsity": sparsity, "achieved_sparsity": sparsity, "fine_tuned": fine_tuned,
                        "fine_tune": FT if fine_tuned else None, "runtime": runtime, "batch_size": 32,
                        "status": "ok", "mse": mse, "mae": mse, "latency_ms_median": latency,
                        "params_total": 1000, "params_nonzero": int(1000 * (1 - sparsity)), "macs_dense": 5000,
                        "macs_effective": int(5000 * (1 - sparsity)) + 1,
                        "speedup_vs_dense": None if (pruner, fine_tuned) == ("dense", 0) else 1.0,
                    })
    return rows


@pytest.fixture(scope="module")
def big_section() -> Any:
    (section,) = group_sections(synthetic_rows())
    assert len(section.rows) >= 300
    return section


def _legend_texts(fig: Any) -> list[str]:
    legends = list(fig.legends) + [c for ax in fig.axes for c in ax.get_children() if isinstance(c, Legend)]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_every_plot_has_a_legend_entry_for_each_model(big_section: Any) -> None:
    for stem, _, draw in PLOTS:
        fig = draw(big_section)
        if fig is None:
            assert stem == "int8_size_tradeoff"  # no INT8 rows in the store
            continue
        texts = _legend_texts(fig)
        for model in MODELS:
            assert any(model in t for t in texts), f"{stem}: no legend entry names {model}"


def test_pareto_labels_sit_on_the_front_without_overlapping(big_section: Any) -> None:
    fig = accuracy_latency_pareto(big_section)
    renderer = fig.canvas.get_renderer()
    notes = [c for c in fig.axes[0].get_children() if isinstance(c, Annotation)]
    boxes = [n.get_window_extent(renderer) for n in notes]
    assert boxes, "the front is not labelled"
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    inside = fig.axes[0].get_window_extent(renderer)
    assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 for b in boxes)


def _expected_highest(rows: list[dict[str, Any]], model: str, fine_tuned: int, within: float) -> str:
    """Independently: mean over seeds of the per-seed change vs the right dense row, then the highest sparsity."""
    def mse_of(pruner: str, sparsity: float, ft: int, seed: int) -> float:
        return next(r["mse"] for r in rows if (r["model"], r["pruner"], r["target_sparsity"], r["fine_tuned"],
                                               r["seed"], r["runtime"]) == (model, pruner, sparsity, ft, seed,
                                                                             RUNTIMES[0]))
    best = None
    for pruner in ("magnitude", "random"):
        for sparsity in SPARSITIES:
            change = np.mean([mse_of(pruner, sparsity, fine_tuned, s) / mse_of("dense", 0.0, fine_tuned, s) - 1
                              for s in SEEDS]) * 100
            if change <= within and (best is None or sparsity > best[0]):
                best = (sparsity, pruner)
    return "none within" if best is None else f"{best[0]:.3f} {best[1]}"


def test_summary_table_opens_the_report(big_section: Any, tmp_path: Path) -> None:
    rows = big_section.rows
    table = summary_table(big_section)
    assert [line[0] for line in table.rows] == list(MODELS)
    for line in table.rows:
        for i, (fine_tuned, within) in enumerate(itertools.product((0, 1), (1.0, 5.0, 10.0))):
            assert line[1 + i] == _expected_highest(rows, line[0], fine_tuned, within), (line[0], fine_tuned, within)
    assert table.headers[-3:] == [f"fastest ≤5 %: {rt}" for rt in RUNTIMES]
    # deepsparse is the runtime whose latency falls with sparsity: its fastest setting within 5 % is pruned
    assert all(line[-1].split("@")[0] in ("magnitude", "random") for line in table.rows)
    with Store(tmp_path / "big.db") as store:
        for row in rows:
            store.put(row)
    write_report(tmp_path / "big.db", None, tmp_path / "out", [])
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    first_table = next(line for line in markdown.splitlines() if line.startswith("**"))
    assert first_table.startswith("**Summary")
    assert markdown.index("## Summary") < markdown.index("## etth1, horizon 96")
