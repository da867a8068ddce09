"""iTransformer: shapes, parameter counts, variate tokens, gradients, seeding, checkpoints, export."""

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
    layer_norm,
    linear,
    n_params,
    params_model,
    shape,
)

from tsbench_core.data import example_inputs

SMALL = {"d_model": 16, "n_heads": 2, "e_layers": 2, "d_ff": 32}


def itransformer_count(seq_len: int, pred_len: int, d_model: int, e_layers: int, d_ff: int) -> int:
    """Token embedding seq_len -> d_model, e_layers encoder layers, final LayerNorm, projection to pred_len;
    independent of the number of variates."""
    return (linear(seq_len, d_model) + e_layers * encoder_layer(d_model, d_ff) + layer_norm(d_model)
            + linear(d_model, pred_len))


def test_shapes() -> None:
    check_shapes("itransformer", [1, 24, 96, 100], **SMALL)


def test_shapes_without_marks() -> None:
    check_shapes("itransformer", [24], use_marks=False, **SMALL)


def test_defaults_are_the_etth1_script() -> None:
    p = params_model("itransformer")()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_ff, p.dropout, p.activation) == (128, 8, 2, 128, 0.1, "gelu")


def test_parameter_count_at_etth1_defaults() -> None:
    model = build("itransformer", shape(96, 96, 7))
    assert n_params(model) == itransformer_count(96, 96, 128, 2, 128)


def test_parameter_count_does_not_depend_on_variates() -> None:
    for channels in (1, 3, 21):
        model = build("itransformer", shape(36, 48, channels), **SMALL)
        assert n_params(model) == itransformer_count(48, 36, 16, 2, 32)


def test_variates_are_permutation_equivariant() -> None:
    # no position among variate tokens: permuting the input channels permutes the forecast the same way
    data_shape = shape(24, 48, 4)
    model = build("itransformer", data_shape, **SMALL).eval()
    x_enc, x_mark, x_dec, x_mark_dec = example_inputs(data_shape, 2)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = model(x_enc, x_mark, x_dec, x_mark_dec)
        permuted = model(x_enc[..., order], x_mark, x_dec, x_mark_dec)
    assert torch.allclose(permuted, out[..., order], atol=1e-5)


def test_marks_are_tokens() -> None:
    data_shape = shape(24, 48, 3)
    inputs = example_inputs(data_shape, 2)
    other_marks = (inputs[0], inputs[1] + 0.25, inputs[2], inputs[3])
    with torch.no_grad():
        with_marks = build("itransformer", data_shape, **SMALL).eval()
        assert not torch.allclose(with_marks(*inputs), with_marks(*other_marks))
        without = build("itransformer", data_shape, use_marks=False, **SMALL).eval()
        assert torch.equal(without(*inputs), without(*other_marks))


def test_gradients_reach_every_parameter() -> None:
    check_gradients("itransformer", shape(), **SMALL)


def test_seeded_outputs_are_identical() -> None:
    check_seeded("itransformer", shape(), **SMALL)
    check_eval_deterministic("itransformer", shape(), **SMALL)


def test_state_dict_round_trip(tmp_path) -> None:
    check_state_dict_round_trip("itransformer", shape(), tmp_path, **SMALL)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx("itransformer", shape(), opset, **SMALL)


def test_onnx_export_matches_torch_on_real_etth1(etth1_test_batch) -> None:
    check_onnx("itransformer", shape(96, 96, 7), 13, inputs=etth1_test_batch.inputs, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss("itransformer", epochs=2, lr=1e-3, **SMALL)
