"""Keep-masks from per-weight scores: the lowest-scoring fraction is pruned, globally or layer by layer."""

from __future__ import annotations

from typing import Literal

import torch

Scope = Literal["global", "layer"]


def _lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool keep-mask over flat ``scores`` with exactly ``k`` lowest entries removed."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.topk(scores, k, largest=False, sorted=False).indices] = False
    return keep


def masks_from_scores(
    scores: dict[str, torch.Tensor], target: float, scope: Scope
) -> dict[str, torch.Tensor]:
    """Prune ``round(target * n)`` entries over all tensors at once (``global``) or per tensor (``layer``)."""
    if scope == "layer":
        return {
            name: _lowest_k_mask(s.flatten().float(), round(target * s.numel())).view(s.shape)
            for name, s in scores.items()
        }
    flat = torch.cat([s.flatten().float() for s in scores.values()])
    keep = _lowest_k_mask(flat, round(target * flat.numel()))
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, s in scores.items():
        masks[name] = keep[offset : offset + s.numel()].view(s.shape)
        offset += s.numel()
    return masks
