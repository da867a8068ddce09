"""Telemetry of the Neural Magic stack (DeepSparse, SparseML, SparseZoo) and of OpenVINO stays off in every
tsbench process.

The Neural Magic stack reports usage unless ``NM_DISABLE_ANALYTICS`` holds a non-empty value (and, when it is
empty, asks a web service where the machine is). Set but empty counts as unset here: tsbench sets it to ``1``
before any of those libraries can be imported (called when ``tsbench_core`` is imported).

OpenVINO has no such variable: ``import openvino`` sends a usage event unless the user opted out with
``opt_in_out --opt_out`` (see ``sparse_runtime/openvino_telemetry.py``). ``block_openvino_telemetry`` makes its
telemetry package unimportable while openvino is not yet loaded, so OpenVINO falls back to its no-op stub
whoever imports it later in the process.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "NM_DISABLE_ANALYTICS"
OPENVINO_TELEMETRY = "openvino_telemetry"


def disable_neural_magic_analytics() -> None:
    if not os.environ.get(VARIABLE, "").strip():
        os.environ[VARIABLE] = "1"


def block_openvino_telemetry() -> bool:
    """Make ``import openvino_telemetry`` fail in this process unless openvino is already loaded; whether it is
    blocked now."""
    if "openvino" not in sys.modules:
        sys.modules[OPENVINO_TELEMETRY] = None  # type: ignore[assignment]  # None: the import raises ImportError
    return sys.modules.get(OPENVINO_TELEMETRY, False) is None
