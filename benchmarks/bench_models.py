"""Forward latency of every model at its ETTh1 defaults (enc_in = dec_in = c_out = 7, 96/48/96), batch 32,
CPU, eval mode, no autograd; weights random (seed 0): latency does not depend on training.

Run: ``.venv/bin/pytest benchmarks/bench_models.py --benchmark-only --benchmark-group-by=param:form``.
``form`` is ``train`` (the module as trained: torch.fft, TopK) or ``deploy`` (``set_deploy_form(True)``:
DFT matrix products, rank-based top-k; identical to ``train`` for models without FFT blocks).
``TSBENCH_BENCH_MODELS`` (comma-separated) restricts the models; ``TSBENCH_BENCH_THREADS`` sets torch's
intra-op threads (default: all cores). Timings on a shared machine are noisy: compare within one run.
"""

from __future__ import annotations

import os

import pytest
import torch

from tsbench_core.data import DataShape, example_inputs
from tsbench_core.protocols import time_encoding_of
from tsbench_core.registry import load_plugins

ALL_MODELS = ["transformer", "informer", "autoformer", "fedformer", "crossformer", "patchtst", "itransformer",
              "dlinear"]
MODELS = [m for m in os.environ.get("TSBENCH_BENCH_MODELS", ",".join(ALL_MODELS)).split(",") if m]
THREADS = int(os.environ.get("TSBENCH_BENCH_THREADS", str(os.cpu_count() or 1)))
BATCH = 32
ETTH1 = DataShape(enc_in=7, dec_in=7, c_out=7, seq_len=96, label_len=48, pred_len=96)


def _build(name: str, deploy: bool) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    registry = load_plugins()
    if name not in registry.models:
        pytest.skip(f"model {name!r} is not registered")
    plugin = registry.models[name]
    params = plugin.params_model()
    torch.manual_seed(0)
    model = plugin.build(params, ETTH1).eval()
    for block in model.modules():
        if hasattr(block, "set_deploy_form"):
            block.set_deploy_form(deploy)
    return model, example_inputs(ETTH1, BATCH, time_encoding_of(params))


@pytest.mark.parametrize("form", ["train", "deploy"])
@pytest.mark.parametrize("name", MODELS)
def test_forward_latency(benchmark, name: str, form: str) -> None:
    model, inputs = _build(name, deploy=form == "deploy")
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with torch.inference_mode():
            model(*inputs)  # warm-up (allocations, lazily built constants)
            out = benchmark.pedantic(model, args=inputs, rounds=5, warmup_rounds=1, iterations=1)
    finally:
        torch.set_num_threads(before)
    assert out.shape[:2] == (BATCH, ETTH1.pred_len)
    benchmark.extra_info.update({"batch": BATCH, "threads": THREADS, "form": form,
                                 "params": sum(p.numel() for p in model.parameters())})


# --- our special blocks against their reference-style formulation -----------------------------------------
# The reference implementations gather sampled keys from an expanded key tensor, pick queries with TopK and
# scatter the results back (ProbSparse), sum top-k rolled copies of the values in a Python loop
# (Auto-Correlation), and fill the spectrum mode by mode in a Python loop (FEB-f). ``reference_style`` below
# writes those formulations (written here from the papers' algorithms) so the two can be timed side by side on
# the same inputs; outputs are checked equal before timing.


def _prob_reference_style(block, q, k, v):
    """ProbSparse as usually implemented: gather the sampled keys, TopK queries, scatter into the context."""
    b, l_q, h, e = q.shape
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # B H L E
    counts = block.sample_counts
    index = torch.repeat_interleave(torch.arange(counts.shape[1]).expand_as(counts)[counts > 0],
                                    counts[counts > 0].long()).view(l_q, -1)
    k_sample = k.unsqueeze(-3).expand(b, h, l_q, k.shape[2], e)[:, :, torch.arange(l_q)[:, None], index, :]
    qk_sample = torch.matmul(q.unsqueeze(-2), k_sample.transpose(-2, -1)).squeeze(-2)
    measure = qk_sample.max(-1)[0] - qk_sample.sum(-1) / k.shape[2]
    top = measure.topk(block.n_top, sorted=False)[1]
    q_reduce = q[torch.arange(b)[:, None, None], torch.arange(h)[None, :, None], top]
    attn = torch.softmax(torch.matmul(q_reduce, k.transpose(-2, -1)) / e**0.5, dim=-1)
    context = v.mean(dim=-2, keepdim=True).expand(b, h, l_q, v.shape[-1]).clone()
    context[torch.arange(b)[:, None, None], torch.arange(h)[None, :, None], top] = torch.matmul(attn, v)
    return context


def _autocorrelation_reference_style(block, q, k, v):
    """Auto-Correlation at evaluation: FFT correlation, per-sample TopK delays, a loop of gathers."""
    import math

    b, length, h, e = q.shape
    qf = torch.fft.rfft(q.permute(0, 2, 3, 1), dim=-1)
    kf = torch.fft.rfft(k.permute(0, 2, 3, 1), dim=-1)
    corr = torch.fft.irfft(qf * torch.conj(kf), dim=-1)
    values = v.permute(0, 2, 3, 1)
    top_k = int(block.factor * math.log(length))
    weights, delay = torch.topk(corr.mean(dim=(1, 2)), top_k, dim=-1)
    weights = torch.softmax(weights, dim=-1)
    doubled = values.repeat(1, 1, 1, 2)
    steps = torch.arange(length).expand(b, h, e, length)
    out = torch.zeros_like(values)
    for i in range(top_k):
        pattern = torch.gather(doubled, -1, steps + delay[:, i].view(b, 1, 1, 1))
        out = out + pattern * weights[:, i].view(b, 1, 1, 1)
    return out.permute(0, 3, 1, 2)


def _fourier_reference_style(block, q, k, v):
    """FEB-f with a complex spectrum filled mode by mode."""
    b, length, h, e = q.shape
    x_ft = torch.fft.rfft(q.permute(0, 2, 3, 1), dim=-1)
    weights = torch.complex(block.weights1, block.weights2)
    out_ft = torch.zeros(b, h, e, length // 2 + 1, dtype=torch.cfloat)
    for w, mode in enumerate(block.index.tolist()):
        out_ft[..., w] = torch.einsum("bhi,hio->bho", x_ft[..., mode], weights[..., w])
    return torch.fft.irfft(out_ft, n=length)


def _block(kind: str):
    from plugins.models.layers.autocorrelation import AutoCorrelation
    from plugins.models.layers.fourier_blocks import FourierBlock
    from plugins.models.layers.prob_attention import ProbAttention

    torch.manual_seed(0)
    if kind == "probsparse":
        return ProbAttention(False, 3, 96, 96), _prob_reference_style
    if kind == "autocorrelation":
        return AutoCorrelation(3), _autocorrelation_reference_style
    return FourierBlock(512, 8, 96, 32), _fourier_reference_style


@pytest.mark.parametrize("impl", ["ours", "ours-deploy", "reference_style"])
@pytest.mark.parametrize("kind", ["probsparse", "autocorrelation", "fourier"])
def test_block_latency(benchmark, kind: str, impl: str) -> None:
    block, reference = _block(kind)
    block.eval()
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(BATCH, 96, 8, 64, generator=g) for _ in range(3))
    if hasattr(block, "set_deploy_form"):
        block.set_deploy_form(impl == "ours-deploy")
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with torch.inference_mode():
            want = reference(block, q, k, v)
            fn = (lambda: reference(block, q, k, v)) if impl == "reference_style" else (lambda: block(q, k, v)[0])
            got = benchmark.pedantic(fn, rounds=10, warmup_rounds=2, iterations=1)
    finally:
        torch.set_num_threads(before)
    assert float((got - want).abs().max()) <= 1e-4
    benchmark.extra_info.update({"batch": BATCH, "threads": THREADS, "impl": impl})


# --- models part B: DLinear's moving average and PatchTST's patching against their usual formulation -------


def _moving_average_reference_style(x: torch.Tensor, kernel: int = 25) -> torch.Tensor:
    # edge values repeated at both ends, then average pooling over time
    half = (kernel - 1) // 2
    padded = torch.cat([x[:, :1].repeat(1, half, 1), x, x[:, -1:].repeat(1, half, 1)], dim=1)
    return torch.nn.functional.avg_pool1d(padded.transpose(1, 2), kernel, stride=1).transpose(1, 2)


def _patching_reference_style(x: torch.Tensor, patch_len: int = 16, stride: int = 8) -> torch.Tensor:
    # replication padding of `stride` steps at the end, then overlapping windows by unfold
    padded = torch.nn.functional.pad(x[:, None], (0, stride), mode="replicate")[:, 0]
    return padded.unfold(-1, patch_len, stride)


@pytest.mark.parametrize("impl", ["ours", "reference_style"])
@pytest.mark.parametrize("kind", ["moving_average", "patching"])
def test_part_b_block_latency(benchmark, kind: str, impl: str) -> None:
    from plugins.models.layers.decomposition import MovingAverage
    from plugins.models.layers.patching import Patcher

    g = torch.Generator().manual_seed(1)
    if kind == "moving_average":  # DLinear at ETTh1: [B, 96, 7], kernel 25
        x = torch.randn(BATCH, 96, 7, generator=g)
        ours, reference = MovingAverage(25), _moving_average_reference_style
    else:  # PatchTST at ETTh1: B*7 series of 96 steps, 12 patches of 16
        x = torch.randn(BATCH * 7, 96, generator=g)
        ours, reference = Patcher(96, 16, 8, 8), _patching_reference_style
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        with torch.inference_mode():
            want = reference(x)
            fn = (lambda: reference(x)) if impl == "reference_style" else (lambda: ours(x))
            got = benchmark.pedantic(fn, rounds=20, warmup_rounds=2, iterations=1)
    finally:
        torch.set_num_threads(before)
    assert float((got - want).abs().max()) <= 1e-4
    benchmark.extra_info.update({"batch": BATCH, "threads": THREADS, "impl": impl})
