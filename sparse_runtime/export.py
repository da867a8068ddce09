"""ONNX export with static shapes, in deploy form, for the ONNX Runtime and DeepSparse runtimes.

The legacy TorchScript exporter (``dynamo=False``) is used: it is the one whose output onnx 1.14 and
DeepSparse 1.8 read. Opset 14 is SparseML 1.8's default for modern torch, so DeepSparse 1.8 knows it.
Inputs the model does not use (DLinear ignores the time marks) are dropped by the tracer; the result records
which of the forward arguments the graph still takes, so sessions feed only those.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sparse_runtime.common import deploy_copy
from tsbench_core.errors import CellError

DEFAULT_OPSET = 14
INPUT_NAMES = ("x_enc", "x_mark_enc", "x_dec", "x_mark_dec")
OUTPUT_NAME = "forecast"
# Ops that DeepSparse runs outside its engine or gets wrong (Where from masked_fill gave wrong outputs;
# Trilu is unsupported; einsum and DFT/random ops are not fused): a deploy form should not produce them.
DEEPSPARSE_RISKY_OPS = frozenset({"Trilu", "Where", "Einsum", "DFT", "RandomNormal", "RandomNormalLike",
                                  "RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial"})
_ATEN_OP = re.compile(r"(aten::[A-Za-z0-9_.]+|prim::[A-Za-z0-9_.]+|onnx::[A-Za-z0-9_.]+)")


@dataclass(frozen=True)
class ExportResult:
    """An exported graph and what the sessions need to feed it."""

    path: Path
    opset: int
    input_names: tuple[str, ...]  # graph inputs, in graph order
    used_inputs: tuple[int, ...]  # positions in the forward signature of the graph inputs
    input_shapes: tuple[tuple[int, ...], ...]
    op_counts: dict[str, int] = field(default_factory=dict)
    deploy_form_modules: tuple[str, ...] = ()
    weight_sparsity: float = 0.0  # fraction of zeros over the >=2-D float initializers

    @property
    def risky_ops(self) -> list[str]:
        return sorted(op for op in self.op_counts if op in DEEPSPARSE_RISKY_OPS)

    def info(self) -> dict[str, Any]:
        return {
            "opset": self.opset,
            "graph_inputs": list(self.input_names),
            "used_inputs": list(self.used_inputs),
            "op_counts": dict(sorted(self.op_counts.items())),
            "deploy_form_modules": list(self.deploy_form_modules),
            "deepsparse_risky_ops": self.risky_ops,
            "exported_weight_sparsity": round(self.weight_sparsity, 4),
        }

    def select(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The forward arguments the graph takes, C-contiguous float32, in graph order."""
        return [np.ascontiguousarray(inputs[i], dtype=np.float32) for i in self.used_inputs]


def failing_op(exc: BaseException) -> str:
    """The operator an exporter error names (``aten::fft_rfft``...), or the exception type."""
    match = _ATEN_OP.search(str(exc))
    return match.group(1) if match else type(exc).__name__


def export_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path, *,
                opset: int = DEFAULT_OPSET, deploy_form: bool = True,
                input_names: tuple[str, ...] = INPUT_NAMES) -> ExportResult:
    """Export an eval-mode copy of ``model`` (in deploy form) with static shapes to ``path``, atomically.

    Raises ``CellError`` naming the operator when the exporter fails.
    """
    import onnx

    if deploy_form:
        clone, switched = deploy_copy(model)
    else:
        import copy

        clone, switched = copy.deepcopy(model).eval(), []
    names = tuple(input_names[: len(example_inputs)])
    if len(names) < len(example_inputs):
        names += tuple(f"input_{i}" for i in range(len(names), len(example_inputs)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(clone, tuple(example_inputs), tmp_name, dynamo=False, opset_version=opset,
                              do_constant_folding=True, input_names=list(names), output_names=[OUTPUT_NAME],
                              dynamic_axes=None)
        proto = onnx.load(tmp_name)
        onnx.checker.check_model(proto)
        os.replace(tmp_name, path)
    except CellError:
        raise
    except Exception as exc:
        op = failing_op(exc)
        first = str(exc).strip().splitlines()
        raise CellError(f"ONNX export (opset {opset}) of {type(model).__name__} failed at op {op}: "
                        f"{first[-1] if first else type(exc).__name__}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return _describe(proto, path, opset, names, switched)


def _describe(proto: Any, path: Path, opset: int, names: tuple[str, ...],
              switched: list[str]) -> ExportResult:
    from onnx import numpy_helper

    initializers = {init.name for init in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    graph_names = tuple(i.name for i in graph_inputs)
    unknown = [n for n in graph_names if n not in names]
    if unknown:
        raise CellError(f"exported graph has unexpected inputs {unknown} (expected some of {list(names)})")
    shapes = tuple(tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs)
    zeros = total = 0
    for init in proto.graph.initializer:
        if len(init.dims) >= 2 and init.data_type == 1:  # float tensors of rank >= 2: the weights
            arr = numpy_helper.to_array(init)
            zeros += int(arr.size - np.count_nonzero(arr))
            total += int(arr.size)
    return ExportResult(
        path=path, opset=opset, input_names=graph_names,
        used_inputs=tuple(names.index(n) for n in graph_names), input_shapes=shapes,
        op_counts=dict(Counter(node.op_type for node in proto.graph.node)),
        deploy_form_modules=tuple(switched), weight_sparsity=zeros / total if total else 0.0,
    )
