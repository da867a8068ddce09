"""What machine and software a run used: recorded once per run in the store."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

from tsbench_core.cpu import FEATURES, cpu_facts
from tsbench_core.protocols import HardwareReporting, availability_of
from tsbench_core.registry import Registry


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's flags in ``/proc/cpuinfo`` names; the ones ``tsbench_core/cpu.py`` measures (``FEATURES``) as
    measured (``CPUID``: right under an emulator too), the others as ``/proc/cpuinfo`` lists them."""
    listed: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    listed = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return (listed - set(FEATURES)) | set(cpu_facts().features)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(registry: Registry) -> dict[str, Any]:
    """CPU (measured: ``tsbench_core/cpu.py``) and cores, GPU if any, Python, torch and every available runtime's
    library versions, with what a runtime's own CPU detection reports (``hardware``)."""
    import torch

    facts = cpu_facts()
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": facts.model_name or cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_features": list(facts.features),
        "cpu_fingerprint": facts.fingerprint,
        "cpu": facts.as_dict(),
        "python": sys.version.split()[0],
        "tsbench": _version("tsbench"),
        "torch": torch.__version__,
        "numpy": _version("numpy"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "runtimes": {},
    }
    for name, plugin in registry.runtimes.items():
        availability = availability_of(plugin)
        entry: dict[str, Any] = {"available": availability.available, "reason": availability.reason}
        if availability.available:
            try:
                entry["versions"] = plugin.versions()
            except Exception as exc:  # a version probe must not stop a run
                entry["versions_error"] = str(exc)
            if isinstance(plugin, HardwareReporting):
                try:
                    entry["hardware"] = plugin.hardware()
                except Exception as exc:  # nor a hardware probe
                    entry["hardware"] = {"error": f"{type(exc).__name__}: {exc}"}
        env["runtimes"][name] = entry
    return env
