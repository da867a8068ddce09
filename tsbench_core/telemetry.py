"""Telemetry of the Neural Magic stack (DeepSparse, SparseML, SparseZoo) stays off in every tsbench process.

That stack reports usage unless ``NM_DISABLE_ANALYTICS`` holds a non-empty value (and, when it is empty,
asks a web service where the machine is). Set but empty counts as unset here: tsbench sets it to ``1``
before any of those libraries can be imported (called when ``tsbench_core`` is imported).
"""

from __future__ import annotations

import os

VARIABLE = "NM_DISABLE_ANALYTICS"


def disable_neural_magic_analytics() -> None:
    if not os.environ.get(VARIABLE, "").strip():
        os.environ[VARIABLE] = "1"
