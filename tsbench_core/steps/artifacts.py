"""Checkpoints keyed by content hash: a ``.pt`` of tensors and a ``.json`` sidecar, both written atomically.

The sidecar records the sha256 and size of its ``.pt`` (``meta["weights_file"]``). Every load checks them on
the very bytes it deserialises, so a damaged checkpoint is never loaded: ``usable_artifact`` moves it aside
(to ``damaged/`` in the artifact folder) with one warning line, and the step that made it runs again.

Checkpoints written before checksums existed are adopted once: torch's zip container keeps a CRC-32 of every
record, so when every CRC matches the file is trusted and its sha256 recorded in the sidecar (rebuilding
every old dense model would cost hours of training for no gain); a CRC mismatch is treated as damage.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tsbench_core.errors import CellError

WEIGHTS_FILE = "weights_file"  # sidecar member: {"sha256", "size"} of the .pt
DAMAGED_DIR = "damaged"


@dataclass(frozen=True)
class Artifact:
    """A stored model: its weights file and the JSON metadata (metrics, pruning structure, accounting)."""

    key: str
    weights: Path
    meta: dict[str, Any]


class DamagedArtifact(CellError):
    """A checkpoint whose bytes do not match its sidecar (or whose container is corrupt)."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fingerprint(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def save_artifact(directory: Path, key: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Artifact:
    """Write weights then metadata (with the weights' checksum); the metadata file is the commit mark."""
    weights = directory / f"{key}.pt"
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    data = buffer.getvalue()
    meta = {**meta, WEIGHTS_FILE: _fingerprint(data)}
    target = weights
    try:
        atomic_write(weights, data)
        target = directory / f"{key}.json"
        atomic_write(target, json.dumps(meta, indent=1).encode())
    except OSError as exc:  # a full disk, a read-only folder: nothing half-written is left behind
        raise CellError(f"cannot write artifact {target} ({exc.strerror or exc}); free disk space or fix the "
                        "folder's permissions, then run again") from None
    return Artifact(key, weights, meta)


def find_artifact(directory: Path, key: str) -> Artifact | None:
    """The artifact if both files exist and the metadata parses, else None (its bytes are not checked here)."""
    meta_path, weights = directory / f"{key}.json", directory / f"{key}.pt"
    if not (meta_path.exists() and weights.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return Artifact(key, weights, meta) if isinstance(meta, dict) else None


def _problem(artifact: Artifact, data: bytes) -> str | None:
    """Why ``data`` (the bytes of ``artifact.weights``) cannot be trusted, or None."""
    expected = artifact.meta.get(WEIGHTS_FILE)
    if isinstance(expected, dict):
        if len(data) != expected.get("size"):
            return f"size {len(data)} bytes, its sidecar says {expected.get('size')}"
        if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
            return "sha256 differs from its sidecar"
        return None
    return _container_problem(data)


def _container_problem(data: bytes) -> str | None:
    """A checkpoint without a recorded checksum: check the zip container's own CRC-32 of every record."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"not a readable checkpoint ({type(exc).__name__})"
    return f"record {bad} fails its CRC-32" if bad else None


def _adopt_legacy(directory: Path, artifact: Artifact, data: bytes) -> Artifact:
    """Record the checksum of a pre-checksum checkpoint that passed its container check."""
    meta = {**artifact.meta, WEIGHTS_FILE: {**_fingerprint(data), "adopted_at": time.time()}}
    with contextlib.suppress(OSError):  # a read-only folder: still usable, verified again next time
        atomic_write(directory / f"{artifact.key}.json", json.dumps(meta, indent=1).encode())
    return Artifact(artifact.key, artifact.weights, meta)


def quarantine(directory: Path, key: str) -> Path:
    """Move both files of an artifact to ``damaged/`` (never deleted: the user may want to look at them)."""
    target = directory / DAMAGED_DIR
    target.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for suffix in (".pt", ".json"):
        source = directory / f"{key}{suffix}"
        if source.exists():
            os.replace(source, target / f"{key}.{stamp}{suffix}")
    return target


def usable_artifact(directory: Path, key: str) -> Artifact | None:
    """The stored artifact if its bytes are intact; a damaged one is moved aside (one warning) and None
    returned, so the caller rebuilds it from its inputs."""
    artifact = find_artifact(directory, key)
    if artifact is None:
        return None
    try:
        data = artifact.weights.read_bytes()
    except OSError as exc:
        problem: str | None = f"cannot be read ({exc.strerror or exc})"
    else:
        problem = _problem(artifact, data)
        if problem is None:
            return artifact if WEIGHTS_FILE in artifact.meta else _adopt_legacy(directory, artifact, data)
    try:
        moved = quarantine(directory, key)
    except OSError as exc:
        raise DamagedArtifact(f"artifact {artifact.weights} is damaged ({problem}) and cannot be moved aside "
                              f"({exc.strerror or exc}); delete {artifact.weights} and its .json, then run "
                              "again to rebuild it") from None
    print(f"warning: artifact {artifact.weights} is damaged ({problem}); moved to {moved}/ and rebuilding it",
          file=sys.stderr, flush=True)
    return None


def load_weights(artifact: Artifact) -> dict[str, torch.Tensor]:
    """The tensors of an artifact, deserialised (``weights_only=True``) from bytes that passed the checksum."""
    try:
        data = artifact.weights.read_bytes()
    except OSError as exc:
        raise DamagedArtifact(f"artifact {artifact.weights} cannot be read ({exc.strerror or exc}); "
                              "run again to rebuild it") from None
    problem = _problem(artifact, data)
    if problem is not None:
        raise DamagedArtifact(f"artifact {artifact.weights} is damaged ({problem}); not loaded. Run again: "
                              "it is moved aside and rebuilt")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # checksum fine yet unloadable: written by an incompatible torch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedArtifact(f"artifact {artifact.weights} passes its checksum but torch cannot load it "
                              f"({first}); delete it and its .json to rebuild it") from None
