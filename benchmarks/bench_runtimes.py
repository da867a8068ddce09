"""Inference speed of pruned models on every CPU runtime (the issue's performance targets).

Run: ``NM_DISABLE_ANALYTICS=1 .venv/bin/pytest benchmarks/bench_runtimes.py --benchmark-only
--benchmark-group-by=group --benchmark-json=runtimes.json``. The default case is the Transformer at its
ETTh1 defaults (d_model 512, 2+1 layers; enc_in 7, 96/48/96), batch 32, all cores. ``TSBENCH_BENCH_MODELS``
(comma-separated) adds models, ``TSBENCH_BENCH_BATCH`` changes the batch size, ``TSBENCH_BENCH_ROUNDS`` the
number of timed calls. Every session passes the correctness gate before it is timed.
Weights are random (seed 0): latency does not depend on training.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")

from tsbench_core.accounting import count_macs  # noqa: E402
from tsbench_core.data import DataShape, example_inputs  # noqa: E402
from tsbench_core.protocols import availability_of, time_encoding_of  # noqa: E402
from tsbench_core.registry import load_plugins  # noqa: E402
from tsbench_core.steps.prune import synthetic_prune_context  # noqa: E402
from tsbench_core.verify import verify_session  # noqa: E402

MODELS = [m for m in os.environ.get("TSBENCH_BENCH_MODELS", "transformer").split(",") if m]
BATCH = int(os.environ.get("TSBENCH_BENCH_BATCH", "32"))
ROUNDS = int(os.environ.get("TSBENCH_BENCH_ROUNDS", "10"))
THREADS = os.cpu_count() or 1
SHAPE = DataShape(7, 7, 7, 96, 48, 96)
# (variant, pruner, sparsity): the dense reference, the DeepSparse target, the structured target
VARIANTS = [("dense", None, 0.0), ("magnitude90", "magnitude", 0.9), ("structured50", "structured", 0.5)]
CASES = [
    ("torch-eager", "dense"), ("deepsparse", "dense"), ("deepsparse", "magnitude90"),
    ("onnxruntime", "dense"), ("onnxruntime", "structured50"), ("onnxruntime", "magnitude90"),
    ("torch-compile", "dense"), ("torch-compile", "structured50"),
]

REGISTRY = load_plugins()
_WORKDIR = Path(tempfile.mkdtemp(prefix="tsbench-bench-runtimes-"))
_models: dict[tuple[str, str], torch.nn.Module] = {}


def _model(name: str, variant: str) -> torch.nn.Module:
    """The model in one variant, built once per session (seed 0, one-shot pruning, no training)."""
    key = (name, variant)
    if key not in _models:
        plugin = REGISTRY.get("model", name)
        params = plugin.params_model()
        torch.manual_seed(0)
        dense = plugin.build(params, SHAPE).eval()
        _, pruner_name, sparsity = next(v for v in VARIANTS if v[0] == variant)
        if pruner_name is None:
            _models[key] = dense
        else:
            pruner = REGISTRY.get("pruner", pruner_name)
            context = synthetic_prune_context(name, SHAPE, time_encoding_of(params), _WORKDIR, pruner_name)
            result = pruner.prune(copy.deepcopy(dense), sparsity, pruner.params_model(), context)
            _models[key] = result.model.eval()
    return _models[key]


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize(("runtime_name", "variant"), CASES, ids=[f"{r}-{v}" for r, v in CASES])
def test_runtime_latency(benchmark, model_name: str, runtime_name: str, variant: str) -> None:
    runtime = REGISTRY.get("runtime", runtime_name)
    available = availability_of(runtime)
    if not available.available:
        pytest.skip(f"{runtime_name} unavailable: {available.reason}")
    model = _model(model_name, variant)
    params = REGISTRY.get("model", model_name).params_model()
    encoding = time_encoding_of(params)
    example = example_inputs(SHAPE, BATCH, encoding, seed=0)
    gate = [tuple(t.numpy() for t in example_inputs(SHAPE, BATCH, encoding, seed=s)) for s in (1, 2)]
    session = runtime.prepare(copy.deepcopy(model), example, runtime.params_model(), threads=THREADS,
                              workdir=_WORKDIR / f"{model_name}-{runtime_name}-{variant}")
    try:
        err = verify_session(session, model, gate)  # never time an output that was not compared
        inputs = [t.numpy() for t in example]
        benchmark.group = f"{model_name} batch {BATCH}"
        macs = count_macs(model, example_inputs(SHAPE, 2, encoding, seed=3), per_sample=True)
        info = session.info
        benchmark.extra_info.update({
            "model": model_name, "runtime": runtime_name, "variant": variant, "batch_size": BATCH,
            "threads": THREADS, "max_abs_err_vs_torch": err, "macs_dense_per_sample": macs["macs_dense"],
            "macs_effective_per_sample": macs["macs_effective"],
            "fraction_of_supported_ops": info.get("fraction_of_supported_ops"),
            "fallback_ops": (info.get("fallbacks") or {}).get("fallback_ops"),
            "versions": info.get("versions"),
        })
        benchmark.pedantic(session.run, args=(inputs,), rounds=ROUNDS, warmup_rounds=2, iterations=1)
    finally:
        session.close()
