"""Auto-Correlation (Wu et al., 2021, "Autoformer"): period-based dependencies found through the
autocorrelation of queries and keys, aggregated by rolling the values by the top-k time delays.

Inner-attention interface of ``layers.attention`` (``queries [B, L, H, E]`` ...), so ``AttentionLayer``
provides the projections. Training aggregates with delays shared by the batch, evaluation with per-sample
delays (as the reference implementation does). The aggregation is written as a circular cross-correlation of
the values with a sparse lag-weight vector, which equals the sum of rolled copies.

Deploy form (``set_deploy_form(True)``): FFTs become DFT matrix products and the top-k lag selection becomes
a rank comparison written with arithmetic ops (no TopK, scatter or comparison ops), so the block exports to
plain ONNX ops.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from plugins.models.layers.attention import MASK_VALUE
from plugins.models.layers.fourier import DeployFormMixin, irdft_matrices, rdft_matrices


@lru_cache(maxsize=32)
def _strictly_lower(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype=np.float32), k=-1)


@lru_cache(maxsize=32)
def _ones_column(n: int) -> np.ndarray:
    return np.ones((n, 1), dtype=np.float32)


# Step functions as ``clip(x * BIG, 0, 1)``: exactly 0 for x <= 0 and 1 for x >= 1 / BIG, which every non-zero
# difference of the (ordinary, non-denormal) scores compared here exceeds. Clip/Mul/MatMul run inside
# DeepSparse's engine; comparison and boolean ops (Greater, Equal, And, Cast) do not.
_BIG = 1e30


def _step(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x * _BIG, 0.0, 1.0)


def top_k_mask_by_rank(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Float mask (1 for the ``k`` largest entries of the last axis, else 0) from pairwise comparisons.

    Entry ``i`` is kept when fewer than ``k`` entries rank before it (larger, or equal with a lower index), so
    exactly ``k`` are kept even with ties. Written with Sub/Mul/Clip/MatMul only: exportable without TopK or
    comparison ops.
    """
    n = int(scores.shape[-1])
    diff = scores.unsqueeze(-2) - scores.unsqueeze(-1)  # [..., i, j] = s_j - s_i
    larger = _step(diff)
    equal = 1.0 - larger - _step(-diff)
    earlier = torch.from_numpy(_strictly_lower(n)).to(scores.device)  # j < i; a constant under tracing
    before = larger + equal * earlier
    rank = torch.matmul(before, torch.from_numpy(_ones_column(n)).to(scores.device)).squeeze(-1)
    return _step(k - 0.5 - rank)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Same mask as ``top_k_mask_by_rank`` through ``torch.topk`` (training form)."""
    index = torch.topk(scores, k, dim=-1).indices
    return torch.zeros_like(scores).scatter(-1, index, 1.0)


class AutoCorrelation(DeployFormMixin, nn.Module):
    """Auto-Correlation with top-``int(factor * ln L)`` time-delay aggregation."""

    def __init__(self, factor: int = 1) -> None:
        super().__init__()
        self.factor = factor

    def _rfft(self, x: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectrum of ``x`` zero-padded or truncated to ``length`` samples (last axis)."""
        if self.deploy:
            x = x[..., :length]
            cos, sin = rdft_matrices(length)
            rows = int(x.shape[-1])  # zero padding == dropping the matrix rows of the padded samples
            return x @ cos[:rows].to(x.device), x @ sin[:rows].to(x.device)
        spec = torch.fft.rfft(x, n=length, dim=-1)
        return spec.real, spec.imag

    def _irfft(self, re: torch.Tensor, im: torch.Tensor, n: int) -> torch.Tensor:
        if self.deploy:
            cos, sin = irdft_matrices(n)
            return re @ cos.to(re.device) + im @ sin.to(re.device)
        return torch.fft.irfft(torch.complex(re, im), n=n, dim=-1)

    def _cross_correlation(self, a: torch.Tensor, b: torch.Tensor, length: int, n: int) -> torch.Tensor:
        """``irfft(A * conj(B), n)`` with ``A``, ``B`` the spectra of ``a``, ``b`` zero-padded or truncated to
        ``length``; for ``n == length``: ``out[t] = sum_s a[(s + t) mod L] * b[s]``."""
        ar, ai = self._rfft(a, length)
        br, bi = self._rfft(b, length)
        return self._irfft(ar * br + ai * bi, ai * br - ar * bi, n)

    def _lag_weights(self, mean_corr: torch.Tensor, top_k: int) -> torch.Tensor:
        if self.training:  # delays shared by the whole batch
            mask = top_k_mask(mean_corr.mean(0), top_k).expand_as(mean_corr)
        elif self.deploy:
            mask = top_k_mask_by_rank(mean_corr, top_k)
        else:
            mask = top_k_mask(mean_corr, top_k)
        # softmax over the selected lags only; the others get exactly zero weight
        return torch.softmax(mean_corr + (1.0 - mask) * MASK_VALUE, dim=-1)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        length = int(queries.shape[1])  # static: shapes come from the config
        # keys and values shorter than the queries are zero-padded, longer ones truncated (inside the rfft)
        q = queries.permute(0, 2, 3, 1)  # B H E L
        k = keys.permute(0, 2, 3, 1)  # B H E S
        v = values.permute(0, 2, 3, 1)
        n = 2 * (length // 2)  # irfft's default output length (drops a sample when L is odd, as the reference)
        corr = self._cross_correlation(q, k, length, n)  # B H E n
        # mean over heads and channels as a product with a constant column: runs inside DeepSparse's engine
        flat = corr.reshape(corr.shape[0], -1, n).transpose(1, 2)  # B n H*E
        width = int(flat.shape[-1])
        mean_corr = torch.matmul(flat, torch.from_numpy(_ones_column(width) / width).to(flat.device)).squeeze(-1)
        top_k = min(max(int(self.factor * math.log(length)), 1), n)
        weights = self._lag_weights(mean_corr, top_k)[:, None, None, :]
        # sum_i w_i * roll(v, -delay_i) == cross-correlation of v with the lag weights
        out = self._cross_correlation(v, weights, length, length)
        return out.permute(0, 3, 1, 2), None
