"""Vanilla Transformer: shapes, parameter count, gradients, seeding, checkpoints, export, training."""

from __future__ import annotations

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
    count_transformer,
    n_params,
    set_deploy,
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


# --- deploy form: heads folded into the batch, fused q/k/v projections (what DeepSparse runs fastest) --------
def test_deploy_form_switches_every_full_attention_and_keeps_the_parameters() -> None:
    shape = small_shape()
    model = build(NAME, shape, **SMALL).eval()
    keys, count = list(model.state_dict()), n_params(model)
    # one inner attention per attention block: e_layers self-attentions, d_layers self- and cross-attentions
    assert set_deploy(model) == SMALL["e_layers"] + 2 * SMALL["d_layers"]
    assert list(model.state_dict()) == keys and n_params(model) == count


def test_deploy_form_matches_on_random_inputs() -> None:
    shape = small_shape()
    model = build(NAME, shape, **SMALL)
    check_deploy_equivalence(model, example_inputs(shape, 4, seed=7))


def test_deploy_form_matches_on_real_etth1(etth1_test_batch) -> None:
    model = build(NAME, ETTH1, d_model=64, n_heads=4, d_ff=128, e_layers=2, d_layers=1)
    check_deploy_equivalence(model, etth1_test_batch.inputs)


def test_deploy_form_fuses_the_projections_in_the_export(tmp_path) -> None:
    """Self-attention: q, k, v in one MatMul (saves 2); cross-attention: k, v in one (saves 1)."""
    from sparse_runtime.export import export_onnx

    shape = small_shape()
    model = build(NAME, shape, **SMALL).eval()
    inputs = example_inputs(shape, 2)
    plain = export_onnx(model, inputs, tmp_path / "plain.onnx", deploy_form=False).op_counts
    deploy = export_onnx(model, inputs, tmp_path / "deploy.onnx").op_counts
    e, d = SMALL["e_layers"], SMALL["d_layers"]
    assert plain["MatMul"] - deploy["MatMul"] == 2 * (e + d) + d
    assert deploy["Split"] == e + 2 * d and "Split" not in plain


@pytest.mark.parametrize("mask_dims", [0, 2, 3, 4])
@pytest.mark.parametrize(("length", "source"), [(6, 6), (5, 9)])
def test_folded_attention_equals_the_training_form(mask_dims: int, length: int, source: int) -> None:
    from plugins.models.layers.attention import MASK_VALUE, AttentionLayer, FullAttention

    g = torch.Generator().manual_seed(10 * length + mask_dims)
    batch, heads, width = 3, 2, 8
    causal = mask_dims == 0 and length == source
    layer = AttentionLayer(FullAttention(causal, attention_dropout=0.0), width, heads).eval()
    x, cross = torch.randn(batch, length, width, generator=g), torch.randn(batch, source, width, generator=g)
    keys = x if length == source else cross
    full = (batch, heads, length, source)
    mask = None
    if mask_dims:
        mask = (torch.rand(full[-mask_dims:], generator=g) < 0.3).float() * MASK_VALUE
    with torch.no_grad():
        want, _ = layer(x, keys, keys, mask)
        layer.inner_attention.set_deploy_form(True)
        got, _ = layer(x, keys, keys, mask)
    assert got.shape == want.shape == (batch, length, width)
    assert float((got - want).abs().max()) <= 1e-5
