"""Rules measured on one kind of CPU, cached per CPU fingerprint (``tsbench_core/cpu.py``).

A rule such as "DeepSparse aborts compiling this FFN width" holds for the CPU (and library version) it was probed
on, not for every machine. ``HardwareRules`` keeps such verdicts in one JSON file per topic, CPU fingerprint and
context (e.g. the library version): ``$TSBENCH_HARDWARE_CACHE`` or ``~/.cache/tsbench/hardware``. The file is
rewritten atomically (a temporary file, then ``os.replace``) and merged with what another process wrote
meanwhile; an unreadable file counts as empty (the verdicts are measured again), never as an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tsbench_core.cpu import CpuFacts, cpu_facts

CACHE_ENV = "TSBENCH_HARDWARE_CACHE"


def hardware_cache_dir() -> Path:
    """``$TSBENCH_HARDWARE_CACHE``, or ``~/.cache/tsbench/hardware``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tsbench" / "hardware"


class HardwareRules:
    """Verdicts of one topic measured on this CPU (``facts``) in one ``context``."""

    def __init__(self, topic: str, context: dict[str, Any] | None = None, *, facts: CpuFacts | None = None,
                 folder: Path | None = None) -> None:
        self.topic = topic
        self.facts = facts or cpu_facts()
        self.context = dict(context or {})
        tag = hashlib.sha256(json.dumps(self.context, sort_keys=True).encode()).hexdigest()[:8]
        self.path = (folder or hardware_cache_dir()) / f"{topic}-{self.facts.fingerprint}-{tag}.json"

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        verdicts = data.get("verdicts") if isinstance(data, dict) else None
        fits = isinstance(data, dict) and data.get("fingerprint") == self.facts.fingerprint \
            and data.get("context") == self.context
        return verdicts if fits and isinstance(verdicts, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored verdict for ``key``, or None."""
        found = self._read().get(key)
        return found if isinstance(found, dict) else None

    def put(self, key: str, verdict: dict[str, Any]) -> None:
        """Store ``verdict`` (with the time it was measured) under ``key``."""
        verdicts = self._read()
        verdicts[key] = {**verdict, "measured_at": time.time()}
        cpu = {"model_name": self.facts.model_name, "vendor": self.facts.vendor,
               "features": list(self.facts.features), "source": self.facts.source}
        payload = {"topic": self.topic, "fingerprint": self.facts.fingerprint, "cpu": cpu,
                   "context": self.context, "verdicts": verdicts}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
