"""FEDformer (Zhou et al., 2022), Fourier version: Autoformer's decomposition architecture with the
frequency enhanced block (FEB-f) as self-attention and the frequency enhanced attention (FEA-f) as
cross-attention, each on ``modes`` frequency modes chosen at random (seeded) or the lowest ones.

The selected modes are buffers: saved with the checkpoint, so a reload computes the same function whatever
``mode_seed`` the reloading model was built with.

As in Time-Series-Library's ``models/FEDformer.py``, one FEB-f (its complex weights and its selected modes) is
shared by every encoder layer (``share_encoder_block``): the module appears in each layer, its parameters are
counted once, and the ``state_dict`` holds its tensors under every layer's name (one storage).
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
    share_encoder_block: bool = Field(
        True, description="one frequency-enhanced block shared by every encoder layer, as in the reference "
        "implementation; False builds one per layer")


def _shared_copies_agree(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                         local_metadata: dict, strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                         error_msgs: list[str]) -> None:
    """Load pre-hook: a shared Fourier block's tensors are in a state_dict once per layer name; refuse a
    checkpoint whose copies differ (one saved with ``share_encoder_block=False``, whose encoder layers had
    their own blocks), which would otherwise load silently with the last layer's tensors."""
    names_by_block: dict[int, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        if isinstance(sub, FourierBlock):
            names_by_block.setdefault(id(sub), []).append(name)
    for names in (n for n in names_by_block.values() if len(n) > 1):
        block = module.get_submodule(names[0])
        tensor_names = [n for n, _ in block.named_parameters(recurse=False)]
        tensor_names += [n for n, _ in block.named_buffers(recurse=False)]
        for tensor_name in tensor_names:
            keys = [f"{prefix}{n}.{tensor_name}" for n in names]
            present = [k for k in keys if k in state_dict]  # a missing key is reported by the strict check
            for key in present[1:]:
                first, other = state_dict[present[0]], state_dict[key]
                if first.is_meta or other.is_meta or torch.equal(first, other):
                    continue
                error_msgs.append(f"{key} differs from {present[0]}, but these layers share one Fourier block "
                                  f"(share_encoder_block=True): was the checkpoint saved with "
                                  f"share_encoder_block=False?")


def build(params: BaseModel, shape: DataShape) -> nn.Module:
    assert isinstance(params, FEDformerParams)
    check_shape("fedformer", shape, params)
    p = params
    dec_len = shape.label_len + shape.pred_len
    if min(shape.seq_len, dec_len) < 2:
        raise UserError(f"fedformer: seq_len={shape.seq_len} and label_len+pred_len={dec_len} must be >= 2")
    generator = torch.Generator().manual_seed(p.mode_seed)

    def encoder_block() -> FourierBlock:
        return FourierBlock(p.d_model, p.n_heads, shape.seq_len, p.modes, p.mode_select, generator)

    if p.share_encoder_block:
        shared = encoder_block()
        encoder = [shared for _ in range(p.e_layers)]
    else:
        encoder = [encoder_block() for _ in range(p.e_layers)]
    decoder = [(FourierBlock(p.d_model, p.n_heads, dec_len, p.modes, p.mode_select, generator),
                FourierCrossAttention(p.d_model, p.n_heads, dec_len, shape.seq_len, p.modes, p.mode_select,
                                      generator))
               for _ in range(p.d_layers)]
    model = DecompositionForecaster(p, shape, encoder, decoder, with_position=True)
    if p.share_encoder_block and p.e_layers > 1:
        model.register_load_state_dict_pre_hook(_shared_copies_agree)
    return model


PLUGIN = ModelPluginEntry(
    name="fedformer",
    description="FEDformer: frequency enhanced decomposed Transformer, Fourier version (Zhou et al., 2022)",
    params_model=FEDformerParams,
    factory=build,
)
