"""Head-dimension pruning of FEDformer's Fourier blocks, next to Torch-Pruning's DepGraph.

A Fourier block reads its inputs per head, ``[B, H, E, L]``, mixes the ``E`` input dimensions of each head
and mode with its complex weights ``[H, E, O, M]`` (``weights1``/``weights2`` hold real and imaginary parts)
and returns ``[B, H, O, L]``. The input dimension ``e`` of head ``h`` is one channel shared by the layers
the block declares in ``coupled_projections`` (the query projection; for the cross-attention also the key
projection, whose dimensions meet the query's in the scores) and by ``weights*[h, e]``. Removing the same
``e`` from every head of all of them is exact structured pruning: the block computes with fewer input
dimensions, nothing else changes.

The output dimension ``O`` is not prunable: like the reference, ``AttentionLayer`` reads the ``[B, H, O, L]``
block output as ``[B, L, H*O]``, which interleaves time and channels, so an output dimension is not a set of
out-projection inputs. For the same reason whole heads are never removed from a Fourier block.

A block may be shared: FEDformer, as the reference, hands one FEB-f to every encoder layer, one FEB-f to every
decoder layer and one FEA-f to every decoder layer. A shared block's input dimension ``e`` is then also the
channel ``e`` of every coupled projection of every layer that calls it — for a shared FEB-f the query
projections of all its layers; for a shared FEA-f the query projections (its query side) and the key
projections (its key side) of all its layers, since one weight axis ``E`` serves both sides. So one group holds
the block and the coupled projections of all the layers that call it, and they lose the same dimensions
together.

DepGraph sees these layers coupled with free parameters and leaves them alone (``structured._plan`` puts
them among the ignored layers); this module scores and slices them, and ``structured`` ranks their scores
together with Torch-Pruning's groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from plugins.models.layers.fourier_blocks import FourierBlock, FourierCrossAttention


@dataclass
class FourierGroup:
    """One Fourier block and the attention layers that call it (one, or several for a shared block): the
    prunable input head dimensions they have in common."""

    block_name: str  # the block's name in ``named_modules`` (its first name when shared)
    block: FourierBlock | FourierCrossAttention
    layers: list[tuple[str, nn.Module]]  # (name, attention layer) of every layer whose inner attention it is
    # (module name, layer) whose output channels are the block's input head dims: for each layer in ``layers``
    # order, its ``block.coupled_projections`` in that order (FEA-f: query, key; FEB-f: query)
    projections: list[tuple[str, nn.Linear]]

    @property
    def name(self) -> str:
        """The first attention layer around the block."""
        return self.layers[0][0]

    @property
    def layer(self) -> nn.Module:
        return self.layers[0][1]

    @property
    def key(self) -> str:
        """Name the group is ranked under (its first query projection)."""
        return self.projections[0][0]

    @property
    def heads(self) -> int:
        return int(self.layer.n_heads)

    @property
    def head_dim(self) -> int:
        return int(self.block.weights1.shape[1])

    def member_names(self) -> list[str]:
        """Modules whose own parameters shrink (for the reduction bookkeeping), each once."""
        return [n for n, _ in self.projections] + [self.block_name]


def fourier_groups(model: nn.Module) -> list[FourierGroup]:
    """One group per Fourier block of ``model``, with every attention layer whose inner attention it is."""
    block_names = {id(m): n for n, m in model.named_modules()}  # deduplicated: a shared block's first name
    groups: dict[int, FourierGroup] = {}
    for name, module in model.named_modules():
        block = getattr(module, "inner_attention", None)
        if not isinstance(block, FourierBlock | FourierCrossAttention):
            continue
        prefix = f"{name}." if name else ""
        projections = [(prefix + attr, getattr(module, attr)) for attr in block.coupled_projections]
        group = groups.get(id(block))
        if group is None:
            groups[id(block)] = FourierGroup(block_names[id(block)], block, [(name, module)], projections)
            continue
        if int(module.n_heads) != group.heads:
            raise ValueError(f"layers {group.name} and {name} share a Fourier block with different head counts")
        group.layers.append((name, module))
        group.projections.extend(projections)
    for group in groups.values():
        width = group.heads * group.head_dim
        for projection_name, linear in group.projections:  # coupled channels: one width for all of them
            if linear.out_features != width:
                raise ValueError(f"{projection_name} has {linear.out_features} outputs, but the Fourier block "
                                 f"{group.block_name} reads {group.heads} heads of {group.head_dim} dims")
    return list(groups.values())


def _local(weight: torch.Tensor, grad: torch.Tensor | None, taylor: bool) -> torch.Tensor:
    """Per-output-row importance, as Torch-Pruning's group importances compute it (bias not counted)."""
    w = weight.detach().float()
    if taylor:
        if grad is None:
            return torch.zeros(w.shape[0])
        values = (w * grad.detach().float()).abs()
    else:
        values = w.pow(2)
    return values.reshape(w.shape[0], -1).sum(1)


def group_scores(group: FourierGroup, taylor: bool = False) -> torch.Tensor:
    """Importance of each head dimension ``[E]``: mean over the group's members, mean over heads, normalised
    by its mean (Torch-Pruning's ``group_reduction="mean"``, ``normalizer="mean"``)."""
    heads, dim = group.heads, group.head_dim
    members = [_local(p.weight, p.weight.grad, taylor).view(heads, dim) for _, p in group.projections]
    for w in (group.block.weights1, group.block.weights2):
        members.append(_local(w.reshape(heads * dim, -1), None if w.grad is None else
                              w.grad.reshape(heads * dim, -1), taylor).view(heads, dim))
    imp = torch.stack(members).mean(0).mean(0)
    mean = imp.mean()
    return imp / mean if mean > 0 else imp


def kept_dims(dim: int, heads: int, ratio: float, round_to: int | None) -> int:
    """Head dimensions kept at ``ratio``: at least one; ``heads * kept`` a multiple of ``round_to`` when it
    can be."""
    keep = max(1, int(dim * (1.0 - ratio)))  # Torch-Pruning's rounding of a channel ratio
    if round_to:
        step = round_to // torch.gcd(torch.tensor(round_to), torch.tensor(heads)).item()
        rounded = max(step, (keep + step - 1) // step * step)  # round up, as Torch-Pruning does
        keep = min(dim, rounded)
    return keep


def _slice_linear_out(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[rows].clone(), requires_grad=linear.weight.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[rows].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features = int(rows.numel())


@torch.no_grad()
def prune_group(group: FourierGroup, ratio: float, round_to: int | None, taylor: bool = False) -> int:
    """Remove the least important ``ratio`` of the head dimensions from every head of the group (the same
    dimensions in each head, in the block once and in the projections of every layer that calls it); return
    the head dimensions left."""
    heads, dim = group.heads, group.head_dim
    keep = kept_dims(dim, heads, ratio, round_to)
    if keep >= dim:
        return dim
    scores = group_scores(group, taylor)
    dims = torch.sort(torch.topk(scores, keep).indices).values
    rows = (torch.arange(heads)[:, None] * dim + dims[None, :]).reshape(-1)
    for _, linear in group.projections:
        _slice_linear_out(linear, rows)
    group.block.keep_input_dims(dims)
    return keep
