"""The QDQ form: ONNX Runtime's ``quantize_static`` (QuantizeLinear → DequantizeLinear pairs).

onnx 1.14 (pinned for DeepSparse 1.8) lacks the 4-bit tensor types that onnxruntime's quantization module names
at import time; ``quantization_module`` adds the two enum values before importing it (nothing here uses them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparse_runtime.export import ExportResult
from sparse_runtime.int8.calibration import WindowCalibrationReader
from sparse_runtime.int8.graph import QUANTIZED_OP_TYPES, store_raw
from sparse_runtime.int8.qparams import DEFAULT_WEIGHTS


def quantization_module() -> Any:
    """``onnxruntime.quantization``, importable next to onnx 1.14 (see the module docstring)."""
    from onnx import TensorProto

    for name, value in (("UINT4", 21), ("INT4", 22)):  # the values onnx >= 1.16 gives them
        if not hasattr(TensorProto, name):
            setattr(TensorProto, name, value)
    import onnxruntime.quantization as quantization

    return quantization


def write_qdq(export: ExportResult, tmp: Path, reader: WindowCalibrationReader, kept: dict[str, str], *,
               per_channel: bool, symmetric_activations: bool, weights: str = DEFAULT_WEIGHTS) -> dict[str, Any]:
    """ONNX Runtime's ``quantize_static`` in the QDQ format; returns the settings used."""
    q = quantization_module()
    q.CalibrationDataReader.register(WindowCalibrationReader)
    q.quantize_static(
        str(export.path), str(tmp), reader, quant_format=q.QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OP_TYPES), per_channel=per_channel, reduce_range=weights == "int8-7bit",
        activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
        nodes_to_exclude=sorted(kept), calibrate_method=q.CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": symmetric_activations, "WeightSymmetric": True,
                       "MatMulConstBOnly": True},
    )
    store_raw(tmp, shift_int8_weights=weights == "uint8")
    described = {"int8": "int8 symmetric", "uint8": "uint8 symmetric (int8 + 128, zero point 128)",
                 "int8-7bit": "int8 symmetric, 7-bit range (reduce_range)"}[weights]
    return {"method": "static-int8", "format": "qdq", "weights": described,
            "activations": f"uint8 {'symmetric' if symmetric_activations else 'asymmetric'}",
            "per_channel": per_channel, "calibration": "minmax", "op_types": list(QUANTIZED_OP_TYPES),
            "matmul_const_b_only": True}
