"""The one timing harness every runtime is measured with (the protocol of record).

Same inputs for every call; ``warmup`` untimed calls; then timed calls (``time.perf_counter_ns``, garbage
collector paused) until both ``repeats`` calls and ``min_time_s`` seconds are reached. Several sessions (a cell
and its dense reference) are timed in interleaved rounds in one process, so drift on the machine hits both alike.
Statistics: median, quartiles and IQR, p10/p90, mean, min, and the raw samples. Outliers (outside the Tukey
fences, 1.5 IQR beyond the quartiles) are counted, never dropped; a result whose IQR exceeds
``UNSTABLE_IQR_FRACTION`` of its median is flagged unstable.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tsbench_core.protocols import RuntimeSession

UNSTABLE_IQR_FRACTION = 0.10  # IQR / median above this: the figure is flagged unstable
TUKEY_FENCE = 1.5  # outliers lie beyond this many IQRs outside the quartiles


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
    q1_ms: float = 0.0
    q3_ms: float = 0.0
    outliers: int = 0  # samples beyond the Tukey fences (kept in every statistic)
    samples_ms: tuple[float, ...] = field(default=(), repr=False)

    @property
    def iqr_ms(self) -> float:
        return self.q3_ms - self.q1_ms

    @property
    def unstable(self) -> bool:
        """IQR / median above ``UNSTABLE_IQR_FRACTION``: too noisy to compare small differences."""
        return self.median_ms > 0 and self.iqr_ms / self.median_ms > UNSTABLE_IQR_FRACTION

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "samples_ms": list(self.samples_ms), "iqr_ms": self.iqr_ms, "unstable": self.unstable}


def summarize(latencies_ms: Sequence[float], *, batch_size: int, warmup: int = 0) -> TimingResult:
    """Statistics of a list of per-call latencies (ms)."""
    if len(latencies_ms) == 0:
        raise ValueError("no latencies to summarize")
    arr = np.asarray(latencies_ms, dtype=np.float64)
    median = float(np.median(arr))
    q1, q3 = (float(q) for q in np.percentile(arr, [25, 75]))
    low, high = q1 - TUKEY_FENCE * (q3 - q1), q3 + TUKEY_FENCE * (q3 - q1)
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
        q1_ms=q1,
        q3_ms=q3,
        outliers=int(((arr < low) | (arr > high)).sum()),
        samples_ms=tuple(float(x) for x in arr),
    )


def _batch_size(inputs: list[np.ndarray], batch_size: int | None) -> int:
    if batch_size is not None:
        return batch_size
    return int(inputs[0].shape[0]) if inputs and np.ndim(inputs[0]) > 0 else 1


def time_session(session: RuntimeSession, inputs: Sequence[np.ndarray], *, warmup: int = 5, repeats: int = 20,
                 batch_size: int | None = None, min_time_s: float = 0.0) -> TimingResult:
    """Time ``session.run(inputs)``: ``warmup`` untimed calls, then timed ones until ``repeats`` calls and
    ``min_time_s`` seconds are reached.

    ``batch_size`` defaults to the leading dimension of the first input."""
    return time_sessions_interleaved({"session": session}, inputs, warmup=warmup, repeats=repeats, rounds=1,
                                     batch_size=batch_size, min_time_s=min_time_s)["session"]


def time_sessions_interleaved(sessions: dict[str, RuntimeSession], inputs: Sequence[np.ndarray], *,
                              warmup: int = 5, repeats: int = 20, rounds: int = 4,
                              batch_size: int | None = None, min_time_s: float = 0.0) -> dict[str, TimingResult]:
    """Time several sessions on the same inputs, alternating between them in ``rounds`` blocks.

    On a shared or thermally throttled machine, load changes during a run would otherwise bias whichever
    session happened to be timed later; alternating blocks spreads such drift over every session.
    Each session gets ``warmup`` untimed calls first and at least ``repeats`` timed calls in total; while a
    session's timed calls sum to less than ``min_time_s`` seconds, further rounds are added for every session.
    """
    if repeats < 1 or warmup < 0 or rounds < 1 or min_time_s < 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, rounds >= 1, min_time_s >= 0 "
                         f"(got {repeats}, {warmup}, {rounds}, {min_time_s})")
    inputs = list(inputs)
    batch_size = _batch_size(inputs, batch_size)
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
        index = 0
        while index < len(per_round) or min(sum(v) for v in latencies.values()) < 1e3 * min_time_s:
            count = per_round[index % len(per_round)]
            index += 1
            for name, session in sessions.items():
                for _ in range(count):
                    start = time.perf_counter_ns()
                    session.run(inputs)
                    latencies[name].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: summarize(lat, batch_size=batch_size, warmup=warmup) for name, lat in latencies.items()}
