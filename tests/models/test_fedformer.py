"""FEDformer: DFT matrices, Fourier blocks against complex-arithmetic implementations, seeded modes saved with
the checkpoint, deploy form, the usual checks."""

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
    count_fedformer,
    n_params,
    set_deploy,
    small_shape,
)

from plugins.models.fedformer import FEDformerParams
from plugins.models.layers.fourier import irdft_matrices, rdft_matrices
from plugins.models.layers.fourier_blocks import FourierBlock, FourierCrossAttention, select_modes
from tsbench_core.data import example_inputs

NAME = "fedformer"


@pytest.mark.parametrize("length", [7, 8, 96, 144])
def test_dft_matrices_equal_torch_fft(length: int) -> None:
    x = torch.randn(3, 5, length, generator=torch.Generator().manual_seed(length))
    cos, sin = rdft_matrices(length)
    spec = torch.fft.rfft(x)
    assert torch.allclose(x @ cos, spec.real, atol=1e-4) and torch.allclose(x @ sin, spec.imag, atol=1e-4)
    icos, isin = irdft_matrices(length)
    assert torch.allclose(spec.real @ icos + spec.imag @ isin, x, atol=1e-5)
    # irfft ignores the imaginary part of the DC (and Nyquist) bins, so must the matrices
    noisy = torch.complex(spec.real, spec.imag + 1.0)
    assert torch.allclose(noisy.real @ icos + noisy.imag @ isin, torch.fft.irfft(noisy, n=length), atol=1e-4)


def complex_weights(block) -> torch.Tensor:
    return torch.complex(block.weights1.detach().double(), block.weights2.detach().double())


def literal_fourier_block(q: torch.Tensor, block: FourierBlock) -> torch.Tensor:
    """FEB-f in complex arithmetic (Zhou et al., 2022, sec. 3.2): mode w of the selection -> output bin w."""
    batch, length, heads, dim = q.shape
    x_ft = torch.fft.rfft(q.permute(0, 2, 3, 1).double(), dim=-1)
    out = torch.zeros(batch, heads, dim, length // 2 + 1, dtype=torch.complex128)
    weights = complex_weights(block)
    for w, mode in enumerate(block.index.tolist()):
        out[..., w] = torch.einsum("bhi,hio->bho", x_ft[..., mode], weights[..., w])
    return torch.fft.irfft(out, n=length)


def literal_fourier_cross(q: torch.Tensor, k: torch.Tensor, block: FourierCrossAttention) -> torch.Tensor:
    """FEA-f in complex arithmetic, tanh applied to the real and imaginary parts separately."""
    length = q.shape[1]
    xq = torch.fft.rfft(q.permute(0, 2, 3, 1).double(), dim=-1)[..., block.index_q]
    xk = torch.fft.rfft(k.permute(0, 2, 3, 1).double(), dim=-1)[..., block.index_kv]
    scores = torch.einsum("bhex,bhey->bhxy", xq, xk)
    scores = torch.complex(scores.real.tanh(), scores.imag.tanh())
    mixed = torch.einsum("bhxy,bhey->bhex", scores, xk)
    out_modes = torch.einsum("bhex,heox->bhox", mixed, complex_weights(block))
    out = torch.zeros(*out_modes.shape[:3], length // 2 + 1, dtype=torch.complex128)
    out[..., block.index_q] = out_modes
    return torch.fft.irfft(out / block.d_model / block.d_model, n=length)


def test_fourier_block_matches_complex_arithmetic() -> None:
    torch.manual_seed(0)
    block = FourierBlock(8, 2, 20, modes=6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        block.weights1.normal_()
        block.weights2.normal_()
    q = torch.randn(3, 20, 2, 4)
    want = literal_fourier_block(q, block)
    for deploy in (False, True):
        block.set_deploy_form(deploy)
        got, _ = block(q, q, q)
        assert torch.allclose(got.double(), want, atol=1e-4), float((got.double() - want).abs().max())


def test_fourier_cross_attention_matches_complex_arithmetic() -> None:
    torch.manual_seed(0)
    block = FourierCrossAttention(8, 2, 18, 14, modes=5, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        block.weights1.normal_()
        block.weights2.normal_()
    q, k = torch.randn(3, 18, 2, 4), torch.randn(3, 14, 2, 4)
    want = literal_fourier_cross(q, k, block)
    for deploy in (False, True):
        block.set_deploy_form(deploy)
        got, _ = block(q, k, k)
        assert torch.allclose(got.double(), want, atol=1e-5), float((got.double() - want).abs().max())


def test_mode_selection() -> None:
    g = torch.Generator().manual_seed(0)
    random = select_modes(96, 32, "random", g)
    assert len(random) == 32 and len(set(random.tolist())) == 32
    assert torch.equal(random, random.sort().values) and int(random.max()) < 48
    assert not torch.equal(random, torch.arange(32))
    assert torch.equal(select_modes(96, 32, "low"), torch.arange(32))
    assert len(select_modes(20, 32, "random", g)) == 10  # at most length // 2 modes


def test_modes_follow_the_seed_and_are_saved(tmp_path) -> None:
    shape = small_shape()
    a = build(NAME, shape, modes=4, mode_seed=1, **SMALL)
    b = build(NAME, shape, modes=4, mode_seed=1, **SMALL)
    c = build(NAME, shape, modes=4, mode_seed=2, **SMALL)
    index = {k: v for k, v in a.state_dict().items() if "index" in k}
    assert len(index) == 5  # two encoder blocks, decoder self block, cross queries and keys
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in index.items())
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in index.items())
    # reload into a model built with another mode seed (and other weights): identical outputs
    check_round_trip(NAME, tmp_path, differing={"mode_seed": 7}, modes=4, **SMALL)


def test_defaults() -> None:
    p = FEDformerParams()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_layers, p.d_ff, p.moving_avg) == (512, 8, 2, 1, 2048, 25)
    assert (p.modes, p.mode_select) == (32, "random")


def test_output_shapes() -> None:
    check_shapes(NAME, [1, 8, 24], moving_avg=5, modes=4, **SMALL)
    check_shapes(NAME, [8], moving_avg=5, modes=4, mode_select="low", **SMALL)


def test_parameter_count_at_etth1_defaults() -> None:
    assert n_params(build(NAME, ETTH1)) == count_fedformer(ETTH1) == 18_924_551


def test_parameter_count_small_config() -> None:
    shape = small_shape(pred_len=24)  # decoder length 40: 20 modes available, 12 kept
    model = build(NAME, shape, d_model=24, n_heads=3, d_ff=40, e_layers=3, d_layers=2, moving_avg=5, modes=12)
    assert n_params(model) == count_fedformer(shape, d=24, h=3, e=3, dl=2, d_ff=40, modes=12)


def test_gradients_reach_every_parameter_the_architecture_reads() -> None:
    """FEB-f reads only the queries and FEA-f only queries and keys: as in the reference implementation, the
    key/value projections of the self-attention layers and the value projection of the cross-attention exist
    (and count) but never get a gradient."""
    unused = {f"{layer}.{proj}_projection.{p}"
              for layer in ("encoder.layers.0.attention", "encoder.layers.1.attention",
                            "decoder.layers.0.self_attention")
              for proj in ("key", "value") for p in ("weight", "bias")}
    unused |= {f"decoder.layers.0.cross_attention.value_projection.{p}" for p in ("weight", "bias")}
    check_gradients(NAME, unused=unused, moving_avg=5, modes=4, **SMALL)


def test_same_seed_same_model() -> None:
    check_seeded(NAME, moving_avg=5, modes=4, **SMALL)


def test_deploy_form_matches_on_random_inputs() -> None:
    shape = small_shape()
    model = build(NAME, shape, moving_avg=5, modes=4, **SMALL)
    assert set_deploy(model) == 4
    check_deploy_equivalence(model, example_inputs(shape, 4))


def test_deploy_form_matches_on_real_etth1(etth1_test_batch) -> None:
    model = build(NAME, ETTH1, d_model=64, n_heads=8, d_ff=128)
    check_deploy_equivalence(model, etth1_test_batch.inputs)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx(NAME, opset, moving_avg=5, modes=4, **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss(NAME, moving_avg=5, modes=4, **SMALL)
