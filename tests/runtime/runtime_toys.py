"""Tiny forecasters for the runtime tests (shapes follow the tsbench model convention)."""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

B, SEQ, LABEL, PRED, C, MARKS = 4, 16, 8, 8, 3, 4


class TinyForecaster(nn.Module):
    """Uses all four inputs: value + mark embedding, one attention-like mixing step, time projection."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Linear(C, 16)
        self.mark = nn.Linear(MARKS, 16)
        self.mix = nn.Linear(16, 16)
        self.time = nn.Linear(SEQ + LABEL + PRED, PRED)
        self.out = nn.Linear(16, C)

    def forward(self, x_enc, x_mark_enc, x_dec, x_mark_dec):
        h = torch.cat([self.value(x_enc) + self.mark(x_mark_enc), self.value(x_dec) + self.mark(x_mark_dec)], 1)
        b, length, _ = h.shape
        heads = h.view(b, length, 2, 8)  # multi-head attention laid out like the built-in FullAttention
        q, k, v = heads.permute(0, 2, 1, 3), heads.permute(0, 2, 3, 1), heads.permute(0, 2, 1, 3)
        scores = torch.softmax(torch.matmul(q, k) * 0.35, dim=-1)
        h = torch.matmul(scores, v).permute(0, 2, 1, 3).reshape(b, length, 16)
        h = torch.relu(self.mix(h))
        return self.out(self.time(h.transpose(1, 2)).transpose(1, 2))


class ValuesOnly(nn.Module):
    """Ignores the time marks and the decoder input (like DLinear)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(SEQ, PRED)

    def forward(self, x_enc, x_mark_enc=None, x_dec=None, x_mark_dec=None):
        return self.proj(x_enc.transpose(1, 2)).transpose(1, 2)


def make_inputs(seed: int = 0, batch: int = B) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, SEQ, C, generator=g), torch.rand(batch, SEQ, MARKS, generator=g) - 0.5,
            torch.randn(batch, LABEL + PRED, C, generator=g), torch.rand(batch, LABEL + PRED, MARKS, generator=g) - 0.5)




def prune_linears(model: nn.Module, fraction: float) -> nn.Module:
    """Zero the smallest-magnitude ``fraction`` of every Linear weight (a stand-in for a pruner)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                w[w.abs() <= w.abs().flatten().kthvalue(int(w.numel() * fraction)).values] = 0.0
    return model


def input_batches(seeds, scale: float = 1.0) -> list[tuple]:
    """``make_inputs`` of each seed as numpy arrays (times ``scale``): calibration or gate batches."""
    return [tuple(t.numpy() * scale for t in make_inputs(seed)) for seed in seeds]


def open_graph(runtime: str, export, *, threads: int, batch_size: int):
    """A session on a given ONNX graph through the runtime plugin's ``open_graph`` (its default params)."""
    from tsbench_core.registry import load_plugins

    plugin = load_plugins().get("runtime", runtime)
    return plugin.open_graph(export, plugin.params_model(), threads=threads, batch_size=batch_size)
