"""How many time-feature columns a frequency code gives, for each encoding."""

from __future__ import annotations

# normalised (timeF) features per frequency code, as in the long-term-forecasting literature
TIMEF_DIMS = {"h": 4, "t": 5, "s": 6, "m": 1, "a": 1, "w": 2, "d": 3, "b": 3}


def marks_dims(freq: str) -> tuple[int, int]:
    """(timeF columns, calendar columns): calendar is month, day, weekday, hour, plus minute for 't'."""
    return TIMEF_DIMS.get(freq, 4), 5 if freq == "t" else 4
