"""Frequency-enhanced blocks of FEDformer (Zhou et al., 2022): the Fourier enhanced block (FEB-f) and the
Fourier enhanced cross-attention (FEA-f), on a fixed subset of frequency modes.

The modes are drawn once (``mode_select="random"``, from a seeded generator) or are the lowest ones
(``"low"``); they are buffers, saved with the checkpoint, so a reloaded model computes the same function.
Complex products are written in real arithmetic (pairs of real weights, as the reference's
``weights1``/``weights2``). Deploy form: rfft/irfft become DFT matrix products.

Both blocks follow the inner-attention interface of ``layers.attention`` and, like the reference, return
``[B, H, E, L]``; ``AttentionLayer``'s ``reshape(B, L, -1)`` then reads it as the reference's layer does.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from plugins.models.layers.fourier import DeployFormMixin, irdft_matrices, rdft_matrices

ModeSelect = Literal["random", "low"]


def select_modes(length: int, modes: int, method: ModeSelect, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Sorted indices of ``min(modes, length // 2)`` frequency bins among ``0 .. length // 2 - 1``."""
    count = min(modes, length // 2)
    if method == "random":
        return torch.sort(torch.randperm(length // 2, generator=generator)[:count]).values
    return torch.arange(count)


def complex_channel_mix(re: torch.Tensor, im: torch.Tensor, w_re: torch.Tensor, w_im: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head and mode, ``out[b,h,o,m] = sum_i x[b,h,i,m] * w[h,i,o,m]`` for complex ``x`` and ``w``,
    as batched real matmuls. ``re``/``im``: ``[B, H, I, M]``; weights ``[H, I, O, M]``."""
    xr, xi = re.permute(1, 3, 0, 2), im.permute(1, 3, 0, 2)  # H M B I
    wr, wi = w_re.permute(0, 3, 1, 2), w_im.permute(0, 3, 1, 2)  # H M I O
    out_re = torch.matmul(xr, wr) - torch.matmul(xi, wi)
    out_im = torch.matmul(xr, wi) + torch.matmul(xi, wr)
    return out_re.permute(2, 0, 3, 1), out_im.permute(2, 0, 3, 1)  # B H O M


class _SpectralBase(DeployFormMixin, nn.Module):
    """Selected-mode analysis and synthesis, by FFT (training form) or DFT matrices (deploy form).

    ``weights1``/``weights2`` are ``[H, E, O, M]``: the input head dimension ``E`` is shared with the output
    channels of the ``AttentionLayer`` projections named in ``coupled_projections`` (what a structured pruner
    may shrink together, see ``keep_input_dims``); the output dimension ``O`` is tied to the out-projection
    through the reference's ``[B, H, O, L] -> [B, L, H*O]`` reshape and is never pruned.
    """

    coupled_projections: tuple[str, ...] = ("query_projection",)
    weights1: nn.Parameter
    weights2: nn.Parameter

    @torch.no_grad()
    def keep_input_dims(self, dims: torch.Tensor) -> None:
        """Keep only the input head dimensions ``dims`` (the same in every head) of the spectral weights."""
        for attr in ("weights1", "weights2"):
            old = getattr(self, attr)
            kept = old.detach().index_select(1, dims.to(old.device)).clone()
            setattr(self, attr, nn.Parameter(kept, requires_grad=old.requires_grad))

    def _spectrum(self, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real and imaginary parts of ``rfft(x)`` at the bins ``index`` (last axis)."""
        if self.deploy:
            cos, sin = rdft_matrices(x.shape[-1])
            cos, sin = cos.to(x.device).index_select(1, index), sin.to(x.device).index_select(1, index)
            return x @ cos, x @ sin
        spec = torch.fft.rfft(x, dim=-1).index_select(-1, index)
        return spec.real, spec.imag

    def _synthesis(self, re: torch.Tensor, im: torch.Tensor, bins: torch.Tensor, n: int) -> torch.Tensor:
        """``irfft`` of a spectrum that is zero except at ``bins`` (holding ``re + i im``), length ``n``."""
        if self.deploy:
            cos, sin = irdft_matrices(n)
            cos, sin = cos.to(re.device).index_select(0, bins), sin.to(re.device).index_select(0, bins)
            return re @ cos + im @ sin
        full = re.new_zeros(*re.shape[:-1], n // 2 + 1)
        spec = torch.complex(full.index_copy(-1, bins, re), full.index_copy(-1, bins, im))
        return torch.fft.irfft(spec, n=n, dim=-1)


def _spectral_weights(heads: int, d_model: int, modes: int) -> tuple[nn.Parameter, nn.Parameter]:
    scale = 1.0 / (d_model * d_model)
    shape = (heads, d_model // heads, d_model // heads, modes)
    return nn.Parameter(scale * torch.rand(shape)), nn.Parameter(scale * torch.rand(shape))


class FourierBlock(_SpectralBase):
    """FEB-f: a learned complex linear map per selected mode and head; results go to the lowest bins."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, modes: int = 32,
                 mode_select: ModeSelect = "random", generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.register_buffer("index", select_modes(seq_len, modes, mode_select, generator))
        self.weights1, self.weights2 = _spectral_weights(n_heads, d_model, len(self.index))

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        length = int(queries.shape[1])
        if length != self.seq_len:
            raise ValueError(f"FourierBlock built for length {self.seq_len}, got {length}")
        x = queries.permute(0, 2, 3, 1)  # B H E L
        re, im = complex_channel_mix(*self._spectrum(x, self.index), self.weights1, self.weights2)
        # the reference writes mode number w (whatever its frequency) to output bin w
        out_bins = torch.arange(int(self.index.shape[0]), device=x.device)
        return self._synthesis(re, im, out_bins, length), None


def complex_tanh(re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``tanh(re + i im)`` in real arithmetic: ``(tanh 2a, sin 2b · sech 2a) / (1 + cos 2b · sech 2a)``, the
    textbook ``(sinh 2a + i sin 2b) / (cosh 2a + cos 2b)`` divided through by ``cosh 2a`` (no overflow for large
    ``a``, where the value tends to ``±1``)."""
    two_a, two_b = 2.0 * re, 2.0 * im
    decay = torch.exp(-torch.abs(two_a))
    sech = 2.0 * decay / (1.0 + decay * decay)  # 1 / cosh(2a), no overflow (and no Cosh, which ONNX export lacks)
    denominator = 1.0 + torch.cos(two_b) * sech
    return torch.tanh(two_a) / denominator, torch.sin(two_b) * sech / denominator


class FourierCrossAttention(_SpectralBase):
    """FEA-f: attention between the selected modes of queries and keys (tanh-activated complex scores: by
    default tanh of the real and imaginary parts, as Time-Series-Library since 2023-02; ``"complex_tanh"``: the
    complex tanh of the FEDformer authors' code), a learned complex map, back to time.
    Queries and keys meet in the scores dimension by dimension, so both projections share the input head
    dimensions of the weights (values are not used, as in the reference)."""

    coupled_projections = ("query_projection", "key_projection")

    def __init__(self, d_model: int, n_heads: int, query_len: int, key_len: int, modes: int = 32,
                 mode_select: ModeSelect = "random", generator: torch.Generator | None = None,
                 activation: Literal["tanh", "complex_tanh"] = "tanh") -> None:
        super().__init__()
        self.d_model = d_model
        self.activation = activation
        self.query_len = query_len
        self.key_len = key_len
        self.register_buffer("index_q", select_modes(query_len, modes, mode_select, generator))
        self.register_buffer("index_kv", select_modes(key_len, modes, mode_select, generator))
        self.weights1, self.weights2 = _spectral_weights(n_heads, d_model, len(self.index_q))

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        length = int(queries.shape[1])
        if (length, int(keys.shape[1])) != (self.query_len, self.key_len):
            raise ValueError(f"FourierCrossAttention built for lengths ({self.query_len}, {self.key_len}), "
                             f"got ({length}, {keys.shape[1]})")
        qr, qi = self._spectrum(queries.permute(0, 2, 3, 1), self.index_q)  # B H E Mq
        kr, ki = self._spectrum(keys.permute(0, 2, 3, 1), self.index_kv)  # B H E Mk
        qrt, qit = qr.transpose(-1, -2), qi.transpose(-1, -2)
        # scores[x, y] = sum_e q[e, x] * k[e, y] (complex, no conjugate)
        sr = torch.matmul(qrt, kr) - torch.matmul(qit, ki)
        si = torch.matmul(qrt, ki) + torch.matmul(qit, kr)
        sr, si = complex_tanh(sr, si) if self.activation == "complex_tanh" else (torch.tanh(sr), torch.tanh(si))
        srt, sit = sr.transpose(-1, -2), si.transpose(-1, -2)
        # mixed[e, x] = sum_y scores[x, y] * k[e, y]
        vr = torch.matmul(kr, srt) - torch.matmul(ki, sit)
        vi = torch.matmul(kr, sit) + torch.matmul(ki, srt)
        re, im = complex_channel_mix(vr, vi, self.weights1, self.weights2)
        norm = 1.0 / (self.d_model * self.d_model)
        return self._synthesis(re * norm, im * norm, self.index_q, length), None
