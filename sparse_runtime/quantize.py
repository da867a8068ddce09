"""Static INT8 quantization of an exported (pruned) ONNX graph: `quantize_onnx`, in one of two graph formats.

Two graph formats (``quant_format``), both run by ONNX Runtime and DeepSparse:

* ``matmulinteger`` (default): each weight product ``x·W`` becomes QuantizeLinear(x) → MatMulInteger(int8 W) →
  Cast → Mul(sx·sw) (→ Add for a Gemm's bias), written here; the weight is stored as int8, so DeepSparse sees a
  constant quantized kernel and runs its INT8 kernels. This is the form SparseML's QAT export writes for Linear
  layers (SparseML stores uint8 weights with zero point 128; here int8 with zero point 0, which ONNX Runtime also
  runs fast). One QuantizeLinear per activation tensor, however many products read it;
* ``qdq``: ONNX Runtime's ``quantize_static`` (QuantizeLinear → DequantizeLinear pairs). DeepSparse 1.8 keeps it
  inside its engine but does not fold the weights' DequantizeLinear: it dequantizes the weight at run time and
  runs a generic dense GEMM, slower than fp32 (measured, docs/runtimes.md).

In both: weights int8 symmetric (zero point 0, so a pruned zero stays exactly 0), one scale per tensor unless
``per_channel`` (one per output column; in the QDQ format DeepSparse 1.8 then leaves the weights' DequantizeLinear
outside its engine); activations uint8, asymmetric (or symmetric, zero point 128), min/max calibrated on training
windows — SparseML 1.8's defaults (symmetric weights, asymmetric activations); only MatMul/Gemm with a constant
weight are quantized: products of two activations (attention scores) stay float, as do the nodes matched by
``keep_float`` patterns. Conv (the token embeddings) stays float: DeepSparse 1.8 rejects a quantized Conv of this
graph ("kernel is not constant") and then runs the whole graph outside its engine.

The MatMulInteger writer also takes learned parameters (``LinearQParams``, from QAT in ``sparse_runtime/qat.py``):
a product whose weight equals a learned layer's weight (or several side by side, as in the fused q/k/v product of
the deploy form) uses its scales, so the integer graph computes what QAT trained.

``keep_float`` patterns name modules (``fnmatch`` on the dotted module path the legacy exporter writes into node
names, ``/decoder/projection/MatMul`` → ``decoder.projection``; a pattern matching a module keeps all nodes inside
it), or op types as ``op:TYPE``.

Weight encodings (``weights``), for CPUs whose integer kernels differ. ONNX Runtime documents that on x86-64 with
AVX2 or AVX-512 but no VNNI it computes uint8 x int8 (U8S8) products with VPMADDUBSW, which adds two products in a
saturating 16-bit integer (255 * 127 * 2 > 32767), and that the remedies are 7-bit weights (``reduce_range``) or
uint8 weights (U8U8, no saturation); VNNI machines and ARM are not affected (ONNX Runtime docs, "Quantize ONNX
models": data type selection and FAQ). Which encoding a cell uses is the runtime's choice for the detected CPU
(``int8_plan`` of the runtime plugins), recorded in the quantize info:

* ``int8``: int8 symmetric, zero point 0 (U8S8) — the default;
* ``uint8``: the same integer weights plus 128, zero point 128 (U8U8): the integer products, and so the output,
  are exactly those of ``int8`` (learned QAT scales included); a pruned zero is stored as 128;
* ``int8-7bit``: int8 symmetric over [-63, 63] (ONNX Runtime's ``reduce_range``): one bit less precision; not for
  learned (8-bit) QAT parameters.

The writers live in ``sparse_runtime/int8/`` (``graph``: op types and which nodes stay float; ``calibration``;
``qparams``: scales, zero points, encodings; ``matmulinteger``; ``qdq``); sizes in ``sparse_runtime/sizes.py``, peak
memory in ``sparse_runtime/memory.py``; the quantizer plugins that call ``quantize_onnx`` in
``sparse_runtime/quantizers.py``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sparse_runtime.export import ExportResult
from sparse_runtime.int8.calibration import WindowCalibrationReader
from sparse_runtime.int8.graph import (
    DEFAULT_FORMAT,
    FORMATS,
    INT8_OP_TYPES,
    QDQ_OP_TYPES,
    QUANTIZED_OP_TYPES,
    float_nodes,
    weight_products,
)
from sparse_runtime.int8.matmulinteger import write_matmulinteger
from sparse_runtime.int8.qdq import write_qdq
from sparse_runtime.int8.qparams import DEFAULT_WEIGHTS, WEIGHT_ENCODINGS, LinearQParams
from tsbench_core.errors import CellError

__all__ = ["FORMATS", "WEIGHT_ENCODINGS", "LinearQParams", "QuantizeResult", "WindowCalibrationReader",
           "quantize_onnx"]

# --- quantization ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizeResult:
    """A quantized graph and how it was made."""

    export: ExportResult  # the fp32 export's feeding info, with ``path`` pointing at the INT8 graph
    fp32_path: Path
    kept_float: dict[str, str]  # node name -> pattern
    quantized_nodes: int
    calibration_batches: int
    seconds: float
    op_counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.export.path

    def info(self) -> dict[str, Any]:
        return {
            **self.settings,
            "calibration_batches": self.calibration_batches,
            "quantized_nodes": self.quantized_nodes,
            "kept_float": dict(sorted(self.kept_float.items())),
            "qdq_nodes": {op: self.op_counts.get(op, 0) for op in QDQ_OP_TYPES},
            "int8_ops": {op: self.op_counts.get(op, 0) for op in INT8_OP_TYPES},
            "quantize_seconds": round(self.seconds, 3),
        }


def quantize_onnx(export: ExportResult, out_path: Path, reader: WindowCalibrationReader, *,
                  keep_float: Sequence[str] = (), per_channel: bool = False,
                  symmetric_activations: bool = False, quant_format: str = DEFAULT_FORMAT,
                  qparams: Sequence[LinearQParams] | None = None, weights: str = DEFAULT_WEIGHTS,
                  weights_reason: str | None = None) -> QuantizeResult:
    """Static INT8 quantization of ``export`` (fp32 ONNX) into ``out_path`` (written atomically).

    ``quant_format`` is ``matmulinteger`` (the default: what DeepSparse runs fast) or ``qdq`` (ONNX Runtime's
    ``quantize_static``). ``qparams`` (MatMulInteger only) are quantization parameters learned elsewhere (QAT):
    a weight product whose weight they match uses them instead of calibrated ones. ``weights`` is the weight
    encoding (``WEIGHT_ENCODINGS``; see the module docstring), ``weights_reason`` why it was chosen (recorded).
    """
    import onnx

    if quant_format not in FORMATS:
        raise ValueError(f"unknown INT8 format {quant_format!r}; expected one of {FORMATS}")
    if weights not in WEIGHT_ENCODINGS:
        raise ValueError(f"unknown INT8 weight encoding {weights!r}; expected one of {WEIGHT_ENCODINGS}")
    if qparams and quant_format != "matmulinteger":
        raise ValueError("learned quantization parameters (QAT) are written in the matmulinteger format only")
    if qparams and weights == "int8-7bit":
        raise ValueError("learned quantization parameters (QAT) are 8-bit: write them with weights 'int8' or "
                         "'uint8', not 'int8-7bit'")
    proto = onnx.load(str(export.path))
    kept = float_nodes(proto, keep_float)
    if not weight_products(proto, kept):
        raise CellError(f"INT8: nothing to quantize: every MatMul/Gemm with a constant weight is kept float by "
                        f"keep_float {list(keep_float)}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    start = time.perf_counter()
    reader.rewind()
    try:
        if quant_format == "qdq":
            settings = write_qdq(export, tmp, reader, kept, per_channel=per_channel,
                                  symmetric_activations=symmetric_activations, weights=weights)
        else:
            settings = write_matmulinteger(proto, tmp, reader, kept, per_channel=per_channel,
                                            symmetric_activations=symmetric_activations, qparams=qparams or (),
                                            weights=weights)
        settings["weights_encoding"] = weights
        if weights_reason:
            settings["weights_reason"] = weights_reason
        os.replace(tmp, out_path)
    except CellError:
        raise
    except Exception as exc:
        raise CellError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - start
    quantized = onnx.load(str(out_path))
    ops = Counter(node.op_type for node in quantized.graph.node)
    if quant_format == "qdq":
        stored = {t.name for t in quantized.graph.initializer}
        dequantized_inputs = {n.output[0] for n in quantized.graph.node
                              if n.op_type == "DequantizeLinear" and n.input[0] in stored}  # weights only
        quantized_nodes = sum(1 for n in quantized.graph.node if n.op_type in QUANTIZED_OP_TYPES
                              and len(n.input) > 1 and n.input[1] in dequantized_inputs)
    else:
        quantized_nodes = ops.get("MatMulInteger", 0)
    return QuantizeResult(export=replace(export, path=out_path), fp32_path=export.path, kept_float=kept,
                          quantized_nodes=quantized_nodes, calibration_batches=reader.yielded,
                          seconds=seconds, op_counts=dict(ops), settings=settings)
