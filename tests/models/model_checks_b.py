"""Shared checks for the dlinear / crossformer / patchtst / itransformer model tests.

Small configurations only: every check builds tiny models and runs in well under a second or two.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from tsbench_core.data import DatasetSplits, DataShape, Scaler, SeriesSplit, WindowedSplit, Windows, example_inputs
from tsbench_core.registry import load_plugins

INPUT_NAMES = ["x_enc", "x_mark_enc", "x_dec", "x_mark_dec"]
# ops the deploy-form convention keeps out of exported graphs (dynamic shapes, masks, broadcasts)
FORBIDDEN_OPS = {"DFT", "TopK", "ScatterElements", "ScatterND", "Gather", "Pad", "Where", "Trilu", "Einsum", "Shape",
                 "Expand", "Tile", "NonZero", "RandomNormalLike", "RandomUniformLike", "RandomUniform",
                 "RandomNormal", "Multinomial", "CumSum", "Greater", "Less", "Equal", "And", "Or", "Not", "Elu",
                 "ReduceMax"}


def shape(pred_len: int = 24, seq_len: int = 48, channels: int = 3, label_len: int = 24) -> DataShape:
    return DataShape(enc_in=channels, dec_in=channels, c_out=channels, seq_len=seq_len, label_len=label_len,
                     pred_len=pred_len)


@lru_cache(maxsize=1)
def _models() -> dict:
    return load_plugins().models


def build(name: str, data_shape: DataShape, seed: int = 0, **params: object) -> nn.Module:
    plugin = _models()[name]
    torch.manual_seed(seed)
    return plugin.build(plugin.params_model(**params), data_shape)


def params_model(name: str) -> type[BaseModel]:
    return _models()[name].params_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parameter-count building blocks, after the reference implementation's layer list ---------------------


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def layer_norm(d: int) -> int:
    return 2 * d


def attention_layer(d_model: int) -> int:
    """Query, key, value and output projections, ``d_model -> d_model`` each, with biases."""
    return 4 * linear(d_model, d_model)


def encoder_layer(d_model: int, d_ff: int) -> int:
    """Attention, two kernel-1 convolutions d_model -> d_ff -> d_model with biases, two LayerNorms."""
    return attention_layer(d_model) + linear(d_model, d_ff) + linear(d_ff, d_model) + 2 * layer_norm(d_model)


# --- behaviour checks ------------------------------------------------------------------------------------


def check_shapes(name: str, horizons: list[int], seq_len: int = 48, channels: int = 3, **params: object) -> None:
    for pred_len in horizons:
        data_shape = shape(pred_len, seq_len, channels)
        model = build(name, data_shape, **params).eval()
        with torch.no_grad():
            out = model(*example_inputs(data_shape, 2))
        assert out.shape == (2, pred_len, channels), (name, pred_len, tuple(out.shape))
        assert torch.isfinite(out).all()


def check_gradients(name: str, data_shape: DataShape, **params: object) -> None:
    model = build(name, data_shape, **params).train()
    out = model(*example_inputs(data_shape, 4))
    (out**2).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.any(p.grad != 0))]
    assert not missing, f"{name}: no gradient reaches {missing}"


def check_seeded(name: str, data_shape: DataShape, **params: object) -> None:
    inputs = example_inputs(data_shape, 2)
    with torch.no_grad():
        first = build(name, data_shape, seed=3, **params).eval()(*inputs)
        again = build(name, data_shape, seed=3, **params).eval()(*inputs)
        other = build(name, data_shape, seed=4, **params).eval()(*inputs)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def check_eval_deterministic(name: str, data_shape: DataShape, **params: object) -> None:
    model = build(name, data_shape, **params).eval()
    inputs = example_inputs(data_shape, 2)
    with torch.no_grad():
        assert torch.equal(model(*inputs), model(*inputs))


def check_state_dict_round_trip(name: str, data_shape: DataShape, tmp_path, **params: object) -> None:
    model = build(name, data_shape, seed=1, **params).eval()
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    fresh = build(name, data_shape, seed=2, **params).eval()
    inputs = example_inputs(data_shape, 2)
    with torch.no_grad():
        assert not torch.equal(fresh(*inputs), model(*inputs))
        fresh.load_state_dict(torch.load(path, weights_only=True))
        assert torch.equal(fresh(*inputs), model(*inputs))


def check_onnx(name: str, data_shape: DataShape, opset: int, inputs: tuple[torch.Tensor, ...] | None = None,
               **params: object) -> None:
    """Legacy export at ``opset``: no forbidden ops, onnxruntime within 1e-4 of torch (random or given inputs)."""
    import onnx
    import onnxruntime as ort

    model = build(name, data_shape, **params).eval()
    inputs = inputs if inputs is not None else example_inputs(data_shape, 2, seed=5)
    buffer = io.BytesIO()
    torch.onnx.export(model, inputs, buffer, dynamo=False, opset_version=opset, input_names=INPUT_NAMES,
                      output_names=["forecast"])
    graph = onnx.load_from_string(buffer.getvalue())
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & FORBIDDEN_OPS, f"{name}: exported graph uses {sorted(ops & FORBIDDEN_OPS)}"
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    used = {i.name for i in session.get_inputs()}
    feed = {n: t.numpy() for n, t in zip(INPUT_NAMES, inputs, strict=True) if n in used}
    got = session.run(None, feed)[0]
    with torch.no_grad():
        want = model(*inputs).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-4


# --- a short training on synthetic data ------------------------------------------------------------------


def synthetic_splits(seq_len: int = 48, label_len: int = 24, pred_len: int = 24, channels: int = 3,
                     rows: int = 900, seed: int = 0) -> DatasetSplits:
    """Noisy daily and weekly sines with per-channel phases, split 70/10/20, hourly-looking marks."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(rows, dtype=torch.float32)[:, None]
    phase = torch.rand(1, channels, generator=g) * 2 * math.pi
    values = torch.sin(2 * math.pi * t / 24 + phase) + 0.5 * torch.sin(2 * math.pi * t / 168 + 2 * phase)
    values = values + 0.1 * torch.randn(rows, channels, generator=g)
    hour = (t % 24) / 23 - 0.5
    day = ((t // 24) % 7) / 6 - 0.5
    timef = torch.cat([hour, day, day, hour], dim=1)
    calendar = torch.cat([torch.ones_like(t), (t // 24) % 28 + 1, (t // 24) % 7, t % 24], dim=1)
    windows = Windows(seq_len, label_len, pred_len)
    borders = [0, int(rows * 0.7), int(rows * 0.8), rows]

    def split(i: int) -> WindowedSplit:
        start = max(0, borders[i] - seq_len) if i else 0
        rows_ = slice(start, borders[i + 1])
        series = SeriesSplit(values[rows_], tuple(range(channels)), timef[rows_], calendar[rows_])
        return WindowedSplit(series, windows)

    data_shape = shape(pred_len, seq_len, channels, label_len)
    scaler = Scaler(torch.zeros(channels), torch.ones(channels))
    return DatasetSplits(split(0), split(1), split(2), data_shape, scaler)


def check_training_lowers_val_loss(name: str, epochs: int = 2, lr: float = 1e-3, **params: object) -> None:
    from tsbench_core.spec import TrainingConfig
    from tsbench_core.steps.train import seed_everything, train_model, validation_loss

    splits = synthetic_splits()
    seed_everything(0)
    model = build(name, splits.shape, **params)
    config = TrainingConfig(epochs=epochs, batch_size=16, lr=lr, patience=3, device="cpu", max_train_batches=20)
    before = validation_loss(model, splits.val, 16, splits.shape.c_out, torch.device("cpu"))
    outcome = train_model(model, splits, config, seed=0)
    after = validation_loss(model, splits.val, 16, splits.shape.c_out, torch.device("cpu"))
    assert abs(after - outcome.best_val_loss) <= 1e-6 * max(1.0, after)
    assert after < 0.8 * before, f"{name}: validation MSE {before:.4f} -> {after:.4f}"

