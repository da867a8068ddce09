"""A post-norm Transformer encoder (Vaswani et al., 2017) as used by PatchTST and iTransformer.

Each layer: self-attention with residual and LayerNorm, then a position-wise feed-forward network
(``d_model -> d_ff -> d_model``) with residual and LayerNorm. The reference implementation writes the
feed-forward network as two kernel-1 convolutions; here they are ``nn.Linear`` layers, which have the same
parameters (a weight of ``d_ff x d_model`` plus a bias) and export as plain ``MatMul``/``Gemm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, each wrapped in dropout, a residual connection and LayerNorm."""

    def __init__(self, attention: nn.Module, d_model: int, d_ff: int | None = None, dropout: float = 0.1,
                 activation: str = "gelu") -> None:
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.attention = attention
        self.ff_in = nn.Linear(d_model, d_ff)
        self.ff_out = nn.Linear(d_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(x, x, x, None)
        x = self.norm1(x + self.dropout(attended))
        y = self.dropout(self.activation(self.ff_in(x)))
        y = self.dropout(self.ff_out(y))
        return self.norm2(x + y)


class Encoder(nn.Module):
    """A stack of encoder layers followed by an optional final normalisation module."""

    def __init__(self, layers: Sequence[nn.Module], norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x if self.norm is None else self.norm(x)


class InstanceNormalization(nn.Module):
    """Per-sample, per-channel standardisation over time, undone on the forecast (no learned affine).

    The reference code of PatchTST/iTransformer in Time-Series-Library (after Non-stationary Transformers /
    RevIN without affine): subtract the window mean (treated as a constant for gradients), divide by the
    population standard deviation plus ``eps`` under the root.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def normalize(self, x: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standardise along the time axis ``dim`` (``[B, L, C]``: 1; time-last ``[B, C, L]``: -1); returns
        ``(x_norm, mean, std)`` with the statistics kept as size-1 ``dim``."""
        mean = x.mean(dim=dim, keepdim=True).detach()
        centred = x - mean
        std = torch.sqrt((centred * centred).mean(dim=dim, keepdim=True) + self.eps)
        return centred / std, mean, std

    @staticmethod
    def denormalize(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return y * std + mean
