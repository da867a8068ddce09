"""specs/study (issue #22): the grid the README describes, counted independently, and dense trainings shared with
the reproduction spec."""

from __future__ import annotations

import pytest
from tsbench_testing import REPO

from tsbench_core.cells import DENSE, expand
from tsbench_core.spec import load_spec

STUDY = REPO / "specs" / "study"
MODELS = ("dlinear", "itransformer", "patchtst", "transformer", "informer", "autoformer", "fedformer", "crossformer")
THREE_SEEDS = {"dlinear", "itransformer", "patchtst", "transformer"}


def pruned_cells_per_seed(structured: bool) -> int:
    """The README's grid: (densities x runtimes x batch sizes) per pruning row."""
    one_shot_grid = 11 + 1  # 0.8**n for n = 0..10, and 0.05
    rows = [
        one_shot_grid * 2 * 1,  # magnitude, one-shot: torch-eager + deepsparse, batch 32
        3 * 2 * 2,  # magnitude + fine-tuning at 0.5/0.2/0.1: two runtimes, batches 32 and 1
        1 * 2 * 2,  # gradual to 0.1
        1 * 2 * 2,  # N:M 2:4
        1 * 1 * 1,  # INT8 at 0.1 on deepsparse, batch 32
    ]
    if structured:
        rows += [one_shot_grid * 1 * 1,  # structured, one-shot: onnxruntime, batch 32
                 2 * 2 * 2]  # structured + fine-tuning at 0.5/0.2: onnxruntime + torch-compile, batches 32 and 1
    return sum(rows)


@pytest.fixture(scope="module")
def study(registry):
    return {model: expand(load_spec(STUDY / f"etth1_{model}.json", registry), registry) for model in MODELS}


def test_every_model_has_the_grid_once_per_seed(study):
    for model, cells in study.items():
        seeds = {c.prune.train.seed for c in cells}
        assert seeds == ({2021, 2022, 2023} if model in THREE_SEEDS else {2021}), model
        for seed in seeds:
            mine = [c for c in cells if c.prune.train.seed == seed]
            pruned = [c for c in mine if c.prune.pruner != DENSE]
            assert len(pruned) == pruned_cells_per_seed(structured=model != "dlinear"), model
            references = {(c.runtime, c.batch_size) for c in mine if c.is_reference}
            assert references == {(r, b) for r in ("torch-eager", "deepsparse", "onnxruntime", "torch-compile")
                                  for b in (32, 1)}
            controls = {(c.runtime, c.batch_size) for c in mine if c.prune.pruner == DENSE and c.prune.fine_tune}
            fine_tuned = {(c.runtime, c.batch_size) for c in pruned if c.prune.fine_tune and c.quantize is None}
            assert controls == fine_tuned, model  # issue #23's control runs where its fine-tuned cells run
            densities = sorted(round(1 - c.prune.sparsity, 6) for c in pruned
                               if c.prune.pruner == "magnitude" and c.prune.fine_tune is None
                               and c.runtime == "deepsparse")
            assert densities == sorted([0.05, *(round(0.8**n, 6) for n in range(11))])


def test_the_study_trains_seed_2021_as_the_reproduction_spec_does(study, registry):
    reproduction = expand(load_spec(REPO / "specs" / "paper" / "etth1_dense.json", registry), registry)
    dense_keys = {c.prune.train.model: c.prune.train.key for c in reproduction}
    for model, cells in study.items():
        assert {c.prune.train.key for c in cells if c.prune.train.seed == 2021} == {dense_keys[model]}, model
