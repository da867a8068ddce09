"""DLinear: shapes, parameter counts, decomposition, gradients, seeding, checkpoints, export, training."""

from __future__ import annotations

import pydantic
import pytest
import torch
import torch.nn.functional as F
from model_checks_b import (
    build,
    check_eval_deterministic,
    check_gradients,
    check_onnx,
    check_seeded,
    check_shapes,
    check_state_dict_round_trip,
    check_training_lowers_val_loss,
    linear,
    n_params,
    params_model,
    shape,
)

from plugins.models.layers.decomposition import MovingAverage, SeriesDecomposition

SMALL = {"moving_avg": 5}


def dlinear_count(seq_len: int, pred_len: int, channels: int, individual: bool) -> int:
    """Two linear maps seq_len -> pred_len (seasonal, trend), shared or one pair per channel."""
    return (channels if individual else 1) * 2 * linear(seq_len, pred_len)


@pytest.mark.parametrize("individual", [False, True])
def test_shapes(individual: bool) -> None:
    check_shapes("dlinear", [1, 24, 96, 100], individual=individual, **SMALL)


def test_defaults_are_the_etth1_script() -> None:
    params = params_model("dlinear")()
    assert (params.moving_avg, params.individual) == (25, False)


@pytest.mark.parametrize("individual", [False, True])
def test_parameter_count_at_etth1_defaults(individual: bool) -> None:
    model = build("dlinear", shape(96, 96, 7), individual=individual)
    assert n_params(model) == dlinear_count(96, 96, 7, individual)


def test_parameter_count_other_horizon() -> None:
    assert n_params(build("dlinear", shape(48, 36, 5), individual=True)) == dlinear_count(36, 48, 5, True)


def test_even_moving_average_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="moving_avg"):
        params_model("dlinear")(moving_avg=24)


@pytest.mark.parametrize("kernel", [1, 3, 25, 201])
def test_moving_average_equals_edge_padded_pooling(kernel: int) -> None:
    x = torch.randn(2, 96, 3)
    half = (kernel - 1) // 2
    padded = F.pad(x.transpose(1, 2), (half, half), mode="replicate")
    want = F.avg_pool1d(padded, kernel, stride=1).transpose(1, 2)
    assert torch.allclose(MovingAverage(kernel)(x), want, atol=1e-5)


def test_decomposition_sums_back_and_keeps_constant_trend() -> None:
    x = torch.randn(2, 40, 3)
    seasonal, trend = SeriesDecomposition(7)(x)
    assert torch.allclose(seasonal + trend, x, atol=1e-6)
    flat = torch.full((1, 40, 2), 3.5)
    assert torch.allclose(SeriesDecomposition(7)(flat)[1], flat, atol=1e-6)


def test_initial_weights_average_the_window() -> None:
    # both maps start as the window mean, so with zero biases a constant series is forecast as itself
    model = build("dlinear", shape(24, 48, 3)).eval()
    torch.nn.init.zeros_(model.linear_seasonal.bias)
    torch.nn.init.zeros_(model.linear_trend.bias)
    x = torch.full((1, 48, 3), 2.0)
    with torch.no_grad():
        out = model(x, None, None, None)
    assert torch.allclose(out, torch.full((1, 24, 3), 2.0), atol=1e-5)


def test_individual_channels_are_independent() -> None:
    model = build("dlinear", shape(24, 48, 3), individual=True, **SMALL).eval()
    for layer in model.linear_seasonal:
        torch.nn.init.normal_(layer.weight)
    x = torch.randn(1, 48, 3)
    y = x.clone()
    y[..., 0] += 1.0
    with torch.no_grad():
        diff = model(y, None, None, None) - model(x, None, None, None)
    assert diff[..., 0].abs().max() > 0
    assert diff[..., 1:].abs().max() == 0


@pytest.mark.parametrize("individual", [False, True])
def test_gradients_reach_every_parameter(individual: bool) -> None:
    check_gradients("dlinear", shape(), individual=individual, **SMALL)


def test_seeded_outputs_are_identical() -> None:
    # DLinear's initial weights are constant; the biases are what the seed changes
    check_seeded("dlinear", shape(), **SMALL)
    check_eval_deterministic("dlinear", shape(), **SMALL)


def test_state_dict_round_trip(tmp_path) -> None:
    check_state_dict_round_trip("dlinear", shape(), tmp_path, individual=True, **SMALL)


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("individual", [False, True])
def test_onnx_export_matches_torch(opset: int, individual: bool) -> None:
    check_onnx("dlinear", shape(), opset, individual=individual)


def test_onnx_export_matches_torch_on_real_etth1(etth1_test_batch) -> None:
    check_onnx("dlinear", shape(96, 96, 7), 13, inputs=etth1_test_batch.inputs, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss("dlinear", epochs=3, lr=1e-2, moving_avg=25)
