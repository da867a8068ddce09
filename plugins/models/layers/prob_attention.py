"""ProbSparse self-attention (Zhou et al., 2021, "Informer").

Only the ``u = factor * ceil(ln L_Q)`` queries with the largest sparsity measurement
``M(q) = max_j(q.k_j) - sum_j(q.k_j) / L_K`` (over ``factor * ceil(ln L_K)`` sampled keys per query) attend;
the others output the mean of the values (or, with a causal mask, their cumulative sum).

Written for export: the sampled keys are a constant count matrix drawn at build time from a seeded generator
(a buffer, saved with the checkpoint); in training mode a fresh sample is drawn per call, as in the reference.
Top-u selection is a rank comparison (no TopK/scatter), attention is plain matmuls and every mask is an
additive constant. Computing the scores of all queries and keeping the selected rows gives exactly the
selected queries' attention; at the field's window lengths (L <= a few hundred) this is also faster on CPU than
gathering sampled keys.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plugins.models.layers.attention import MASK_VALUE, causal_additive_mask
from plugins.models.layers.autocorrelation import _ones_column, top_k_mask_by_rank


@lru_cache(maxsize=32)
def _lower_ones(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype=np.float32))


def sample_sizes(factor: int, query_len: int, key_len: int) -> tuple[int, int]:
    """``(keys sampled per query, queries kept)`` = ``factor * ceil(ln L)`` capped at ``L`` (at least 1)."""
    def size(length: int) -> int:
        return max(1, min(factor * int(math.ceil(math.log(length))), length))

    return size(key_len), size(query_len)


def draw_sample_counts(query_len: int, key_len: int, per_query: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``[L_Q, L_K]`` float counts: how often each key is drawn (with replacement) for each query."""
    index = torch.randint(key_len, (query_len, per_query), generator=generator)
    return torch.zeros(query_len, key_len).scatter_add_(1, index, torch.ones(query_len, per_query))


class ProbAttention(nn.Module):
    """ProbSparse attention for fixed query/key lengths (known from the config)."""

    def __init__(self, mask_flag: bool, factor: int, query_len: int, key_len: int, scale: float | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if mask_flag and query_len != key_len:
            raise ValueError("masked ProbSparse attention needs equal query and key lengths")
        self.mask_flag = mask_flag
        self.scale = scale
        self.query_len = query_len
        self.key_len = key_len
        self.per_query, self.n_top = sample_sizes(factor, query_len, key_len)
        self.register_buffer("sample_counts", draw_sample_counts(query_len, key_len, self.per_query, generator))

    @property
    def sample_bias(self) -> torch.Tensor:
        # derived from the saved counts at call time, so a loaded checkpoint's sample is the one used;
        # under tracing the buffer is an initializer and this folds to a constant
        return (self.sample_counts == 0).to(self.sample_counts.dtype) * MASK_VALUE

    def _unsampled_bias(self, counts: torch.Tensor) -> torch.Tensor:
        """``MASK_VALUE`` where a key was not sampled for a query, else 0 (a constant at evaluation)."""
        if self.training:
            return (counts == 0).to(counts.dtype) * MASK_VALUE
        return self.sample_bias

    def _counts(self) -> torch.Tensor:
        if self.training:
            return draw_sample_counts(self.query_len, self.key_len, self.per_query).to(self.sample_counts.device)
        return self.sample_counts

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """Returns the context as ``[B, H, L_Q, D]``: like the reference implementation, the caller's
        ``reshape(B, L_Q, -1)`` then reads it head-major (Time-Series-Library's Informer)."""
        if queries.shape[1] != self.query_len or keys.shape[1] != self.key_len:
            raise ValueError(f"ProbAttention built for lengths ({self.query_len}, {self.key_len}), "
                             f"got ({queries.shape[1]}, {keys.shape[1]})")
        q = queries.permute(0, 2, 1, 3)  # B H L E
        k = keys.permute(0, 2, 3, 1)  # B H E S
        v = values.permute(0, 2, 1, 3)  # B H S D
        scores = torch.matmul(q, k)  # B H L S, unscaled as in the sparsity measurement
        counts = self._counts()
        # row maximum as a max-pool over the whole row: MaxPool runs inside DeepSparse's engine, ReduceMax does not
        masked = (scores + self._unsampled_bias(counts)).reshape(-1, 1, self.key_len)
        sampled_max = F.max_pool1d(masked, self.key_len).reshape(scores.shape[:-1])
        ones = torch.from_numpy(_ones_column(self.key_len)).to(scores.device)
        sparsity = sampled_max - torch.matmul(scores * counts, ones).squeeze(-1) / self.key_len
        selected = top_k_mask_by_rank(sparsity, self.n_top).unsqueeze(-1)  # B H L 1

        scale = self.scale or 1.0 / math.sqrt(q.shape[-1])
        scores = scores * scale
        if self.mask_flag:
            scores = scores + causal_additive_mask(self.query_len, scores.device)
        attended = torch.matmul(torch.softmax(scores, dim=-1), v)
        if self.mask_flag:
            lazy = torch.matmul(torch.from_numpy(_lower_ones(self.key_len)).to(v.device), v)  # cumsum
        else:
            lazy = v.mean(dim=-2, keepdim=True)  # broadcast over the queries
        return selected * attended + (1.0 - selected) * lazy, None
