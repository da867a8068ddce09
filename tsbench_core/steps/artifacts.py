"""Checkpoints keyed by content hash: a ``.pt`` of tensors and a ``.json`` of metadata, both written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Artifact:
    """A stored model: its weights file and the JSON metadata (metrics, pruning structure, accounting)."""

    key: str
    weights: Path
    meta: dict[str, Any]


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_artifact(directory: Path, key: str, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Artifact:
    """Write weights then metadata; the metadata file is the commit mark (written last)."""
    weights = directory / f"{key}.pt"
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    _atomic_write(weights, lambda handle: torch.save(tensors, handle))
    _atomic_write(directory / f"{key}.json", lambda handle: handle.write(json.dumps(meta, indent=1).encode()))
    return Artifact(key, weights, meta)


def find_artifact(directory: Path, key: str) -> Artifact | None:
    """The artifact if both files exist and the metadata parses, else None."""
    meta_path, weights = directory / f"{key}.json", directory / f"{key}.pt"
    if not (meta_path.exists() and weights.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return Artifact(key, weights, meta)


def load_weights(artifact: Artifact) -> dict[str, torch.Tensor]:
    return torch.load(artifact.weights, map_location="cpu", weights_only=True)
