"""Checks shared by the transformer / informer / autoformer / fedformer tests (small, fast configurations)
and the parameter counts of those models derived from the reference implementation's layer list."""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from tsbench_core.data import DatasetSplits, DataShape, Scaler, SeriesSplit, WindowedSplit, Windows, example_inputs
from tsbench_core.registry import load_plugins

INPUT_NAMES = ["x_enc", "x_mark_enc", "x_dec", "x_mark_dec"]
# What deploy forms keep out of exported graphs: FFTs, random ops, data-dependent selection and shapes, masks,
# and the comparison/boolean ops and Elu that DeepSparse's engine leaves to its fallback.
FORBIDDEN_OPS = {"DFT", "TopK", "ScatterElements", "ScatterND", "Where", "Trilu", "Einsum", "Shape", "Expand",
                 "Tile", "NonZero", "RandomNormalLike", "RandomUniformLike", "RandomUniform", "RandomNormal",
                 "Multinomial", "CumSum", "Greater", "Less", "Equal", "And", "Or", "Not", "Elu", "ReduceMax"}
SMALL = {"d_model": 16, "n_heads": 2, "d_ff": 32, "e_layers": 2, "d_layers": 1, "dropout": 0.1}
ETTH1 = DataShape(enc_in=7, dec_in=7, c_out=7, seq_len=96, label_len=48, pred_len=96)


def small_shape(pred_len: int = 8, seq_len: int = 32, label_len: int = 16, channels: int = 3,
                c_out: int | None = None) -> DataShape:
    return DataShape(enc_in=channels, dec_in=channels, c_out=c_out or channels, seq_len=seq_len,
                     label_len=label_len, pred_len=pred_len)


@lru_cache(maxsize=1)
def _models() -> dict:
    return load_plugins().models


def build(name: str, shape: DataShape, seed: int = 0, **params: object) -> nn.Module:
    plugin = _models()[name]
    torch.manual_seed(seed)
    return plugin.build(plugin.params_model(**params), shape)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def set_deploy(model: nn.Module, enabled: bool = True) -> int:
    """Switch every block with a deploy form; returns how many there are."""
    blocks = [m for m in model.modules() if hasattr(m, "set_deploy_form")]
    for block in blocks:
        block.set_deploy_form(enabled)
    return len(blocks)


# --- parameter counts, from the layer list of Time-Series-Library's models --------------------------------
# Convolutions of kernel 1 count like linear layers; LayerNorm has a weight and a bias per channel;
# BatchNorm's running statistics are buffers, not parameters.


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def embedding(c_in: int, d: int, marks: int = 4) -> int:
    """Token conv (kernel 3, no bias) + timeF linear (no bias); sinusoidal positions have no parameters."""
    return 3 * c_in * d + marks * d


def attention(d: int) -> int:
    return 4 * linear(d, d)


def feed_forward(d: int, d_ff: int, bias: bool = True) -> int:
    return linear(d, d_ff, bias) + linear(d_ff, d, bias)


def count_transformer(s: DataShape, d: int = 512, e: int = 2, dl: int = 1, d_ff: int = 2048) -> int:
    enc = e * (attention(d) + feed_forward(d, d_ff) + 2 * 2 * d) + 2 * d
    dec = dl * (2 * attention(d) + feed_forward(d, d_ff) + 3 * 2 * d) + 2 * d + linear(d, s.c_out)
    return embedding(s.enc_in, d) + embedding(s.dec_in, d) + enc + dec


def count_informer(s: DataShape, d: int = 512, e: int = 2, dl: int = 1, d_ff: int = 2048,
                   distil: bool = True) -> int:
    distil_layer = 3 * d * d + d + 2 * d  # Conv1d kernel 3 with bias, BatchNorm weight and bias
    return count_transformer(s, d, e, dl, d_ff) + ((e - 1) * distil_layer if distil else 0)


def count_autoformer(s: DataShape, d: int = 512, e: int = 2, dl: int = 1, d_ff: int = 2048) -> int:
    enc = e * (attention(d) + feed_forward(d, d_ff, bias=False)) + 2 * d
    trend_conv = 3 * d * s.c_out  # kernel 3, no bias
    dec = dl * (2 * attention(d) + feed_forward(d, d_ff, bias=False) + trend_conv) + 2 * d + linear(d, s.c_out)
    return embedding(s.enc_in, d) + embedding(s.dec_in, d) + enc + dec


def count_fedformer(s: DataShape, d: int = 512, h: int = 8, e: int = 2, dl: int = 1, d_ff: int = 2048,
                    modes: int = 32, shared: bool = True) -> int:
    """The autoformer's count plus the Fourier weights: with ``shared`` (the reference), one encoder FEB-f, one
    decoder FEB-f and one FEA-f for all layers of their stack; otherwise one of each per layer."""
    def fourier(length: int) -> int:  # real and imaginary weights per head, mode and channel pair
        return 2 * h * (d // h) ** 2 * min(modes, length // 2)

    dec_len = s.label_len + s.pred_len
    encoder_blocks, decoder_blocks = (1, 1) if shared else (e, dl)
    return (count_autoformer(s, d, e, dl, d_ff) + encoder_blocks * fourier(s.seq_len)
            + decoder_blocks * (fourier(dec_len) + fourier(dec_len)))


# --- behaviour checks ------------------------------------------------------------------------------------


def check_shapes(name: str, horizons: list[int], **params: object) -> None:
    for pred_len in horizons:
        for c_out in (3, 1):
            shape = small_shape(pred_len, c_out=c_out)
            model = build(name, shape, **params).eval()
            with torch.no_grad():
                out = model(*example_inputs(shape, 2))
            assert out.shape[:2] == (2, pred_len), (name, pred_len, tuple(out.shape))
            assert out.shape[2] >= c_out
            assert torch.isfinite(out).all()


def check_gradients(name: str, unused: set[str] = frozenset(), **params: object) -> None:
    """Every trainable parameter gets a non-zero gradient, except exactly the ``unused`` ones (parameters the
    reference architecture has but never reads)."""
    shape = small_shape()
    model = build(name, shape, **params).train()
    (model(*example_inputs(shape, 4)) ** 2).mean().backward()
    missing = {n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))}
    assert missing == set(unused), f"{name}: no gradient reaches {sorted(missing - set(unused))}"
    assert any(p.requires_grad for p in model.parameters())


def check_seeded(name: str, **params: object) -> None:
    shape = small_shape()
    inputs = example_inputs(shape, 2)
    with torch.no_grad():
        first = build(name, shape, seed=3, **params).eval()(*inputs)
        again = build(name, shape, seed=3, **params).eval()(*inputs)
        other = build(name, shape, seed=4, **params).eval()(*inputs)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def check_round_trip(name: str, tmp_path, differing: dict | None = None, **params: object) -> None:
    """Save, then load into a model built with another torch seed (and ``differing`` params): same outputs."""
    shape = small_shape()
    model = build(name, shape, seed=1, **params).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    fresh = build(name, shape, seed=2, **(params | (differing or {}))).eval()
    inputs = example_inputs(shape, 2)
    with torch.no_grad():
        assert not torch.equal(fresh(*inputs), model(*inputs))
        fresh.load_state_dict(torch.load(path, weights_only=True))
        assert torch.equal(fresh(*inputs), model(*inputs))


def check_deploy_equivalence(model: nn.Module, inputs: tuple[torch.Tensor, ...], tol: float = 1e-4) -> float:
    model.eval()
    set_deploy(model, False)
    with torch.no_grad():
        want = model(*inputs)
        set_deploy(model, True)
        got = model(*inputs)
    set_deploy(model, False)
    err = float((got - want).abs().max())
    assert err <= tol, f"deploy form differs by {err}"
    return err


def check_onnx(name: str, opset: int, **params: object) -> None:
    import onnx
    import onnxruntime as ort

    shape = small_shape()
    model = build(name, shape, **params).eval()
    set_deploy(model, True)
    inputs = example_inputs(shape, 2, seed=5)
    buffer = io.BytesIO()
    torch.onnx.export(model, inputs, buffer, dynamo=False, opset_version=opset, input_names=INPUT_NAMES,
                      output_names=["forecast"])
    ops = {node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node}
    assert not ops & FORBIDDEN_OPS, f"{name}: exported graph uses {sorted(ops & FORBIDDEN_OPS)}"
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}
    got = session.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True) if n in used})[0]
    with torch.no_grad():
        want = model(*inputs).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-4


def synthetic_splits(seq_len: int = 32, label_len: int = 16, pred_len: int = 8, channels: int = 3,
                     rows: int = 700, seed: int = 0) -> DatasetSplits:
    """Noisy sines (periods 12 and 48 steps) with per-channel phases, split 70/10/20, timeF-like marks."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(rows, dtype=torch.float32)[:, None]
    phase = torch.rand(1, channels, generator=g) * 2 * math.pi
    values = torch.sin(2 * math.pi * t / 12 + phase) + 0.5 * torch.sin(2 * math.pi * t / 48 + 2 * phase)
    values = values + 0.1 * torch.randn(rows, channels, generator=g)
    hour = (t % 24) / 23 - 0.5
    day = ((t // 24) % 7) / 6 - 0.5
    marks = torch.cat([hour, day, day, hour], dim=1)
    windows = Windows(seq_len, label_len, pred_len)
    borders = [0, int(rows * 0.7), int(rows * 0.8), rows]

    def split(i: int) -> WindowedSplit:
        part = slice(max(0, borders[i] - seq_len), borders[i + 1])
        return WindowedSplit(SeriesSplit(values[part], tuple(range(channels)), marks[part], marks[part]), windows)

    shape = small_shape(pred_len, seq_len, label_len, channels)
    return DatasetSplits(split(0), split(1), split(2), shape, Scaler(torch.zeros(channels), torch.ones(channels)))


def check_training_lowers_val_loss(name: str, epochs: int = 2, **params: object) -> None:
    from tsbench_core.spec import TrainingConfig
    from tsbench_core.steps.train import seed_everything, train_model, validation_loss

    splits = synthetic_splits()
    seed_everything(0)
    model = build(name, splits.shape, **params)
    config = TrainingConfig(epochs=epochs, batch_size=16, lr=1e-3, patience=3, device="cpu", max_train_batches=12)
    cpu = torch.device("cpu")
    before = validation_loss(model, splits.val, 16, splits.shape.c_out, cpu)
    outcome = train_model(model, splits, config, seed=0)
    after = validation_loss(model, splits.val, 16, splits.shape.c_out, cpu)
    assert math.isclose(after, outcome.best_val_loss, rel_tol=1e-5)
    assert after < 0.8 * before, f"{name}: validation MSE {before:.4f} -> {after:.4f}"
