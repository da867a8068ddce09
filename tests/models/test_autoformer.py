"""Autoformer: Auto-Correlation against a literal roll-and-sum implementation, deploy form, the usual checks."""

from __future__ import annotations

import math

import pytest
import torch
from model_checks_a import (
    ETTH1,
    SMALL,
    build,
    check_deploy_equivalence,
    check_gradients,
    check_onnx,
    check_round_trip,
    check_seeded,
    check_shapes,
    check_training_lowers_val_loss,
    count_autoformer,
    n_params,
    set_deploy,
    small_shape,
)

from plugins.models.autoformer import AutoformerParams
from plugins.models.layers.autocorrelation import AutoCorrelation, top_k_mask, top_k_mask_by_rank
from tsbench_core.data import example_inputs

NAME = "autoformer"


def literal_auto_correlation(q, k, v, factor, batch_shared):
    """Auto-Correlation from the paper (Wu et al., 2021, sec. 3.2) in float64: R(tau) by its definition
    (a sum over time, no FFT), top-k delays, softmax weights, and a sum of rolled values."""
    batch, length, heads, dim = q.shape
    source = k.shape[1]
    if length > source:
        k = torch.cat([k, torch.zeros(batch, length - source, heads, dim)], 1)
        v = torch.cat([v, torch.zeros(batch, length - source, heads, v.shape[-1])], 1)
    k, v = k[:, :length].double(), v[:, :length].double()
    q = q.double()
    n = 2 * (length // 2)
    # R(tau) = sum_t q[t + tau] k[t] (circular), averaged over heads and channels; as the reference, an odd
    # length keeps n = L - 1 lags of the length-n inverse transform, which folds q*k's circular correlation
    corr = torch.zeros(batch, n, dtype=torch.float64)
    spectrum_q = torch.fft.rfft(q, dim=1)
    spectrum_k = torch.fft.rfft(k, dim=1)
    folded = torch.fft.irfft(spectrum_q * spectrum_k.conj(), dim=1)  # only used when L is odd
    for tau in range(n):
        if n == length:
            rolled = torch.roll(q, -tau, dims=1)
            corr[:, tau] = (rolled * k).sum(1).mean(dim=(1, 2))
        else:
            corr[:, tau] = folded[:, tau].mean(dim=(1, 2))
    top_k = int(factor * math.log(length))
    out = torch.zeros_like(v)
    for b in range(batch):
        lags = torch.argsort(corr.mean(0) if batch_shared else corr[b], descending=True)[:top_k]
        weights = torch.softmax(corr[b, lags], 0)
        for w, lag in zip(weights, lags.tolist(), strict=True):
            out[b] += w * torch.roll(v[b], -lag, dims=0)
    return out


@pytest.mark.parametrize(("length", "source"), [(16, 16), (20, 12), (12, 20), (15, 15)])
@pytest.mark.parametrize("training", [False, True])
def test_auto_correlation_matches_the_definition(length: int, source: int, training: bool) -> None:
    g = torch.Generator().manual_seed(length + source)
    q, k, v = (torch.randn(3, n, 2, 4, generator=g) for n in (length, source, source))
    block = AutoCorrelation(factor=2).train(training)
    want = literal_auto_correlation(q, k, v, 2, batch_shared=training)
    for deploy in (False, True):
        block.set_deploy_form(deploy)
        got, _ = block(q, k, v)
        assert got.shape == (3, length, 2, 4)
        assert torch.allclose(got.double(), want, atol=1e-5), (deploy, float((got.double() - want).abs().max()))


def test_rank_top_k_equals_torch_top_k_and_keeps_k_with_ties() -> None:
    scores = torch.randn(5, 31, generator=torch.Generator().manual_seed(0))
    assert torch.equal(top_k_mask_by_rank(scores, 7), top_k_mask(scores, 7))
    tied = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert torch.equal(top_k_mask_by_rank(tied, 2), torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]]))


def test_defaults() -> None:
    p = AutoformerParams()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_layers, p.d_ff, p.factor, p.moving_avg) == (
        512, 8, 2, 1, 2048, 3, 25)
    with pytest.raises(ValueError, match="odd"):
        AutoformerParams(moving_avg=24)


def test_output_shapes() -> None:
    check_shapes(NAME, [1, 8, 24], moving_avg=5, **SMALL)


def test_parameter_count_at_etth1_defaults() -> None:
    assert n_params(build(NAME, ETTH1)) == count_autoformer(ETTH1) == 10_535_943


def test_parameter_count_small_config() -> None:
    shape = small_shape(c_out=1)
    model = build(NAME, shape, d_model=24, n_heads=3, d_ff=40, e_layers=3, d_layers=2, moving_avg=5)
    assert n_params(model) == count_autoformer(shape, d=24, e=3, dl=2, d_ff=40)


def test_gradients_reach_every_parameter() -> None:
    check_gradients(NAME, moving_avg=5, **SMALL)


def test_same_seed_same_model() -> None:
    check_seeded(NAME, moving_avg=5, **SMALL)


def test_state_dict_round_trip(tmp_path) -> None:
    check_round_trip(NAME, tmp_path, moving_avg=5, **SMALL)


def test_deploy_form_matches_on_random_inputs() -> None:
    shape = small_shape()
    model = build(NAME, shape, moving_avg=5, **SMALL)
    assert set_deploy(model) == 4  # two encoder self-correlations, decoder self- and cross-correlation
    check_deploy_equivalence(model, example_inputs(shape, 4))


def test_deploy_form_matches_on_real_etth1(etth1_test_batch) -> None:
    model = build(NAME, ETTH1, d_model=64, n_heads=8, d_ff=128)
    check_deploy_equivalence(model, etth1_test_batch.inputs)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx(NAME, opset, moving_avg=5, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss(NAME, moving_avg=5, **SMALL)
