"""Keep-masks from scores: the lowest-scoring fraction of weights (or of 1×b weight blocks) is pruned, globally or
layer by layer."""

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


def block_means(values: torch.Tensor, block: int) -> torch.Tensor:
    """``[rows, groups]`` means of every ``block`` consecutive columns of 2-D ``values``; when the column count
    is not a multiple of ``block``, the remaining columns form a shorter last group (their own mean)."""
    rows, cols = values.shape
    full = cols - cols % block
    parts = [values[:, :full].reshape(rows, full // block, block).mean(dim=2)]
    if full < cols:
        parts.append(values[:, full:].mean(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def block_sizes(cols: int, block: int) -> torch.Tensor:
    """Column count of each group of ``block_means`` over ``cols`` columns (the last one may be shorter)."""
    sizes = torch.full((-(-cols // block),), block, dtype=torch.long)
    if cols % block:
        sizes[-1] = cols % block
    return sizes


def expand_blocks(keep: torch.Tensor, block: int, cols: int) -> torch.Tensor:
    """Per-column keep-mask ``[rows, cols]`` from a per-group one ``[rows, groups]``."""
    return keep.repeat_interleave(block, dim=1)[:, :cols]


def _lowest_sized_mask(scores: torch.Tensor, sizes: torch.Tensor, target: float) -> torch.Tensor:
    """Bool keep-mask over flat group ``scores``: the lowest-scoring groups are removed, as many as bring the
    removed entries (``sizes`` per group) closest to ``target`` of all entries (fewer on a tie)."""
    order = torch.sort(scores, stable=True).indices
    removed = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(sizes[order], dim=0)])
    k = int(torch.argmin((removed.double() - target * float(sizes.sum())).abs()))
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[order[:k]] = False
    return keep


def masks_from_block_scores(
    scores: dict[str, torch.Tensor], cols: dict[str, int], block: int, target: float, scope: Scope
) -> dict[str, torch.Tensor]:
    """Per-entry keep-masks ``[rows, cols]`` from per-group scores ``[rows, groups]`` (groups of ``block``
    consecutive columns, see ``block_means``): whole groups of lowest score are pruned until ``target`` of the
    entries are, over all tensors at once (``global``) or per tensor (``layer``)."""
    sizes = {name: block_sizes(cols[name], block).expand_as(s) for name, s in scores.items()}
    if scope == "layer":
        group_keep = {
            name: _lowest_sized_mask(s.flatten().float(), sizes[name].flatten(), target).view(s.shape)
            for name, s in scores.items()
        }
    else:
        flat = torch.cat([s.flatten().float() for s in scores.values()])
        keep = _lowest_sized_mask(flat, torch.cat([sizes[n].flatten() for n in scores]), target)
        group_keep, offset = {}, 0
        for name, s in scores.items():
            group_keep[name] = keep[offset : offset + s.numel()].view(s.shape)
            offset += s.numel()
    return {name: expand_blocks(k, block, cols[name]) for name, k in group_keep.items()}
