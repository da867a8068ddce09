"""Real discrete Fourier transforms as matrix products, for the deploy forms of the FFT-based blocks.

``torch.fft.rfft``/``irfft`` do not export to ONNX opsets the DeepSparse stack supports, so the deploy forms
compute them as products with constant cosine/sine matrices (exact up to float rounding). The matrices are
built in float64 and rounded once to float32.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=64)
def _analysis(length: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(length)[:, None]
    f = np.arange(length // 2 + 1)[None, :]
    angle = 2.0 * np.pi * t * f / length
    return np.cos(angle).astype(np.float32), (-np.sin(angle)).astype(np.float32)


@lru_cache(maxsize=64)
def _synthesis(n: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.arange(n // 2 + 1)[:, None]
    t = np.arange(n)[None, :]
    angle = 2.0 * np.pi * f * t / n
    # Each bin stands for itself and its mirror, except the DC bin and (n even) the Nyquist bin.
    weight = np.full((n // 2 + 1, 1), 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return (weight * np.cos(angle) / n).astype(np.float32), (-weight * np.sin(angle) / n).astype(np.float32)


def rdft_matrices(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of shape ``[length, length // 2 + 1]``: ``x @ cos`` and ``x @ sin`` are the real and
    imaginary parts of ``torch.fft.rfft(x)`` along the last axis."""
    cos, sin = _analysis(int(length))  # int(): a traced size is a tensor; the matrices are constants
    return torch.from_numpy(cos.copy()), torch.from_numpy(sin.copy())


def irdft_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of shape ``[n // 2 + 1, n]``: ``re @ cos + im @ sin`` equals
    ``torch.fft.irfft(torch.complex(re, im), n=n)`` along the last axis (the imaginary parts of the DC and
    Nyquist bins are ignored, as irfft does)."""
    cos, sin = _synthesis(int(n))
    return torch.from_numpy(cos.copy()), torch.from_numpy(sin.copy())


def fit_bins(re: torch.Tensor, im: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate or zero-pad the last (frequency) axis to ``bins`` bins, as irfft does with its input."""
    have = re.shape[-1]
    if have >= bins:
        return re[..., :bins], im[..., :bins]
    pad = re.new_zeros(*re.shape[:-1], bins - have)
    return torch.cat([re, pad], dim=-1), torch.cat([im, pad], dim=-1)


class DeployFormMixin:
    """``set_deploy_form(True)`` switches the FFT calls of a block to DFT matrix products."""

    deploy: bool = False

    def set_deploy_form(self, enabled: bool) -> None:
        self.deploy = bool(enabled)
