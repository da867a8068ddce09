"""PatchTST: shapes, parameter counts, patching, instance normalisation, channel independence, export."""

from __future__ import annotations

import pytest
import torch
from model_checks_b import (
    build,
    check_eval_deterministic,
    check_gradients,
    check_onnx,
    check_seeded,
    check_shapes,
    check_state_dict_round_trip,
    check_training_lowers_val_loss,
    encoder_layer,
    linear,
    n_params,
    params_model,
    shape,
)

from plugins.models.layers.patching import Patcher

SMALL = {"d_model": 16, "n_heads": 2, "e_layers": 2, "d_ff": 32, "patch_len": 8, "stride": 4}


def patchtst_count(seq_len: int, pred_len: int, d_model: int, e_layers: int, d_ff: int, patch_len: int,
                   stride: int) -> int:
    """Bias-free patch embedding, e_layers encoder layers, a final BatchNorm (weight and bias), and a
    flatten head over ``int((seq_len - patch_len) / stride + 2)`` patches (the end padded by ``stride``)."""
    patch_num = int((seq_len - patch_len) / stride + 2)
    return (linear(patch_len, d_model, bias=False) + e_layers * encoder_layer(d_model, d_ff) + 2 * d_model
            + linear(d_model * patch_num, pred_len))


def test_shapes() -> None:
    check_shapes("patchtst", [1, 24, 96, 100], **SMALL)


def test_shapes_with_uneven_patching() -> None:
    # (50 - 8) / 5 is not an integer: the last window is dropped, as in the reference
    check_shapes("patchtst", [24], seq_len=50, **{**SMALL, "stride": 5})


def test_defaults_are_the_etth1_script() -> None:
    p = params_model("patchtst")()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_ff, p.patch_len, p.stride, p.dropout) == (
        512, 2, 1, 2048, 16, 8, 0.1)


def test_parameter_count_at_etth1_defaults() -> None:
    model = build("patchtst", shape(96, 96, 7))
    assert n_params(model) == patchtst_count(96, 96, 512, 1, 2048, 16, 8)


@pytest.mark.parametrize(("seq_len", "pred_len", "stride"), [(48, 24, 4), (50, 7, 5)])
def test_parameter_count_small(seq_len: int, pred_len: int, stride: int) -> None:
    model = build("patchtst", shape(pred_len, seq_len, 3), **{**SMALL, "stride": stride})
    assert n_params(model) == patchtst_count(seq_len, pred_len, 16, 2, 32, 8, stride)


def test_patcher_windows_and_edge_padding() -> None:
    x = torch.arange(10, dtype=torch.float32)[None]
    patches = Patcher(seq_len=10, patch_len=4, stride=3, pad=3)(x)
    # padded series 0..9,9,9,9 -> windows starting at 0, 3, 6, 9
    want = torch.tensor([[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 9, 9, 9]], dtype=torch.float32)
    assert torch.equal(patches[0], want)
    tiles = Patcher(seq_len=10, patch_len=4, stride=4, pad=2)(x)  # non-overlapping
    assert torch.equal(Patcher(8, 4, 4, 0)(x[:, :8])[0], x[0, :8].reshape(2, 4))  # the reshape path
    assert torch.equal(tiles[0], torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 9, 9]], dtype=torch.float32))


def test_channels_are_independent() -> None:
    model = build("patchtst", shape(24, 48, 3), **SMALL).eval()
    x = torch.randn(2, 48, 3)
    y = x.clone()
    y[..., 1] = torch.randn(2, 48)
    with torch.no_grad():
        diff = model(y, None, None, None) - model(x, None, None, None)
    assert diff[..., 1].abs().max() > 0
    assert diff[..., [0, 2]].abs().max() == 0


def test_instance_normalisation_makes_the_forecast_affine_equivariant() -> None:
    # f(a*x + b) = a*f(x) + b per channel, up to the eps inside the standard deviation
    model = build("patchtst", shape(24, 48, 3), **SMALL).eval()
    x = torch.randn(2, 48, 3)
    scale, shift = torch.tensor([3.0, 0.5, 10.0]), torch.tensor([-4.0, 2.0, 100.0])
    with torch.no_grad():
        base = model(x, None, None, None)
        moved = model(x * scale + shift, None, None, None)
    assert torch.allclose(moved, base * scale + shift, rtol=1e-3, atol=1e-2)


def test_gradients_reach_every_parameter() -> None:
    check_gradients("patchtst", shape(), **SMALL)


def test_seeded_outputs_are_identical() -> None:
    check_seeded("patchtst", shape(), **SMALL)
    check_eval_deterministic("patchtst", shape(), **SMALL)


def test_state_dict_round_trip(tmp_path) -> None:
    check_state_dict_round_trip("patchtst", shape(), tmp_path, **SMALL)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx("patchtst", shape(), opset, **SMALL)


def test_onnx_export_matches_torch_on_real_etth1(etth1_test_batch) -> None:
    check_onnx("patchtst", shape(96, 96, 7), 13, inputs=etth1_test_batch.inputs, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss("patchtst", epochs=2, lr=1e-3, **SMALL)
