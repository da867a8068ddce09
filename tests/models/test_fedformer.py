"""FEDformer: DFT matrices, Fourier blocks against complex-arithmetic implementations, seeded modes saved with
the checkpoint, the Fourier blocks shared by the layers of each stack (parameter parity with the reference),
deploy form, the usual checks."""

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
from torch import nn

from plugins.models.fedformer import FEDformerParams
from plugins.models.layers.decomp_encdec import FixedLengthDecomposition
from plugins.models.layers.fourier import irdft_matrices, rdft_matrices
from plugins.models.layers.fourier_blocks import FourierBlock, FourierCrossAttention, complex_tanh, select_modes
from tsbench_core.accounting import count_macs, count_params
from tsbench_core.data import DataShape, example_inputs

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
    """FEA-f in complex arithmetic: tanh of the real and imaginary parts separately (TSL), or torch's complex
    tanh (the FEDformer authors' ``xqk_ft.tanh()``) for ``activation="complex_tanh"``."""
    length = q.shape[1]
    xq = torch.fft.rfft(q.permute(0, 2, 3, 1).double(), dim=-1)[..., block.index_q]
    xk = torch.fft.rfft(k.permute(0, 2, 3, 1).double(), dim=-1)[..., block.index_kv]
    scores = torch.einsum("bhex,bhey->bhxy", xq, xk)
    if block.activation == "complex_tanh":
        scores = scores.tanh()
    else:
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


def test_complex_tanh_equals_torch_complex_tanh() -> None:
    g = torch.Generator().manual_seed(0)
    # small, moderate and saturating arguments (FEA-f scores at ETTh1 defaults are sums of 64 products)
    re = torch.cat([torch.randn(200, generator=g) * s for s in (0.1, 1.0, 30.0, 300.0)]).double()
    im = torch.cat([torch.randn(200, generator=g) * s for s in (0.1, 1.0, 30.0, 300.0)]).double()
    want = torch.complex(re, im).tanh()
    got_re, got_im = complex_tanh(re, im)
    assert torch.allclose(got_re, want.real, atol=1e-9) and torch.allclose(got_im, want.imag, atol=1e-9)
    # and it is not the split tanh (the two activations are different functions)
    assert not torch.allclose(got_im, im.tanh(), atol=1e-2)


@pytest.mark.parametrize("activation", ["tanh", "complex_tanh"])
def test_fourier_cross_attention_matches_complex_arithmetic(activation: str) -> None:
    torch.manual_seed(0)
    block = FourierCrossAttention(8, 2, 18, 14, modes=5, generator=torch.Generator().manual_seed(4),
                                  activation=activation)
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
    assert len(index) == 5  # the shared encoder block under both layers' names, decoder self, cross q and k
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in index.items())
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in index.items())
    # reload into a model built with another mode seed (and other weights): identical outputs
    check_round_trip(NAME, tmp_path, differing={"mode_seed": 7}, modes=4, **SMALL)


def test_defaults() -> None:
    p = FEDformerParams()
    assert (p.d_model, p.n_heads, p.e_layers, p.d_layers, p.d_ff, p.moving_avg) == (512, 8, 2, 1, 2048, 25)
    assert (p.modes, p.mode_select) == (32, "random")
    assert p.share_blocks is True
    assert (p.cross_activation, p.position_embedding) == ("tanh", True)


def authors_moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """The FEDformer authors' ``moving_avg``: ``k - 1 - (k - 1) // 2`` copies of the first step in front,
    ``(k - 1) // 2`` of the last behind, then an unpadded average pool of width ``k``."""
    front = x[:, :1].repeat(1, kernel - 1 - (kernel - 1) // 2, 1)
    end = x[:, -1:].repeat(1, (kernel - 1) // 2, 1)
    padded = torch.cat([front, x, end], dim=1)
    return nn.functional.avg_pool1d(padded.transpose(1, 2), kernel, stride=1).transpose(1, 2)


@pytest.mark.parametrize("kernel", [24, 25, 4, 1])
def test_even_and_odd_moving_averages_equal_the_authors_padding(kernel: int) -> None:
    x = torch.randn(3, 96, 5, generator=torch.Generator().manual_seed(kernel)).double()
    seasonal, trend = FixedLengthDecomposition(kernel, 96).double()(x)
    want = authors_moving_average(x, kernel)
    assert trend.shape == x.shape and torch.allclose(trend, want, atol=1e-6)
    assert torch.allclose(seasonal + trend, x)


def test_authors_configuration_builds_and_differs_only_where_it_should() -> None:
    shape = small_shape()
    tsl = build(NAME, shape, modes=4, **SMALL)
    authors = build(NAME, shape, modes=4, moving_avg=4, position_embedding=False,
                    cross_activation="complex_tanh", **SMALL)
    assert n_params(authors) == n_params(tsl)  # positions, window and activation carry no parameters
    assert authors.enc_embedding.position_embedding is None and tsl.enc_embedding.position_embedding is not None
    authors.load_state_dict(tsl.state_dict())
    inputs = example_inputs(shape, batch_size=2)
    tsl.eval()
    authors.eval()
    with torch.no_grad():
        assert authors(*inputs).shape == tsl(*inputs).shape
        assert not torch.allclose(authors(*inputs), tsl(*inputs))


def test_output_shapes() -> None:
    check_shapes(NAME, [1, 8, 24], moving_avg=5, modes=4, **SMALL)
    check_shapes(NAME, [8], moving_avg=5, modes=4, mode_select="low", **SMALL)


def fedformer_params(s: DataShape, encoder_blocks: int, decoder_blocks: int = 1, d: int = 512, h: int = 8,
                     e: int = 2, dl: int = 1, d_ff: int = 2048, modes: int = 32, marks: int = 4) -> int:
    """Parameters of FEDformer (Fourier version), layer by layer as in Time-Series-Library's
    ``models/FEDformer.py``, with ``encoder_blocks`` distinct encoder FEB-f and ``decoder_blocks`` distinct
    decoder (FEB-f, FEA-f) pairs. TSL builds one of each (``encoder_self_att``, ``decoder_self_att``,
    ``decoder_cross_att``) and gives it to every layer of its stack: 1 and 1."""
    embedding = 3 * s.enc_in * d + marks * d  # token Conv1d kernel 3 + timeF Linear, both without bias
    attention_layer = 4 * (d * d + d)  # q, k, v, out projections with bias
    feed_forward = 2 * d * d_ff  # two kernel-1 Conv1d without bias
    encoder = e * (attention_layer + feed_forward) + 2 * d  # + the encoder's LayerNorm
    trend_projection = 3 * d * s.c_out  # Conv1d kernel 3 without bias
    decoder = dl * (2 * attention_layer + feed_forward + trend_projection) + 2 * d + d * s.c_out + s.c_out

    def block(length: int) -> int:  # real and imaginary [H, E, O, modes] weights
        return 2 * h * (d // h) * (d // h) * min(modes, length // 2)

    dec_len = s.label_len + s.pred_len  # TSL: seq_len // 2 + pred_len, the same at ETTh1
    fourier = encoder_blocks * block(s.seq_len) + decoder_blocks * 2 * block(dec_len)
    return 2 * embedding + encoder + decoder + fourier


def _meta_build(shape: DataShape, **params: object) -> nn.Module:
    with torch.device("meta"):  # 17-19 M parameters without allocating or initialising them
        return build(NAME, shape, **params)


def test_parameter_count_at_etth1_defaults_equals_the_reference() -> None:
    reference = fedformer_params(ETTH1, encoder_blocks=1)
    assert reference == 16_827_399
    assert n_params(_meta_build(ETTH1)) == reference


def test_parameter_count_of_the_authors_configuration() -> None:
    # 64 modes: all 48 bins of the encoder's 96 steps, 64 of the decoder's 72; positions, window and activation
    # carry no parameters (the authors' count adds 16 for their 8 single-window series_decomp_multi weightings)
    reference = fedformer_params(ETTH1, encoder_blocks=1, modes=64)
    assert reference == 22_070_279
    authors = _meta_build(ETTH1, modes=64, moving_avg=24, dropout=0.05, position_embedding=False,
                          cross_activation="complex_tanh")
    assert n_params(authors) == reference


def test_unshared_blocks_give_the_old_count() -> None:
    block = 2 * 8 * 64 * 64 * 32
    unshared = n_params(_meta_build(ETTH1, share_blocks=False))
    assert unshared == fedformer_params(ETTH1, encoder_blocks=2) == count_fedformer(ETTH1, shared=False)
    assert unshared == 18_924_551
    assert unshared - n_params(_meta_build(ETTH1)) == block == 2_097_152
    assert count_fedformer(ETTH1) == 16_827_399


def test_parameter_count_with_two_decoder_layers() -> None:
    """With d_layers=2 the reference still has one decoder FEB-f and one FEA-f; unshared, one pair per layer."""
    block = 2 * 8 * 64 * 64 * 32  # every block at ETTh1 defaults (96 and 144 steps: 32 modes)
    shared = n_params(_meta_build(ETTH1, d_layers=2))
    assert shared == fedformer_params(ETTH1, 1, 1, dl=2) == count_fedformer(ETTH1, dl=2) == 21_036_551
    unshared = n_params(_meta_build(ETTH1, d_layers=2, share_blocks=False))
    assert unshared == fedformer_params(ETTH1, 2, 2, dl=2) == count_fedformer(ETTH1, dl=2, shared=False)
    assert unshared == 27_328_007
    assert unshared - shared == (1 + 2) * block  # one more encoder FEB-f, one more decoder FEB-f and FEA-f


def test_parameter_count_small_config() -> None:
    shape = small_shape(pred_len=24)  # decoder length 40: 20 modes available, 12 kept
    config = {"d_model": 24, "n_heads": 3, "d_ff": 40, "e_layers": 3, "d_layers": 2, "moving_avg": 5, "modes": 12}
    counts = {"d": 24, "h": 3, "e": 3, "dl": 2, "d_ff": 40, "modes": 12}
    shared = n_params(build(NAME, shape, **config))
    assert shared == fedformer_params(shape, 1, 1, **counts) == count_fedformer(shape, **counts)
    unshared = build(NAME, shape, share_blocks=False, **config)
    assert n_params(unshared) == fedformer_params(shape, 3, 2, **counts)
    assert n_params(unshared) == count_fedformer(shape, **counts, shared=False)


def _inner(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The inner attention of every layer, per role."""
    return {"encoder": [layer.attention.inner_attention for layer in model.encoder.layers],
            "decoder self": [layer.self_attention.inner_attention for layer in model.decoder.layers],
            "decoder cross": [layer.cross_attention.inner_attention for layer in model.decoder.layers]}


def test_each_stack_shares_one_block_per_role() -> None:
    shape = small_shape()
    config = SMALL | {"e_layers": 3, "d_layers": 2}
    model = build(NAME, shape, modes=4, **config)
    inner = _inner(model)
    kinds = {"encoder": FourierBlock, "decoder self": FourierBlock, "decoder cross": FourierCrossAttention}
    for role, blocks in inner.items():
        assert all(b is blocks[0] for b in blocks) and type(blocks[0]) is kinds[role], role
    assert len({id(blocks[0]) for blocks in inner.values()}) == 3  # the three roles: three distinct blocks
    names = {n for n in model.state_dict() if n.endswith("inner_attention.weights1")}
    assert len(names) == 3 + 2 * 2  # one name per layer ...
    assert sum(1 for n, _ in model.named_parameters() if n.endswith("inner_attention.weights1")) == 3  # ...
    unshared = build(NAME, shape, modes=4, share_blocks=False, **config)
    separate = _inner(unshared)
    assert [len({id(b) for b in blocks}) for blocks in separate.values()] == [3, 2, 2]
    assert sum(1 for n, _ in unshared.named_parameters() if n.endswith("inner_attention.weights1")) == 7


def test_the_default_draws_the_same_modes_shared_or_not() -> None:
    """One layer per stack: the same blocks and modes either way (the modes are drawn in the same order)."""
    shape = small_shape()
    config = SMALL | {"e_layers": 1, "d_layers": 1}
    shared = build(NAME, shape, seed=0, modes=4, **config).state_dict()
    unshared = build(NAME, shape, seed=0, modes=4, share_blocks=False, **config).state_dict()
    assert shared.keys() == unshared.keys()
    assert all(torch.equal(v, unshared[k]) for k, v in shared.items())


@pytest.mark.parametrize("layers", [(2, 1), (2, 2)], ids=["e2-d1", "e2-d2"])
def test_accounting_counts_a_shared_block_once_and_its_macs_per_call(layers) -> None:
    shape = small_shape()  # encoder 32 and decoder 24 steps: every block keeps its 4 modes
    config = SMALL | {"e_layers": layers[0], "d_layers": layers[1]}
    shared = build(NAME, shape, moving_avg=5, modes=4, **config)
    unshared = build(NAME, shape, moving_avg=5, modes=4, share_blocks=False, **config)
    block = 2 * SMALL["n_heads"] * (SMALL["d_model"] // SMALL["n_heads"]) ** 2 * 4
    extra = (layers[0] - 1) + 2 * (layers[1] - 1)  # blocks the unshared model has in addition
    counts = count_params(shared), count_params(unshared)
    assert counts[0]["params_total"] == n_params(shared) == counts[1]["params_total"] - extra * block
    assert counts[0]["prunable_total"] == counts[1]["prunable_total"]  # Fourier weights are not Linear
    inputs = example_inputs(shape, 2)
    for deploy_form in (False, True):  # a shared block runs once per layer: same compute
        macs = [count_macs(m, inputs, deploy_form=deploy_form) for m in (shared, unshared)]
        assert macs[0]["macs_dense"] == macs[1]["macs_dense"] > 0
        assert macs[0]["macs_weight_dense"] == macs[1]["macs_weight_dense"]


@pytest.mark.parametrize("layers", [(2, 1), (2, 2)], ids=["e2-d1", "e2-d2"])
def test_checkpoint_round_trip_with_the_shared_blocks(tmp_path, layers) -> None:
    shape = small_shape()
    config = SMALL | {"e_layers": layers[0], "d_layers": layers[1]}
    model = build(NAME, shape, seed=1, moving_avg=5, modes=4, **config).eval()
    state = model.state_dict()
    roles = {"encoder.layers.{}.attention": layers[0], "decoder.layers.{}.self_attention": layers[1],
             "decoder.layers.{}.cross_attention": layers[1]}
    for layer, count in roles.items():
        pointers = {state[f"{layer.format(i)}.inner_attention.weights1"].data_ptr() for i in range(count)}
        assert len(pointers) == 1  # one name per layer, one tensor
    path = tmp_path / "fedformer.pt"
    torch.save(state, path)
    fresh = build(NAME, shape, seed=2, moving_avg=5, modes=4, mode_seed=9, **config).eval()
    inputs = example_inputs(shape, 2)
    with torch.no_grad():
        assert not torch.equal(fresh(*inputs), model(*inputs))
        fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
        assert torch.equal(fresh(*inputs), model(*inputs))
    for blocks in _inner(fresh).values():  # still one module per role after the load
        assert all(b is blocks[0] for b in blocks)


@pytest.mark.parametrize("layers", [(2, 1), (1, 2)], ids=["encoder", "decoder"])
def test_an_unshared_checkpoint_does_not_load_silently_into_the_shared_model(layers) -> None:
    shape = small_shape()
    config = SMALL | {"e_layers": layers[0], "d_layers": layers[1]}
    unshared = build(NAME, shape, moving_avg=5, modes=4, share_blocks=False, **config)
    shared = build(NAME, shape, moving_avg=5, modes=4, **config)
    with pytest.raises(RuntimeError, match="share one Fourier block") as error:
        shared.load_state_dict(unshared.state_dict(), strict=True)
    stack = "encoder" if layers[0] > 1 else "decoder"
    assert f"{stack}.layers.1." in str(error.value)
    if stack == "decoder":  # both decoder blocks are checked: the self FEB-f and the cross FEA-f
        assert "decoder.layers.1.self_attention.inner_attention" in str(error.value)
        assert "decoder.layers.1.cross_attention.inner_attention" in str(error.value)


def test_a_checkpoint_whose_shared_decoder_copies_differ_is_refused() -> None:
    """Only the cross block's copies differ: still refused (the FEA-f is checked, not just FEB-f)."""
    shape = small_shape()
    config = SMALL | {"e_layers": 1, "d_layers": 2}
    model = build(NAME, shape, moving_avg=5, modes=4, **config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decoder.layers.1.cross_attention.inner_attention.weights2"] += 1.0
    with pytest.raises(RuntimeError, match="cross_attention.inner_attention.weights2 differs"):
        model.load_state_dict(state, strict=True)


def test_exported_graph_holds_the_shared_block_once(tmp_path) -> None:
    import onnxruntime as ort
    from onnx import load, numpy_helper

    from sparse_runtime.export import export_onnx

    shape = small_shape()
    inputs = example_inputs(shape, 2, seed=5)
    spectral = {}  # the 4-D initializers: real and imaginary weights of each distinct block
    for share in (True, False):
        model = build(NAME, shape, moving_avg=5, modes=4, share_blocks=share, **SMALL).eval()
        path = tmp_path / f"fedformer_{share}.onnx"
        result = export_onnx(model, inputs, path, opset=14)
        spectral[share] = [numpy_helper.to_array(i) for i in load(str(path)).graph.initializer if len(i.dims) == 4]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = dict(zip(result.input_names, result.select([t.numpy() for t in inputs]), strict=True))
        with torch.no_grad():
            want = model(*inputs).numpy()
        assert float(abs(session.run(None, feeds)[0] - want).max()) <= 1e-4
    assert len(spectral[True]) == 2 * 3 and len(spectral[False]) == 2 * 4  # 3 distinct blocks, or 4
    block = 2 * SMALL["n_heads"] * (SMALL["d_model"] // SMALL["n_heads"]) ** 2 * 4
    assert sum(a.size for a in spectral[False]) - sum(a.size for a in spectral[True]) == block


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
    assert set_deploy(model) == 3  # the encoder's shared block, the decoder's self and cross blocks
    check_deploy_equivalence(model, example_inputs(shape, 4))


def test_deploy_form_matches_on_real_etth1(etth1_test_batch) -> None:
    model = build(NAME, ETTH1, d_model=64, n_heads=8, d_ff=128)
    check_deploy_equivalence(model, etth1_test_batch.inputs)


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_export_matches_torch(opset: int) -> None:
    check_onnx(NAME, opset, moving_avg=5, modes=4, **SMALL)


def test_onnx_export_of_the_authors_configuration_matches_torch() -> None:
    check_onnx(NAME, 17, moving_avg=4, modes=4, position_embedding=False, cross_activation="complex_tanh", **SMALL)


def test_short_training_lowers_validation_loss() -> None:
    check_training_lowers_val_loss(NAME, moving_avg=5, modes=4, **SMALL)
