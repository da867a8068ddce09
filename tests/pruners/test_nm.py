"""nm: every group of M input weights keeps its N largest; the 2:4 checker; masks through fine-tuning."""

from __future__ import annotations

import pytest
import torch
from pruner_toy import ToyForecaster, toy_context, toy_inputs, train_with_masks

from plugins.pruners.nm import NMPruner, is_nm_sparse, nm_mask
from tsbench_core.errors import CellError


def test_nm_mask_keeps_largest_in_each_group():
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.5, -0.2, 0.0]])
    assert nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]


def test_is_nm_sparse():
    assert is_nm_sparse(torch.tensor([[1.0, 0, 0, 2, 0, 0, 0, 0]]))
    assert not is_nm_sparse(torch.tensor([[1.0, 1, 1, 0, 0, 0, 0, 0]]))
    assert not is_nm_sparse(torch.ones(2, 6))  # last dim not a multiple of 4
    assert not is_nm_sparse(torch.zeros(4))  # not 2-D
    assert is_nm_sparse(torch.tensor([[1.0, 1, 1, 0]]), n=3, m=4)


def test_two_four_pruning_of_toy_model():
    torch.manual_seed(0)
    model = ToyForecaster()
    result = NMPruner().prune(model, 0.5, NMPruner.params_model(), toy_context())
    assert set(result.masks) == {"body.0.weight", "body.2.weight", "time.weight"}  # Linear only, no output
    params = dict(model.named_parameters())
    for name in result.masks:
        assert is_nm_sparse(params[name])
        assert float((params[name] == 0).float().mean()) == pytest.approx(0.5)
    assert result.info["achieved_sparsity"] == pytest.approx(0.5)
    assert result.structure == {"n": 2, "m": 4}
    assert int((model.embed.weight == 0).sum()) == 0
    out = model(*toy_inputs())
    assert out.shape == (2, 4, 3) and torch.isfinite(out).all()
    train_with_masks(model, result.masks, steps=4)
    assert all(is_nm_sparse(params[name]) for name in result.masks)


def test_n_from_target_and_skipped_layers():
    model = ToyForecaster()
    result = NMPruner().prune(model, 0.75, NMPruner.params_model(n=None, m=8), toy_context())
    assert result.info["pattern"] == "2:8"
    assert result.info["skipped_layers"] == ["time.weight"]  # 12 inputs: not a multiple of 8
    assert is_nm_sparse(model.body[0].weight, 2, 8)


def test_mismatched_target_and_bad_params():
    with pytest.raises(CellError, match="sparsities"):
        NMPruner().prune(ToyForecaster(), 0.3, NMPruner.params_model(), toy_context())
    with pytest.raises(ValueError):
        NMPruner.params_model(n=4, m=4)
    with pytest.raises(ValueError):
        NMPruner.params_model(module_types=["Conv1d"])
