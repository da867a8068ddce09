"""Informer: ProbSparse attention against a literal implementation, distilling lengths, the usual checks."""

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
    count_informer,
    n_params,
    set_deploy,
    small_shape,
)

from plugins.models.informer import InformerParams, encoder_lengths
from plugins.models.layers.encdec import DistilConv
from plugins.models.layers.prob_attention import ProbAttention
from tsbench_core.data import example_inputs

NAME = "informer"


def literal_prob_attention(q, k, v, counts, n_top, causal):
    """ProbSparse attention written out query by query from the paper (Zhou et al., 2021, sec. 3.1)."""
    batch, length, heads, dim = q.shape
    keys = k.shape[1]
    out = torch.zeros(batch, heads, length, v.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            Q, K, V = q[b, :, h].double(), k[b, :, h].double(), v[b, :, h].double()
            measure = []
            for i in range(length):
                sampled = [j for j in range(keys) for _ in range(int(counts[i, j]))]
                dots = [float(Q[i] @ K[j]) for j in sampled]
                measure.append(max(dots) - sum(dots) / keys)
            top = sorted(range(length), key=lambda i: -measure[i])[:n_top]
            for i in range(length):
                out[b, h, i] = V[: i + 1].sum(0) if causal else V.mean(0)
            for i in top:
                scores = (K @ Q[i]) / math.sqrt(dim)
                if causal:
                    scores[i + 1:] = -math.inf
                out[b, h, i] = torch.softmax(scores, 0) @ V
    return out


@pytest.mark.parametrize(("causal", "length", "source"), [(False, 12, 12), (True, 12, 12), (False, 10, 7)])
def test_prob_attention_matches_the_literal_algorithm(causal: bool, length: int, source: int) -> None:
    g = torch.Generator().manual_seed(1)
    attention = ProbAttention(causal, 1, length, source, generator=g).eval()
    q, k, v = (torch.randn(2, n, 3, 4, generator=g) for n in (length, source, source))
    got, _ = attention(q, k, v)
    want = literal_prob_attention(q, k, v, attention.sample_counts, attention.n_top, causal)
    assert attention.n_top < length  # the selection matters
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_prob_attention_sample_sizes_follow_the_paper() -> None:
    attention = ProbAttention(False, 3, 96, 49)
    assert attention.n_top == 3 * math.ceil(math.log(96))  # 15 queries
    assert attention.per_query == 3 * math.ceil(math.log(49))  # 12 keys per query
    assert attention.sample_counts.sum(1).eq(attention.per_query).all()


def test_eval_sampling_is_fixed_and_seeded() -> None:
    shape = small_shape()
    a = build(NAME, shape, sample_seed=5, **SMALL).eval()
    b = build(NAME, shape, sample_seed=6, **SMALL).eval()
    counts = [m.sample_counts for m in a.modules() if isinstance(m, ProbAttention)]
    other = [m.sample_counts for m in b.modules() if isinstance(m, ProbAttention)]
    assert len(counts) == 4  # two encoder layers, decoder self- and cross-attention
    assert any(not torch.equal(x, y) for x, y in zip(counts, other, strict=True))
    inputs = example_inputs(shape, 2)
    with torch.no_grad():
        assert torch.equal(a(*inputs), a(*inputs))


def test_distilling_halves_the_encoder_length() -> None:
    for length in (7, 48, 49, 96):
        with torch.no_grad():
            assert DistilConv(4).eval()(torch.zeros(1, length, 4)).shape[1] == DistilConv.out_length(length)
    assert encoder_lengths(96, 3, True) == [96, 49, 26]
    assert encoder_lengths(96, 3, False) == [96, 96, 96]
    model = build(NAME, ETTH1)
    assert model.decoder.layers[0].cross_attention.inner_attention.key_len == 49


def test_defaults() -> None:
    p = InformerParams()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_layers, p.d_ff, p.factor, p.distil) == (
        512, 8, 2, 1, 2048, 3, True)


def test_output_shapes() -> None:
    check_shapes(NAME, [1, 8, 24], **SMALL)
    check_shapes(NAME, [8], distil=False, **SMALL)


def test_parameter_count_at_etth1_defaults() -> None:
    assert n_params(build(NAME, ETTH1)) == count_informer(ETTH1) == 11_328_007


@pytest.mark.parametrize("distil", [True, False])
def test_parameter_count_small_config(distil: bool) -> None:
    shape = small_shape()
    model = build(NAME, shape, d_model=24, n_heads=3, d_ff=40, e_layers=3, d_layers=2, distil=distil)
    assert n_params(model) == count_informer(shape, d=24, e=3, dl=2, d_ff=40, distil=distil)


def test_gradients_reach_every_parameter() -> None:
    check_gradients(NAME, **SMALL)


def test_same_seed_same_model() -> None:
    check_seeded(NAME, **SMALL)


def test_state_dict_round_trip_includes_the_key_samples(tmp_path) -> None:
    check_round_trip(NAME, tmp_path, differing={"sample_seed": 9}, **SMALL)


def test_deploy_form_matches_on_random_inputs() -> None:
    """The deploy form only rewrites the distilling layer's ELU as relu(x) - relu(1 - exp(x))."""
    shape = small_shape()
    model = build(NAME, shape, **SMALL)
    assert set_deploy(model) == 1
    check_deploy_equivalence(model, example_inputs(shape, 4))


def test_deploy_form_matches_on_real_etth1(etth1_test_batch) -> None:
    model = build(NAME, ETTH1, d_model=64, n_heads=8, d_ff=128)
    check_deploy_equivalence(model, etth1_test_batch.inputs)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx(NAME, opset, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss(NAME, **SMALL)
