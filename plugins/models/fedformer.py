"""FEDformer (Zhou et al., 2022), Fourier version: Autoformer's decomposition architecture with the
frequency enhanced block (FEB-f) as self-attention and the frequency enhanced attention (FEA-f) as
cross-attention, each on ``modes`` frequency modes chosen at random (seeded) or the lowest ones.

The selected modes are buffers: saved with the checkpoint, so a reload computes the same function whatever
``mode_seed`` the reloading model was built with.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from plugins.models.autoformer import DecompositionForecaster, DecompParams
from plugins.models.base import ModelPluginEntry, check_shape
from plugins.models.layers.fourier_blocks import FourierBlock, FourierCrossAttention
from tsbench_core.data import DataShape
from tsbench_core.errors import UserError


class FEDformerParams(DecompParams):
    """FEDformer hyperparameters (ETTh1 defaults; modes 32, random mode selection, as published)."""

    modes: int = Field(32, ge=1, description="frequency modes kept by each Fourier block")
    mode_select: Literal["random", "low"] = Field("random", description="random modes or the lowest ones")
    mode_seed: int = Field(0, description="seed of the random mode selection")


def build(params: BaseModel, shape: DataShape) -> nn.Module:
    assert isinstance(params, FEDformerParams)
    check_shape("fedformer", shape, params)
    p = params
    dec_len = shape.label_len + shape.pred_len
    if min(shape.seq_len, dec_len) < 2:
        raise UserError(f"fedformer: seq_len={shape.seq_len} and label_len+pred_len={dec_len} must be >= 2")
    generator = torch.Generator().manual_seed(p.mode_seed)
    encoder = [FourierBlock(p.d_model, p.n_heads, shape.seq_len, p.modes, p.mode_select, generator)
               for _ in range(p.e_layers)]
    decoder = [(FourierBlock(p.d_model, p.n_heads, dec_len, p.modes, p.mode_select, generator),
                FourierCrossAttention(p.d_model, p.n_heads, dec_len, shape.seq_len, p.modes, p.mode_select,
                                      generator))
               for _ in range(p.d_layers)]
    return DecompositionForecaster(p, shape, encoder, decoder, with_position=True)


PLUGIN = ModelPluginEntry(
    name="fedformer",
    description="FEDformer: frequency enhanced decomposed Transformer, Fourier version (Zhou et al., 2022)",
    params_model=FEDformerParams,
    factory=build,
)
