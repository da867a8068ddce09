"""Time-feature encodings, computed by hand for known timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plugins.datasets import timefeatures as tf
from plugins.models.layers.embedding import TIMEF_DIMS, TemporalEmbedding
from tsbench_core.errors import DataError

# Friday 1 July 2016, 13:45:30 — day 183 of a leap year (31+29+31+30+31+30 = 182 days before it)
STAMP = pd.DatetimeIndex([pd.Timestamp("2016-07-01 13:45:30")])
SECOND, MINUTE, HOUR = 30 / 59 - 0.5, 45 / 59 - 0.5, 13 / 23 - 0.5
WEEKDAY, MONTHDAY, YEARDAY = 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5
MONTH, WEEK = 6 / 11 - 0.5, 25 / 52 - 0.5  # ISO week 26


@pytest.mark.parametrize("freq,expected", [
    ("h", [HOUR, WEEKDAY, MONTHDAY, YEARDAY]),
    ("t", [MINUTE, HOUR, WEEKDAY, MONTHDAY, YEARDAY]),
    ("s", [SECOND, MINUTE, HOUR, WEEKDAY, MONTHDAY, YEARDAY]),
    ("d", [WEEKDAY, MONTHDAY, YEARDAY]),
    ("b", [WEEKDAY, MONTHDAY, YEARDAY]),
    ("w", [MONTHDAY, WEEK]),
    ("m", [MONTH]),
])
def test_timef_by_hand(freq: str, expected: list[float]) -> None:
    marks = tf.timef_marks(STAMP, freq)
    assert marks.dtype == np.float32
    np.testing.assert_allclose(marks[0], expected, atol=1e-6)
    # the models' time-feature embedding expects exactly this many columns
    assert marks.shape[1] == tf.n_timef(freq) == TIMEF_DIMS[freq]


def test_calendar_fields() -> None:
    np.testing.assert_array_equal(tf.calendar_marks(STAMP, "h")[0], [7, 1, 4, 13])
    np.testing.assert_array_equal(tf.calendar_marks(STAMP, "t")[0], [7, 1, 4, 13, 3])  # 45 // 15
    # the fixed/learned embedding has one table per column, sized for every value a year can produce
    year = pd.date_range("2016-01-01", "2016-12-31 23:45", freq="15min")
    marks = tf.calendar_marks(year, "t")
    sizes = [size for _, size in TemporalEmbedding.FIELDS] + [4]
    assert marks.shape[1] == len(sizes)
    assert (marks.min(axis=0) >= 0).all() and (marks.max(axis=0) < np.array(sizes)).all()


def test_timef_stays_in_range_over_years() -> None:
    dates = pd.date_range("2015-12-25", "2017-01-05", freq="h")
    for freq in tf.FREQ_CODES:
        marks = tf.timef_marks(dates, freq)
        assert marks.min() >= -0.5 and marks.max() <= 0.5 + 1e-6, freq
    hours = tf.timef_marks(dates, "h")[:, 0]
    assert hours.min() == -0.5 and hours.max() == 0.5


@pytest.mark.parametrize("alias,code", [("H", "h"), ("1h", "h"), ("15min", "t"), ("T", "t"), ("D", "d"),
                                        ("W-SUN", "w"), ("MS", "m"), ("10s", "s"), ("B", "b")])
def test_frequency_aliases(alias: str, code: str) -> None:
    assert tf.freq_code(alias) == code


@pytest.mark.parametrize("bad", ["", "fortnight", "5", "h-"])
def test_unknown_frequency(bad: str) -> None:
    with pytest.raises(DataError, match="unknown time-feature frequency"):
        tf.freq_code(bad)
