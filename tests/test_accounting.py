"""count_params and count_macs against hand-computed values for a small model (rules in docs/metrics.md)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tsbench_core.accounting import count_macs, count_params, prunable_parameter_names

B, L, C, D, H = 2, 12, 3, 8, 16


class Small(nn.Module):
    """Conv1d + Embedding + Linear + attention products + rfft/irfft + complex Fourier weight + output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(C, D, 3, padding=1, padding_mode="circular")
        self.emb = nn.Embedding(10, D)
        self.lin = nn.Linear(D, H)
        self.out = nn.Linear(H, C)
        self.fourier = nn.Parameter(torch.randn(2, 4, 5, dtype=torch.cfloat))
        self.deploy = False
        n = torch.arange(L, dtype=torch.float32)
        k = torch.arange(L // 2 + 1, dtype=torch.float32)
        self.register_buffer("dft_cos", torch.cos(2 * math.pi * k[:, None] * n[None, :] / L))

    def set_deploy_form(self, enabled: bool) -> None:
        self.deploy = enabled

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2) + self.emb(idx)
        h = self.lin(h)  # B L H
        a = torch.softmax(h @ h.transpose(1, 2), dim=-1) @ h
        if self.deploy:  # the real part of the DFT as a matrix product: [L/2+1, L] x [B, L, H]
            spec = torch.matmul(self.dft_cos, a)
            back = a
        else:
            spec = torch.fft.rfft(a, dim=1)  # B 7 H
            back = torch.fft.irfft(spec, n=L, dim=1)
        modes = spec[:, :2, :8].reshape(B, 2, 8)[:, :, :4].to(torch.cfloat)
        mixed = torch.einsum("bhi,hio->bho", modes, self.fourier)
        return self.out(back) + mixed.real.sum() * 0


def inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, L, C, generator=g), torch.randint(0, 10, (B, L), generator=g)


# hand-computed MACs, one term per op (see docs/metrics.md)
CONV = (B * D * L) * C * 3  # output elements x C_in x kernel
LIN = (B * L * H) * D
OUT = (B * L * C) * H
ATTN = 2 * (B * L * L * H)  # scores and weighted sum
FFT = 2 * (B * H) * L * math.log2(L)  # rfft + irfft: B*H real signals of length 12, N log2 N each
FOURIER = B * 2 * 4 * 5 * 4  # complex x complex: 4 real MACs per complex MAC


def test_dense_macs_match_hand_count():
    macs = count_macs(Small(), inputs())
    assert macs["macs_dense"] == round(CONV + LIN + OUT + ATTN + FFT + FOURIER)
    assert macs["macs_effective"] == macs["macs_dense"]
    assert macs["macs_weight_dense"] == CONV + LIN + OUT + FOURIER
    assert macs["by_op"]["convolution"] == CONV
    assert macs["by_op"]["_fft_r2c"] + macs["by_op"]["_fft_c2r"] == pytest.approx(FFT, abs=1)


def test_effective_macs_scale_with_weight_density():
    model = Small()
    with torch.no_grad():
        model.lin.weight[:, : D // 2] = 0  # half of lin
        model.conv.weight[:, :, 0] = 0  # a third of conv
        model.fourier[0] = 0  # half of the Fourier weight
    macs = count_macs(model, inputs())
    expected = CONV * 2 / 3 + LIN / 2 + OUT + ATTN + FFT + FOURIER / 2
    assert macs["macs_effective"] == pytest.approx(expected, abs=2)
    assert macs["macs_dense"] == round(CONV + LIN + OUT + ATTN + FFT + FOURIER)


def test_deploy_form_counts_dft_matrix_products_and_restores():
    model = Small()
    macs = count_macs(model, inputs(), deploy_form=True, per_sample=True)
    dft = B * (L // 2 + 1) * L * H  # [7, 12] @ [B, 12, H]
    assert macs["macs_dense"] == round((CONV + LIN + OUT + ATTN + dft + FOURIER) / B)
    assert model.deploy is False


def test_count_params():
    model = Small()
    with torch.no_grad():
        model.lin.weight[:4] = 0
        model.emb.weight[0] = 0
    counts = count_params(model)
    total = (C * D * 3 + D) + 10 * D + (D * H + H) + (H * C + C) + 2 * 4 * 5
    prunable = C * D * 3 + D * H + H * C
    assert sorted(prunable_parameter_names(model)) == ["conv.weight", "lin.weight", "out.weight"]
    assert counts["params_total"] == total
    assert counts["params_nonzero"] == total - 4 * D - D
    assert counts["prunable_total"] == prunable
    assert counts["prunable_nonzero"] == prunable - 4 * D
    assert counts["sparsity_prunable"] == pytest.approx(4 * D / prunable)
    assert counts["sparsity_all"] == pytest.approx(5 * D / total)
    only_lin = count_params(model, prunable=["lin.weight"])
    assert only_lin["sparsity_prunable"] == pytest.approx(0.25)
    with pytest.raises(KeyError):
        count_params(model, prunable=["nope.weight"])


def test_structured_smaller_model_counts_less():
    wide = nn.Sequential(nn.Linear(8, 32), nn.Linear(32, 4))
    narrow = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    assert count_macs(wide, (x,))["macs_dense"] == 5 * (8 * 32 + 32 * 4)
    assert count_macs(narrow, (x,))["macs_dense"] == 5 * (8 * 16 + 16 * 4)
