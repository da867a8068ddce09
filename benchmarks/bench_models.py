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
