"""OpenVINO without telemetry: the one place tsbench imports ``openvino``.

``import openvino`` imports its model-conversion package (``openvino.tools.ovc``), which at import sends a usage
event to Google Analytics and writes a client id under ``~/intel/`` unless the user opted out with
``opt_in_out --opt_out`` (the file ``~/intel/openvino_telemetry`` holding ``0``); ``convert_model`` sends more. No
environment variable turns this off. ``import tsbench_core`` already makes the ``openvino_telemetry`` package
unimportable (``tsbench_core.telemetry``) while openvino is not loaded; ``import_openvino`` does it again right
before the import and refuses when openvino was loaded with its telemetry. OpenVINO then falls back to its own
no-op stub, for every path in this process. Deliberately free of heavy imports, so a child process can use it
cheaply.
"""

from __future__ import annotations

import sys
from typing import Any

from tsbench_core.errors import RuntimeUnavailable
from tsbench_core.telemetry import OPENVINO_TELEMETRY as TELEMETRY_PACKAGE
from tsbench_core.telemetry import block_openvino_telemetry

ACTIVE_TELEMETRY = ("openvino was imported with its telemetry before tsbench could switch it off (its import "
                    "sends a usage event); let tsbench import it first")


def telemetry_status() -> str:
    """``blocked`` (OpenVINO's telemetry package cannot be imported in this process), ``not imported`` (openvino
    is not loaded yet: ``import_openvino`` will block it) or ``active`` (openvino was imported with its telemetry
    before tsbench could block it)."""
    if sys.modules.get(TELEMETRY_PACKAGE, False) is None:
        return "blocked"
    return "active" if "openvino" in sys.modules else "not imported"


def import_openvino() -> Any:
    """``openvino``, imported with its telemetry package unreachable.

    Raises ``RuntimeUnavailable`` when other code already imported openvino with its telemetry.
    """
    block_openvino_telemetry()
    if telemetry_status() == "active":
        raise RuntimeUnavailable(ACTIVE_TELEMETRY)
    import openvino

    return openvino
