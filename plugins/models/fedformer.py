"""FEDformer (Zhou et al., 2022), Fourier version: Autoformer's decomposition architecture with the
frequency enhanced block (FEB-f) as self-attention and the frequency enhanced attention (FEA-f) as
cross-attention, each on ``modes`` frequency modes chosen at random (seeded) or the lowest ones.

The selected modes are buffers: saved with the checkpoint, so a reload computes the same function whatever
``mode_seed`` the reloading model was built with.

As in Time-Series-Library's ``models/FEDformer.py``, each stack has one frequency-enhanced block per role (its
complex weights and its selected modes) shared by all its layers (``share_blocks``): the encoder's FEB-f, the
decoder's FEB-f and the decoder's FEA-f. A shared module appears in each layer, its parameters are counted once,
and the ``state_dict`` holds its tensors under every layer's name (one storage).
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
    share_blocks: bool = Field(
        True, description="one frequency-enhanced block per stack — encoder self, decoder self, decoder cross — "
        "shared by all layers of that stack, as in the reference implementation; False builds one per layer")
    cross_activation: Literal["tanh", "complex_tanh"] = Field(
        "tanh", description="FEA-f score activation: tanh of the real and imaginary parts (Time-Series-Library) "
        "or the complex tanh (the FEDformer authors' code)")
    position_embedding: bool = Field(
        True, description="add sinusoidal positions in the embeddings (Time-Series-Library); False embeds values "
        "and time features only (the FEDformer authors' code)")
    moving_avg: int = Field(25, ge=1, description="moving-average window of the series decomposition; an even "
                            "window is padded one step more at the start (the FEDformer authors' code uses 24)")


def _shared_copies_agree(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                         local_metadata: dict, strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                         error_msgs: list[str]) -> None:
    """Load pre-hook: a shared Fourier block's (FEB-f or FEA-f) tensors are in a state_dict once per layer
    name; refuse a checkpoint whose copies differ (one saved with ``share_blocks=False``, whose layers had their
    own blocks), which would otherwise load silently with the last layer's tensors."""
    names_by_block: dict[int, list[str]] = {}
    for name, sub in module.named_modules(remove_duplicate=False):
        if isinstance(sub, FourierBlock | FourierCrossAttention):
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
                                  f"(share_blocks=True): was the checkpoint saved with share_blocks=False?")


def build(params: BaseModel, shape: DataShape) -> nn.Module:
    assert isinstance(params, FEDformerParams)
    check_shape("fedformer", shape, params)
    p = params
    dec_len = shape.label_len + shape.pred_len
    if min(shape.seq_len, dec_len) < 2:
        raise UserError(f"fedformer: seq_len={shape.seq_len} and label_len+pred_len={dec_len} must be >= 2")
    generator = torch.Generator().manual_seed(p.mode_seed)

    def encoder_self() -> FourierBlock:
        return FourierBlock(p.d_model, p.n_heads, shape.seq_len, p.modes, p.mode_select, generator)

    def decoder_pair() -> tuple[FourierBlock, FourierCrossAttention]:
        return (FourierBlock(p.d_model, p.n_heads, dec_len, p.modes, p.mode_select, generator),
                FourierCrossAttention(p.d_model, p.n_heads, dec_len, shape.seq_len, p.modes, p.mode_select,
                                      generator, activation=p.cross_activation))

    # modes are drawn in build order: the encoder block(s), then each decoder (self, cross) pair; so the
    # default (one decoder layer) draws the same modes as before the decoder blocks were shared
    if p.share_blocks:
        shared_encoder = encoder_self()
        shared_decoder = decoder_pair()
        encoder = [shared_encoder for _ in range(p.e_layers)]
        decoder = [shared_decoder for _ in range(p.d_layers)]
    else:
        encoder = [encoder_self() for _ in range(p.e_layers)]
        decoder = [decoder_pair() for _ in range(p.d_layers)]
    model = DecompositionForecaster(p, shape, encoder, decoder, with_position=p.position_embedding)
    if p.share_blocks and max(p.e_layers, p.d_layers) > 1:
        model.register_load_state_dict_pre_hook(_shared_copies_agree)
    return model


PLUGIN = ModelPluginEntry(
    name="fedformer",
    description="FEDformer: frequency enhanced decomposed Transformer, Fourier version (Zhou et al., 2022)",
    params_model=FEDformerParams,
    factory=build,
)
