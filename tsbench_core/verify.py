"""The one correctness gate: a runtime's outputs vs torch eager on the same weights, before any timing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tsbench_core.errors import CellError
from tsbench_core.protocols import RuntimeSession

DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-3


def reference_outputs(reference: nn.Module, batch: Sequence[np.ndarray]) -> np.ndarray:
    """torch-eager output of ``reference`` (eval mode, no grad) on one batch of numpy inputs."""
    reference.eval()
    tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in batch]
    with torch.inference_mode():
        out = reference(*tensors)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.detach().to("cpu", torch.float32).numpy()


def compare(actual: np.ndarray, expected: np.ndarray, *, atol: float, rtol: float) -> tuple[float, bool]:
    """(max abs error, within tolerance); element-wise ``|a - e| <= atol + rtol * |e|``; NaN/inf fail."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise CellError(
            f"output shape {tuple(actual.shape)} differs from torch eager {tuple(expected.shape)}"
        )
    if not np.all(np.isfinite(actual)):
        return float("inf"), False
    diff = np.abs(actual - expected)
    max_err = float(diff.max()) if diff.size else 0.0
    return max_err, bool(np.all(diff <= atol + rtol * np.abs(expected)))


def verify_session(session: RuntimeSession, reference: nn.Module, batches: Sequence[Sequence[np.ndarray]], *,
                   atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> float:
    """Max abs error of ``session`` vs torch eager over ``batches``; above tolerance, ``CellError`` with it.

    ``reference`` must hold the same (pruned) weights the session was prepared from.
    """
    if not batches:
        raise ValueError("the correctness gate needs at least one batch")
    worst = 0.0
    for i, batch in enumerate(batches):
        expected = reference_outputs(reference, batch)
        actual = session.run(list(batch))
        err, ok = compare(actual, expected, atol=atol, rtol=rtol)
        worst = max(worst, err)
        if not ok:
            runtime = session.info.get("runtime", type(session).__name__) if hasattr(session, "info") else "?"
            raise CellError(
                f"correctness gate failed for runtime {runtime!r} on batch {i}: max abs error {err:.3g} vs "
                f"torch eager exceeds atol={atol:g} + rtol={rtol:g}*|ref| (output not timed)"
            )
    return worst
