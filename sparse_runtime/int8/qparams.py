"""Quantization parameters: weight encodings, scales and zero points, and parameters learned by QAT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# how the weights are stored (activations are uint8 in every case), see "Weight encodings" above
WEIGHT_ENCODINGS = ("int8", "uint8", "int8-7bit")
DEFAULT_WEIGHTS = "int8"
INT8_LEVELS = {"int8": 127, "uint8": 127, "int8-7bit": 63}  # largest |q| of a symmetric weight


@dataclass(frozen=True)
class LinearQParams:
    """Quantization parameters learned for one Linear layer (by QAT), in the ONNX layout.

    ``weight`` is the float weight as a MatMul stores it (``[in, out]``, the transpose of torch's); the writer
    finds it (or it as a block of columns, as in a fused q/k/v product) among the graph's weights.
    ``act_zero_point`` is in the uint8 domain."""

    name: str
    weight: np.ndarray
    weight_scale: float | np.ndarray  # one, or one per output column
    act_scale: float
    act_zero_point: int


def activation_qparams(low: float, high: float, symmetric: bool) -> tuple[float, int]:
    """(scale, uint8 zero point) covering ``[low, high]`` (widened to include 0)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if symmetric:
        bound = max(-low, high)
        return (bound / 127.0 if bound > 0 else 1.0), 128
    scale = (high - low) / 255.0 if high > low else 1.0
    return scale, int(np.clip(round(-low / scale), 0, 255))


def weight_scale(weight: np.ndarray, per_channel: bool, levels: int = 127) -> np.ndarray:
    """Symmetric scale(s) of a ``[in, out]`` weight over ``[-levels, levels]``: one, or one per output column."""
    bound = np.abs(weight).max(axis=0) if per_channel else np.abs(weight).max()
    return np.where(bound > 0, bound / float(levels), 1.0).astype(np.float64)


def quantize_weight(weight: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """``round(w / scale)`` as int8 (zero point 0: a zero weight stays exactly 0)."""
    return np.clip(np.round(weight / scale), -128, 127).astype(np.int8)


def encode_weight(q: np.ndarray, weights: str) -> tuple[np.ndarray, np.ndarray]:
    """(stored weight, zero point) of int8 weights ``q`` in the encoding ``weights``: for ``uint8`` the same
    integers plus 128 with zero point 128, so ``stored - zero point == q`` exactly."""
    if weights == "uint8":
        return (q.astype(np.int16) + 128).astype(np.uint8), np.array(128, dtype=np.uint8)
    return q, np.array(0, dtype=np.int8)
