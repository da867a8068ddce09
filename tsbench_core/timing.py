"""The one timing harness every runtime is measured with.

Same inputs for every call, ``warmup`` untimed calls, then ``repeats`` calls each timed with
``time.perf_counter_ns``; statistics are computed over the per-call latencies.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tsbench_core.protocols import RuntimeSession


@dataclass(frozen=True)
class TimingResult:
    """Latency statistics of one session, in milliseconds per call (one call = one batch)."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    repeats: int
    warmup: int
    batch_size: int
    throughput_samples_per_s: float  # batch_size / median latency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(latencies_ms: Sequence[float], *, batch_size: int, warmup: int = 0) -> TimingResult:
    """Statistics of a list of per-call latencies (ms)."""
    if len(latencies_ms) == 0:
        raise ValueError("no latencies to summarize")
    arr = np.asarray(latencies_ms, dtype=np.float64)
    median = float(np.median(arr))
    return TimingResult(
        median_ms=median,
        p10_ms=float(np.percentile(arr, 10)),
        p90_ms=float(np.percentile(arr, 90)),
        mean_ms=float(arr.mean()),
        min_ms=float(arr.min()),
        repeats=len(arr),
        warmup=warmup,
        batch_size=batch_size,
        throughput_samples_per_s=batch_size / (median / 1000.0) if median > 0 else float("inf"),
    )


def time_session(session: RuntimeSession, inputs: Sequence[np.ndarray], *, warmup: int = 5, repeats: int = 20,
                 batch_size: int | None = None) -> TimingResult:
    """Time ``session.run(inputs)``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``batch_size`` defaults to the leading dimension of the first input. The garbage collector is paused
    during the timed calls so a collection does not land inside one of them.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0 (got repeats={repeats}, warmup={warmup})")
    inputs = list(inputs)
    if batch_size is None:
        batch_size = int(inputs[0].shape[0]) if inputs and np.ndim(inputs[0]) > 0 else 1
    for _ in range(warmup):
        session.run(inputs)
    latencies: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            session.run(inputs)
            latencies.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarize(latencies, batch_size=batch_size, warmup=warmup)


def time_sessions_interleaved(sessions: dict[str, RuntimeSession], inputs: Sequence[np.ndarray], *,
                              warmup: int = 5, repeats: int = 20, rounds: int = 4,
                              batch_size: int | None = None) -> dict[str, TimingResult]:
    """Time several sessions on the same inputs, alternating between them in ``rounds`` blocks.

    On a shared or thermally throttled machine, load changes during a run would otherwise bias whichever
    session happened to be timed later; alternating blocks spreads such drift over every session.
    Each session gets ``warmup`` untimed calls first and ``repeats`` timed calls in total.
    """
    if repeats < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, rounds >= 1 (got {repeats}, {warmup}, {rounds})")
    inputs = list(inputs)
    if batch_size is None:
        batch_size = int(inputs[0].shape[0]) if inputs and np.ndim(inputs[0]) > 0 else 1
    for session in sessions.values():
        for _ in range(warmup):
            session.run(inputs)
    rounds = min(rounds, repeats)
    per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    latencies: dict[str, list[float]] = {name: [] for name in sessions}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for count in per_round:
            for name, session in sessions.items():
                for _ in range(count):
                    start = time.perf_counter_ns()
                    session.run(inputs)
                    latencies[name].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: summarize(lat, batch_size=batch_size, warmup=warmup) for name, lat in latencies.items()}
