"""What machine and software a run used: recorded once per run in the store."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

from tsbench_core.protocols import availability_of
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
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(registry: Registry) -> dict[str, Any]:
    """CPU model and cores, GPU if any, Python, torch and every available runtime's library versions."""
    import torch

    flags = cpu_flags()
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_features": sorted(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags),
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
        env["runtimes"][name] = entry
    return env
