"""Encoder/decoder stacks of the vanilla Transformer and Informer (post-norm, position-wise feed-forward).

The position-wise feed-forward network is written with ``nn.Linear``: a kernel-1 ``Conv1d`` (as in the
reference implementations) has the same parameters and computes the same map, and a plain linear layer exports
to a single MatMul that sparse runtimes and pruners handle best.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activation_fn(name: str):
    """``relu`` or ``gelu`` (anything else is rejected by the params models)."""
    return F.relu if name == "relu" else F.gelu


class FeedForward(nn.Module):
    """``linear2(dropout(act(linear1(x))))`` followed by dropout; ``d_model -> d_ff -> d_model``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str, bias: bool = True) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation_fn(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each with a residual connection followed by LayerNorm."""

    def __init__(self, attention: nn.Module, d_model: int, d_ff: int, dropout: float = 0.1,
                 activation: str = "gelu") -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x, x, x, attn_mask)[0]))
        return self.norm2(x + self.feed_forward(x))


class DistilConv(nn.Module):
    """Informer's distilling layer: circular Conv1d (kernel 3), BatchNorm, ELU, max-pool with stride 2.

    Deploy form: ELU written as ``relu(x) - relu(1 - exp(x))`` (the same function; DeepSparse's engine has no
    Elu). Not used for training: ``exp`` overflows for large inputs and would give NaN gradients.
    """

    deploy: bool = False

    def set_deploy_form(self, enabled: bool) -> None:
        self.deploy = bool(enabled)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=2, padding_mode="circular")
        self.norm = nn.BatchNorm1d(channels)
        self.activation = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    @staticmethod
    def out_length(length: int) -> int:
        """Sequence length after the layer (padding 2 lengthens by 2, the pool halves, rounding up)."""
        return (length + 2 + 2 - 3) // 2 + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv(x.transpose(1, 2)))
        y = F.relu(y) - F.relu(1.0 - torch.exp(y)) if self.deploy else self.activation(y)
        return self.pool(y).transpose(1, 2)


class Encoder(nn.Module):
    """A stack of encoder layers, optionally interleaved with distilling layers, then an optional norm."""

    def __init__(self, layers: list[nn.Module], distil_layers: list[nn.Module] | None = None,
                 norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.distil_layers = nn.ModuleList(distil_layers or [])
        self.norm = norm

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, attn_mask if i == 0 else None)
            if i < len(self.distil_layers):
                x = self.distil_layers[i](x)
        return self.norm(x) if self.norm is not None else x


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output and feed-forward (post-norm)."""

    def __init__(self, self_attention: nn.Module, cross_attention: nn.Module, d_model: int, d_ff: int,
                 dropout: float = 0.1, activation: str = "gelu") -> None:
        super().__init__()
        self.self_attention = self_attention
        self.cross_attention = cross_attention
        self.feed_forward = FeedForward(d_model, d_ff, dropout, activation)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cross: torch.Tensor, x_mask: torch.Tensor | None = None,
                cross_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attention(x, x, x, x_mask)[0]))
        x = self.norm2(x + self.dropout(self.cross_attention(x, cross, cross, cross_mask)[0]))
        return self.norm3(x + self.feed_forward(x))


class Decoder(nn.Module):
    """A stack of decoder layers, then a norm and a linear projection to the output channels."""

    def __init__(self, layers: list[nn.Module], norm: nn.Module | None = None,
                 projection: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.projection = projection

    def forward(self, x: torch.Tensor, cross: torch.Tensor, x_mask: torch.Tensor | None = None,
                cross_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, cross, x_mask, cross_mask)
        if self.norm is not None:
            x = self.norm(x)
        return self.projection(x) if self.projection is not None else x
