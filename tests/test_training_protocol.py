"""The literature's training protocol as the reference implementations run it: the ``type1`` learning-rate
rule and the training loader's ``drop_last``; and the cell keys of specs written before ``drop_last`` existed."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from plugins.datasets.synthetic import SyntheticDataset, SyntheticParams
from plugins.models.informer import InformerParams
from tsbench_core.cells import TrainJob
from tsbench_core.data import Windows
from tsbench_core.spec import DatasetEntry, TrainingConfig
from tsbench_core.steps.train import lr_at, train_model


def reference_type1_rates(lr: float, epochs: int) -> list[float]:
    """What the reference loop does: the optimizer starts at ``lr``; after the 1-based epoch ``e`` it calls
    ``adjust_learning_rate(epoch=e)``, which sets ``lr * 0.5 ** ((e - 1) // 1)`` for the epochs that follow."""
    current, rates = lr, []
    for e in range(1, epochs + 1):
        rates.append(current)
        current = lr * 0.5 ** ((e - 1) // 1)
    return rates


def test_type1_schedule_is_the_reference_rule() -> None:
    rates = [lr_at(1e-4, "type1", epoch, 10) for epoch in range(10)]
    assert rates == pytest.approx(reference_type1_rates(1e-4, 10), rel=1e-12)
    assert rates[:3] == pytest.approx([1e-4, 1e-4, 5e-5])  # the first halving comes after the second epoch


def test_halve_schedule_halves_after_every_epoch() -> None:
    assert [lr_at(1.0, "halve", e, 4) for e in range(4)] == pytest.approx([1.0, 0.5, 0.25, 0.125])


class _Last(nn.Module):
    """Forecasts the last input value (one trainable scale, so the optimizer has something to step)."""

    def __init__(self, pred_len: int) -> None:
        super().__init__()
        self.pred_len = pred_len
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):  # noqa: ANN001, ANN201
        return self.scale * x_enc[:, -1:, :].expand(-1, self.pred_len, -1)


@pytest.mark.parametrize("drop_last", [False, True])
def test_drop_last_drops_the_partial_training_batch(drop_last: bool) -> None:
    params = SyntheticParams(length=300, n_vars=2, periods=[12.0])
    splits = SyntheticDataset().load(params, Windows(seq_len=16, label_len=8, pred_len=8))
    n, batch = len(splits.train), 32
    assert n % batch, "the test needs a partial last batch"
    steps: list[float] = []
    config = TrainingConfig(epochs=1, batch_size=batch, lr=1e-3, device="cpu", drop_last=drop_last)
    train_model(_Last(8), splits, config, seed=0, on_step=steps.append)
    assert len(steps) == (n // batch if drop_last else n // batch + 1)


def _old_key(job: TrainJob) -> str:
    """A training key as computed before ``drop_last`` was a training field (the fields then, by name)."""
    fields = ("epochs", "batch_size", "lr", "patience", "lr_schedule", "device", "amp", "max_train_batches",
              "max_eval_batches")
    training = {f: getattr(job.training, f) for f in fields}
    payload = {"dataset": {**job.dataset.model_dump(mode="json"), "pred_len": job.pred_len}, "model": job.model,
               "model_params": job.model_params.model_dump(mode="json"), "training": training, "seed": job.seed}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_training_keys_unchanged_unless_drop_last_is_set() -> None:
    dataset = DatasetEntry(plugin="etth1", seq_len=96, label_len=48, pred_len=[96])
    job = TrainJob(dataset, 96, "informer", InformerParams(d_model=512), TrainingConfig(), 2021, None)
    assert job.key == _old_key(job)
    dropping = TrainJob(dataset, 96, "informer", InformerParams(d_model=512), TrainingConfig(drop_last=True), 2021,
                        None)
    assert dropping.key != job.key
