"""Patching of univariate series (PatchTST, Nie et al., ICLR 2023; Crossformer's segments).

``Patcher`` pads the end of ``[N, L]`` series by repeating the last value and cuts ``patch_num`` windows of
``patch_len`` steps every ``stride`` steps, as one product with a constant selection matrix.

Broadcasts over the batch are written as concatenations of copies (``repeat_by_concat``): the legacy ONNX
exporter turns ``expand``/``repeat`` into ``Expand``/``Tile`` guarded by ``Where`` ops, a concatenation is one
``Concat`` (or a folded constant).
"""

from __future__ import annotations

import torch
from torch import nn

from plugins.models.layers.embedding import PositionalEmbedding


def repeat_by_concat(x: torch.Tensor, times: int, dim: int = 0) -> torch.Tensor:
    """``times`` copies of ``x`` concatenated along ``dim`` (``x.repeat`` along one axis)."""
    return x if times == 1 else torch.cat([x] * times, dim=dim)


def patch_count(seq_len: int, patch_len: int, stride: int, pad: int) -> int:
    """Number of windows of ``patch_len`` every ``stride`` steps in ``seq_len + pad`` steps."""
    length = seq_len + pad
    if length < patch_len:
        raise ValueError(f"a patch of {patch_len} steps does not fit in {length} steps")
    return (length - patch_len) // stride + 1


class Patcher(nn.Module):
    """``[N, L] -> [N, patch_num, patch_len]`` after repeating the last value ``pad`` times.

    Padding and cutting are one linear selection, so the patches are ``x @ S`` with a constant 0/1 matrix
    ``S [L, patch_num * patch_len]`` (edge padding = clamping the source index), then a reshape: an export
    sees a ``MatMul`` with a constant, not ``Gather``/``Unfold``/``Pad`` (DeepSparse fails to compile the
    gather/concat form after instance normalisation). Non-overlapping patches that tile the unpadded series
    are a plain reshape.
    """

    def __init__(self, seq_len: int, patch_len: int, stride: int, pad: int) -> None:
        super().__init__()
        self.seq_len, self.patch_len, self.stride, self.pad = seq_len, patch_len, stride, pad
        self.patch_num = patch_count(seq_len, patch_len, stride, pad)
        self.tiles = stride == patch_len and pad == 0 and seq_len == self.patch_num * patch_len
        starts = torch.arange(self.patch_num) * stride
        sources = (starts[:, None] + torch.arange(patch_len)[None, :]).clamp(max=seq_len - 1).reshape(-1)
        selection = torch.zeros(seq_len, self.patch_num * patch_len)
        selection[sources, torch.arange(sources.numel())] = 1.0
        self.register_buffer("selection", selection, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tiles:
            x = torch.matmul(x, self.selection)
        return x.reshape(-1, self.patch_num, self.patch_len)


class PatchEmbedding(nn.Module):
    """Patches -> ``d_model`` by a bias-free linear map, plus fixed sinusoidal positions, then dropout."""

    def __init__(self, seq_len: int, d_model: int, patch_len: int, stride: int, pad: int,
                 dropout: float) -> None:
        super().__init__()
        self.patcher = Patcher(seq_len, patch_len, stride, pad)
        self.value_embedding = nn.Linear(patch_len, d_model, bias=False)
        self.position_embedding = PositionalEmbedding(d_model)
        self.dropout = nn.Dropout(dropout)

    @property
    def patch_num(self) -> int:
        return self.patcher.patch_num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, L] -> [N, patch_num, d_model]``."""
        patches = self.patcher(x)
        return self.dropout(self.value_embedding(patches) + self.position_embedding(patches))
