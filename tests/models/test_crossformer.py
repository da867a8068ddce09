"""Crossformer: shapes, parameter counts, segment merging, gradients, seeding, checkpoints, export."""

from __future__ import annotations

import math

import pytest
import torch
from model_checks_b import (
    attention_layer,
    build,
    check_eval_deterministic,
    check_gradients,
    check_onnx,
    check_seeded,
    check_shapes,
    check_state_dict_round_trip,
    check_training_lowers_val_loss,
    layer_norm,
    linear,
    n_params,
    params_model,
    shape,
)

from plugins.models.layers.crossformer_blocks import SegmentMerging

SMALL = {"d_model": 16, "n_heads": 2, "e_layers": 3, "d_ff": 32, "seg_len": 6, "factor": 2}


def crossformer_count(seq_len: int, pred_len: int, channels: int, d_model: int, e_layers: int, d_ff: int,
                      factor: int, seg_len: int, win_size: int) -> int:
    """Derived from the reference layer list: segment embedding (bias-free), encoder and decoder position
    parameters, pre-norm, e_layers scale blocks (segment merging from the second on, one two-stage attention
    layer each, routers per segment) and e_layers + 1 decoder layers."""
    in_segs = math.ceil(seq_len / seg_len)
    out_segs = math.ceil(pred_len / seg_len)

    def tsa(segs: int) -> int:
        mlp = linear(d_model, d_ff) + linear(d_ff, d_model)
        return 3 * attention_layer(d_model) + segs * factor * d_model + 4 * layer_norm(d_model) + 2 * mlp

    merge = layer_norm(win_size * d_model) + linear(win_size * d_model, d_model)
    encoder = sum(tsa(math.ceil(in_segs / win_size**scale)) + (merge if scale else 0) for scale in range(e_layers))
    decoder_layer = (tsa(out_segs) + attention_layer(d_model) + 2 * layer_norm(d_model)
                     + linear(d_model, d_model) * 2 + linear(d_model, seg_len))
    embedding = linear(seg_len, d_model, bias=False) + channels * in_segs * d_model + layer_norm(d_model)
    return embedding + encoder + channels * out_segs * d_model + (e_layers + 1) * decoder_layer


def test_shapes() -> None:
    check_shapes("crossformer", [1, 24, 96, 100], **SMALL)


def test_shapes_with_padded_input_and_odd_merging() -> None:
    # 50 steps -> 9 segments of 6 (padded), merged 9 -> 5 -> 3 with repeated last segments
    check_shapes("crossformer", [24, 7], seq_len=50, **SMALL)


def test_defaults_are_the_etth1_script() -> None:
    p = params_model("crossformer")()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_ff, p.factor, p.seg_len, p.win_size, p.dropout) == (
        512, 8, 2, 2048, 3, 12, 2, 0.1)


def test_parameter_count_at_etth1_defaults() -> None:
    model = build("crossformer", shape(96, 96, 7))
    assert n_params(model) == crossformer_count(96, 96, 7, 512, 2, 2048, 3, 12, 2)


@pytest.mark.parametrize(("seq_len", "pred_len", "win_size"), [(48, 24, 2), (50, 7, 2), (96, 30, 3)])
def test_parameter_count_small(seq_len: int, pred_len: int, win_size: int) -> None:
    model = build("crossformer", shape(pred_len, seq_len, 3), **{**SMALL, "win_size": win_size})
    assert n_params(model) == crossformer_count(seq_len, pred_len, 3, 16, 3, 32, 2, 6, win_size)


def test_segment_merging_concatenates_neighbours() -> None:
    merge = SegmentMerging(d_model=2, win_size=2, in_segs=3)
    torch.nn.init.ones_(merge.norm.weight)
    torch.nn.init.zeros_(merge.norm.bias)
    captured = {}
    merge.norm.register_forward_hook(lambda _m, inputs, _o: captured.setdefault("x", inputs[0]))
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 3, 2)  # segments (0,1) (2,3) (4,5)
    out = merge(x)
    assert out.shape == (1, 1, 2, 2)
    want = torch.tensor([[0, 1, 2, 3], [4, 5, 4, 5]], dtype=torch.float32)  # last segment repeated
    assert torch.equal(captured["x"][0, 0], want)


def test_gradients_reach_every_parameter() -> None:
    check_gradients("crossformer", shape(), **SMALL)


def test_seeded_outputs_are_identical() -> None:
    check_seeded("crossformer", shape(), **SMALL)
    check_eval_deterministic("crossformer", shape(), **SMALL)


def test_state_dict_round_trip(tmp_path) -> None:
    check_state_dict_round_trip("crossformer", shape(), tmp_path, **SMALL)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    # 50 steps: a padded last segment and merging 9 -> 5 segments with a repeated last segment
    check_onnx("crossformer", shape(24, 50), opset, **{**SMALL, "e_layers": 2})


def test_onnx_export_matches_torch_on_real_etth1(etth1_test_batch) -> None:
    check_onnx("crossformer", shape(96, 96, 7), 13, inputs=etth1_test_batch.inputs, **{**SMALL, "e_layers": 2})


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss("crossformer", epochs=2, lr=1e-3, **{**SMALL, "e_layers": 2})
