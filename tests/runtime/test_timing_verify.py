"""The timing harness's statistics and the correctness gate, on fake sessions."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from tsbench_core.errors import CellError
from tsbench_core.timing import summarize, time_session
from tsbench_core.verify import verify_session


class SleepSession:
    """Sleeps for a known, cycling sequence of durations; counts calls."""

    def __init__(self, sleeps_ms: list[float]) -> None:
        self.sleeps_ms = sleeps_ms
        self.calls = 0
        self.info = {"runtime": "fake-sleep"}

    def run(self, inputs):
        time.sleep(self.sleeps_ms[self.calls % len(self.sleeps_ms)] / 1000)
        self.calls += 1
        return np.zeros(1, dtype=np.float32)

    def close(self) -> None:
        pass


class FuncSession:
    def __init__(self, fn) -> None:
        self.fn = fn
        self.info = {"runtime": "fake-func"}

    def run(self, inputs):
        return self.fn(*inputs)

    def close(self) -> None:
        pass


def test_summarize_matches_numpy_definitions() -> None:
    lat = [float(v) for v in range(1, 11)]  # 1..10 ms
    r = summarize(lat, batch_size=4, warmup=2)
    assert r.median_ms == pytest.approx(5.5)
    assert r.mean_ms == pytest.approx(5.5)
    assert r.min_ms == 1.0
    # linear interpolation: position 0.1 * 9 = 0.9 -> 1.9; 0.9 * 9 = 8.1 -> 9.1
    assert r.p10_ms == pytest.approx(1.9)
    assert r.p90_ms == pytest.approx(9.1)
    assert r.repeats == 10 and r.warmup == 2
    assert r.throughput_samples_per_s == pytest.approx(4 / 0.0055)


def test_time_session_counts_calls_and_orders_statistics() -> None:
    # warm-up consumes the first 2 sleeps; the 6 timed calls see 2, 2, 2, 2, 30, 30 ms (cycle of 8)
    session = SleepSession([50, 50, 2, 2, 2, 2, 30, 30])
    x = [np.zeros((3, 2), dtype=np.float32)]
    r = time_session(session, x, warmup=2, repeats=6)
    assert session.calls == 8
    assert r.repeats == 6 and r.batch_size == 3
    assert r.min_ms >= 2.0  # sleep never returns early
    # the median is a 2 ms call (plus scheduling noise), far below the 30 ms calls and the 50 ms warm-up
    assert 2.0 <= r.median_ms < 30.0
    assert r.p90_ms >= 30.0
    assert r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.mean_ms > r.median_ms  # two slow calls pull the mean up


def test_time_session_rejects_bad_counts() -> None:
    with pytest.raises(ValueError):
        time_session(SleepSession([0]), [np.zeros(1)], warmup=0, repeats=0)


def test_gate_passes_exact_session_and_reports_error() -> None:
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 3)
    w = ref.weight.detach().numpy().astype(np.float64)
    b = ref.bias.detach().numpy().astype(np.float64)
    good = FuncSession(lambda x: (x @ w.T + b).astype(np.float32))
    batches = [(np.random.default_rng(i).standard_normal((4, 5)).astype(np.float32),) for i in range(2)]
    err = verify_session(good, ref, batches, atol=1e-5, rtol=1e-5)
    assert 0.0 <= err < 1e-5


def test_gate_fails_wrong_session_with_figure() -> None:
    ref = torch.nn.Linear(5, 3)
    w = ref.weight.detach().numpy()
    b = ref.bias.detach().numpy()
    wrong = FuncSession(lambda x: x @ w.T + b + 0.5)  # off by exactly 0.5 everywhere
    batches = [(np.ones((2, 5), dtype=np.float32),)]
    with pytest.raises(CellError, match=r"max abs error 0\.5"):
        verify_session(wrong, ref, batches, atol=1e-3, rtol=0.0)


def test_gate_fails_on_nan_and_shape() -> None:
    ref = torch.nn.Linear(5, 3)
    batches = [(np.ones((2, 5), dtype=np.float32),)]
    with pytest.raises(CellError):
        verify_session(FuncSession(lambda x: np.full((2, 3), np.nan, np.float32)), ref, batches)
    with pytest.raises(CellError, match="shape"):
        verify_session(FuncSession(lambda x: np.zeros((2, 4), np.float32)), ref, batches)


def test_quartiles_outliers_and_stability_follow_their_definitions() -> None:
    lat = [10.0] * 8 + [10.5, 40.0]  # one far outlier; quartiles by numpy's linear interpolation
    r = summarize(lat, batch_size=1)
    q1, q3 = np.percentile(lat, [25, 75])
    assert (r.q1_ms, r.q3_ms) == (pytest.approx(q1), pytest.approx(q3))
    fences = (q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1))
    assert r.outliers == sum(not fences[0] <= x <= fences[1] for x in lat) == 2  # counted...
    assert r.samples_ms == tuple(lat) and r.mean_ms == pytest.approx(np.mean(lat))  # ...never dropped
    assert not r.unstable  # IQR 0.125 ms on a 10 ms median
    spread = summarize([8.0, 9.0, 10.0, 11.0, 12.0], batch_size=1)  # IQR 2 ms / median 10 ms = 20 %
    assert spread.iqr_ms == pytest.approx(2.0) and spread.unstable
    assert spread.to_dict()["unstable"] is True and spread.to_dict()["samples_ms"] == [8.0, 9.0, 10.0, 11.0, 12.0]


def test_minimum_duration_adds_rounds_beyond_the_minimum_count() -> None:
    session = SleepSession([5])
    r = time_session(session, [np.zeros((1,))], warmup=0, repeats=2, min_time_s=0.05)
    # rounds of two calls were added until 50 ms were timed (two calls alone cannot reach it), and no more
    assert r.repeats > 2 and r.repeats % 2 == 0
    assert sum(r.samples_ms) >= 50.0 > sum(r.samples_ms[:-2])


def test_interleaved_rounds_alternate_between_sessions() -> None:
    from tsbench_core.timing import time_sessions_interleaved

    order: list[str] = []

    class Recording(SleepSession):
        def __init__(self, name: str) -> None:
            super().__init__([0])
            self.name = name

        def run(self, inputs):
            order.append(self.name)
            return super().run(inputs)

    results = time_sessions_interleaved({"cell": Recording("cell"), "dense": Recording("dense")},
                                        [np.zeros((2,))], warmup=1, repeats=4, rounds=2)
    assert order == ["cell", "dense"] + ["cell"] * 2 + ["dense"] * 2 + ["cell"] * 2 + ["dense"] * 2
    assert results["cell"].repeats == results["dense"].repeats == 4
