"""The one correctness gate: a runtime's outputs vs torch eager on the same weights, before any timing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tsbench_core.errors import CellError
from tsbench_core.protocols import RuntimeSession
from tsbench_core.registry import protocol_members

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


def runtime_of(session: RuntimeSession) -> str:
    """The runtime a session names in its ``info``; ``CellError`` for an object that is no ``RuntimeSession``
    (a runtime plugin's ``prepare``/``open_graph`` returned something else), before it is gated or timed."""
    if not isinstance(session, RuntimeSession):
        cls = type(session)
        missing = [m for m in protocol_members(RuntimeSession) if not hasattr(session, m)]
        raise CellError(f"the runtime returned a {cls.__module__}.{cls.__qualname__}, which does not implement "
                        f"RuntimeSession: missing {', '.join(missing)}")
    return str(session.info.get("runtime", type(session).__name__))


def verify_session(session: RuntimeSession, reference: nn.Module, batches: Sequence[Sequence[np.ndarray]], *,
                   atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> float:
    """Max abs error of ``session`` vs torch eager over ``batches``; above tolerance, ``CellError`` with it.

    ``reference`` must hold the same (pruned) weights the session was prepared from.
    """
    if not batches:
        raise ValueError("the correctness gate needs at least one batch")
    runtime = runtime_of(session)
    worst = 0.0
    for i, batch in enumerate(batches):
        expected = reference_outputs(reference, batch)
        actual = session.run(list(batch))
        err, ok = compare(actual, expected, atol=atol, rtol=rtol)
        worst = max(worst, err)
        if not ok:
            raise CellError(
                f"correctness gate failed for runtime {runtime!r} on batch {i}: max abs error {err:.3g} vs "
                f"torch eager exceeds atol={atol:g} + rtol={rtol:g}*|ref| (output not timed)"
            )
    return worst


def verify_session_relative(session: RuntimeSession, reference: nn.Module, batches: Sequence[Sequence[np.ndarray]],
                            *, tolerance: float) -> tuple[float, float]:
    """The INT8 gate: (max abs error, relative error) of ``session`` vs torch eager fp32 over ``batches``.

    The relative error is RMS(session - reference) / std(reference), over all outputs of all batches: a
    quantized model is never exact, so its error is judged against the spread of what it predicts. Above
    ``tolerance`` (or non-finite outputs), ``CellError`` quoting both figures.
    """
    if not batches:
        raise ValueError("the correctness gate needs at least one batch")
    runtime = runtime_of(session)
    actual_all, expected_all = [], []
    for batch in batches:
        expected = reference_outputs(reference, batch)
        actual = np.asarray(session.run(list(batch)), dtype=np.float64)
        if actual.shape != expected.shape:
            raise CellError(f"output shape {tuple(actual.shape)} differs from torch eager {tuple(expected.shape)}")
        actual_all.append(actual.ravel())
        expected_all.append(expected.astype(np.float64).ravel())
    actual = np.concatenate(actual_all)
    expected = np.concatenate(expected_all)
    if not np.all(np.isfinite(actual)):
        raise CellError(f"INT8 correctness gate failed for runtime {runtime!r}: non-finite outputs (not timed)")
    diff = actual - expected
    max_err = float(np.abs(diff).max()) if diff.size else 0.0
    spread = float(expected.std())
    rel = float(np.sqrt(np.mean(diff**2)) / spread) if spread > 0 else (0.0 if max_err == 0 else float("inf"))
    if not rel <= tolerance:
        raise CellError(
            f"INT8 correctness gate failed for runtime {runtime!r}: relative error {rel:.3g} (RMS error / std of "
            f"the fp32 torch-eager output) exceeds tolerance {tolerance:g}; max abs error {max_err:.3g} "
            f"(output not timed)",
            columns={"max_abs_err_vs_torch": max_err, "rel_err_vs_torch": rel},
        )
    return max_err, rel
