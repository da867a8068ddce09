"""Runtime step: prepare a session, verify its outputs against torch eager, then time it."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from tsbench_core.data import WindowedSplit
from tsbench_core.errors import RuntimeUnavailable
from tsbench_core.protocols import availability_of
from tsbench_core.spec import TimingConfig
from tsbench_core.timing import time_session
from tsbench_core.verify import verify_session


def static_batches(split: WindowedSplit, batch_size: int, count: int) -> list[tuple[np.ndarray, ...]]:
    """``count`` real batches of exactly ``batch_size`` windows, spread over the split (wrapping if short)."""
    n = len(split)
    batches = []
    for i in range(count):
        first = (i * n) // max(count, 1)
        starts = (torch.arange(batch_size) + first) % n
        batches.append(tuple(t.numpy() for t in split.batch(starts).inputs))
    return batches


def measure(
    model: nn.Module,
    runtime: Any,
    runtime_params: BaseModel,
    split: WindowedSplit,
    batch_size: int,
    timing: TimingConfig,
    workdir: Path,
) -> dict[str, Any]:
    """Verify then time ``model`` on ``runtime``; returns the timing columns of a cell row."""
    availability = availability_of(runtime)
    if not availability.available:
        raise RuntimeUnavailable(f"runtime {runtime.name!r} is unavailable: {availability.reason}")
    threads = timing.threads or os.cpu_count() or 1
    model = model.cpu().eval()
    batches = static_batches(split, batch_size, timing.verify_batches)
    example = tuple(torch.from_numpy(a) for a in batches[0])
    session = runtime.prepare(copy.deepcopy(model), example, runtime_params, threads=threads, workdir=workdir)
    try:
        max_err = verify_session(session, model, batches, atol=timing.atol, rtol=timing.rtol)
        result = time_session(session, list(batches[0]), warmup=timing.warmup, repeats=timing.repeats)
        info = dict(getattr(session, "info", {}) or {})
    finally:
        session.close()
    return {
        "threads": threads,
        "latency_ms_median": result.median_ms,
        "latency_ms_p10": result.p10_ms,
        "latency_ms_p90": result.p90_ms,
        "throughput_samples_per_s": batch_size * 1000.0 / result.median_ms if result.median_ms > 0 else None,
        "max_abs_err_vs_torch": max_err,
        "runtime_info": info,
    }
