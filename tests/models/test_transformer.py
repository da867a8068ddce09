"""Vanilla Transformer: shapes, parameter count, gradients, seeding, checkpoints, export, training."""

from __future__ import annotations

import pytest
import torch
from model_checks_a import (
    ETTH1,
    SMALL,
    build,
    check_gradients,
    check_onnx,
    check_round_trip,
    check_seeded,
    check_shapes,
    check_training_lowers_val_loss,
    count_transformer,
    n_params,
    small_shape,
)

from plugins.models.transformer import TransformerParams
from tsbench_core.data import example_inputs

NAME = "transformer"


def test_defaults_are_the_etth1_settings() -> None:
    p = TransformerParams()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_layers, p.d_ff, p.factor) == (512, 8, 2, 1, 2048, 3)
    assert (p.dropout, p.embed, p.activation) == (0.1, "timeF", "gelu")


def test_rejects_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TransformerParams(d_model=10, n_heads=3)
    with pytest.raises(ValueError):
        TransformerParams(window=3)  # unknown keys are an error


def test_output_shapes() -> None:
    check_shapes(NAME, [1, 8, 24], **SMALL)


def test_parameter_count_at_etth1_defaults() -> None:
    assert n_params(build(NAME, ETTH1)) == count_transformer(ETTH1) == 10_540_039


def test_parameter_count_small_config() -> None:
    shape = small_shape()
    model = build(NAME, shape, d_model=24, n_heads=3, d_ff=40, e_layers=3, d_layers=2)
    assert n_params(model) == count_transformer(shape, d=24, e=3, dl=2, d_ff=40)


def test_gradients_reach_every_parameter() -> None:
    check_gradients(NAME, **SMALL)


def test_same_seed_same_model() -> None:
    check_seeded(NAME, **SMALL)


def test_state_dict_round_trip(tmp_path) -> None:
    check_round_trip(NAME, tmp_path, **SMALL)


def test_decoder_is_causal() -> None:
    """Changing the last decoder position must not change the decoder's earlier outputs."""
    shape = small_shape()
    model = build(NAME, shape, **SMALL).eval()
    x_enc, m_enc, x_dec, m_dec = example_inputs(shape, 2)
    with torch.no_grad():
        enc_out = model.encoder(model.enc_embedding(x_enc, m_enc))
        dec_in = model.dec_embedding(x_dec, m_dec)
        changed = dec_in.clone()
        changed[:, -1] += 5.0
        a, b = model.decoder(dec_in, enc_out), model.decoder(changed, enc_out)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5)
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx(NAME, opset, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss(NAME, **SMALL)
