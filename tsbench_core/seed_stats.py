"""Statistics over seeds: mean, standard deviation and a 95 % confidence interval from the t distribution, and
the paired t-test that decides whether a pruned setting differs from its dense reference.

With one value there is no spread: ``sd``, the interval and the test are ``None`` and the formatters print the
bare value, so nothing pretends to be a spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the paired test
TEST_NAME = "paired t-test across seeds (scipy.stats.ttest_rel, two-sided, α = 0.05)"


@dataclass(frozen=True)
class Spread:
    """Values of one quantity over seeds (one value per seed)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return math.fsum(self.values) / self.n

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (ddof = 1); ``None`` for one value."""
        if self.n < 2:
            return None
        mean = self.mean
        return math.sqrt(math.fsum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def half_width(self) -> float | None:
        """Half-width of the 95 % interval of the mean: t(0.975, n - 1) · sd / √n; ``None`` for one value."""
        sd = self.sd
        if sd is None:
            return None
        from scipy import stats

        return float(stats.t.ppf(0.5 + CONFIDENCE / 2, self.n - 1)) * sd / math.sqrt(self.n)

    @property
    def ci(self) -> tuple[float, float] | None:
        half = self.half_width
        return None if half is None else (self.mean - half, self.mean + half)


def spread(values: Sequence[float | None]) -> Spread | None:
    """The spread of the given values (``None`` entries dropped); ``None`` when no value is left."""
    kept = tuple(float(v) for v in values if v is not None)
    return Spread(kept) if kept else None


def paired_p_value(values: Sequence[float], references: Sequence[float]) -> float | None:
    """Two-sided p-value of the paired t-test of ``values`` against ``references`` (same seeds, same order);
    ``None`` with fewer than two pairs. Identical pairs give 1.0; a constant non-zero difference gives 0.0 (the
    t statistic is infinite)."""
    if len(values) != len(references):
        raise ValueError("paired values and references differ in length")
    if len(values) < 2:
        return None
    differences = [v - r for v, r in zip(values, references, strict=True)]
    if all(d == differences[0] for d in differences):
        return 1.0 if differences[0] == 0 else 0.0
    from scipy import stats

    return float(stats.ttest_rel(values, references).pvalue)


def verdict(p_value: float | None) -> str:
    """``significant`` / ``not significant`` at α = 0.05, or ``n = 1`` when there is no test."""
    if p_value is None:
        return "n = 1"
    return "significant" if p_value < ALPHA else "not significant"


def format_spread(value: Spread | None, fmt: Callable[[float], str]) -> str:
    """``mean ± sd`` (each through ``fmt``); the bare value for n = 1; ``–`` for nothing."""
    if value is None:
        return "–"
    sd = value.sd
    return fmt(value.mean) if sd is None else f"{fmt(value.mean)} ± {fmt(sd).lstrip('+')}"


def format_ci(value: Spread | None, fmt: Callable[[float], str]) -> str:
    """``low – high`` of the 95 % interval, ``–`` for n < 2."""
    interval = value.ci if value is not None else None
    return "–" if interval is None else f"{fmt(interval[0])} – {fmt(interval[1])}"
