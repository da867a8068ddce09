"""``semi-structured``: Linear weights in 2:4 form as PyTorch semi-structured sparse tensors (CUDA only).

``torch.sparse.to_sparse_semi_structured`` hands 2:4-sparse weights to cuSPARSELt/CUTLASS kernels on
NVIDIA GPUs of compute capability 8.0 or newer. Written against PyTorch's documented API; it has not been run
on hardware here (no GPU on the development machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from sparse_runtime.common import base_versions, coerce_params, deploy_copy, to_numpy, to_tensors
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.protocols import Availability, PluginParams

MIN_CAPABILITY = (8, 0)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def is_n_m_sparse(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of ``m`` consecutive weights along the input dimension has at most ``n``
    non-zeros (the layout the sparse tensor cores need: groups run along each row of ``[out, in]``)."""
    try:  # the N:M pruner's checker is the single definition when the built-in pruners are installed
        from plugins.pruners.nm import is_nm_sparse
    except ImportError:
        is_nm_sparse = None
    if is_nm_sparse is not None:
        return bool(is_nm_sparse(weight, n, m))
    if weight.ndim != 2 or weight.shape[1] % m:
        return False
    groups = weight.detach().reshape(weight.shape[0], -1, m)
    return bool(((groups != 0).sum(dim=-1) <= n).all())


def semi_structured_candidates(model: nn.Module) -> tuple[list[str], dict[str, str]]:
    """Names of the Linear layers whose weights are 2:4 sparse, and why each other Linear is left dense."""
    chosen, skipped = [], {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight
        if not is_n_m_sparse(w):
            skipped[name] = "weight is not 2:4 sparse"
        elif w.shape[0] % 64 or w.shape[1] % 64:
            # cuSPARSELt/CUTLASS need both dimensions to be multiples of the kernel tile (64 is safe for all)
            skipped[name] = f"weight shape {tuple(w.shape)} is not a multiple of 64"
        else:
            chosen.append(name)
    return chosen, skipped


class SemiStructuredParams(PluginParams):
    """Options of the semi-structured runtime."""

    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


class SemiStructuredSession:
    def __init__(self, model: nn.Module, dtype: torch.dtype, info: dict[str, Any]) -> None:
        self._model = model
        self._dtype = dtype
        self.info = info

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            tensors = [t.to(self._dtype) for t in to_tensors(inputs, "cuda")]
            out = self._model(*tensors)
            torch.cuda.synchronize()
        return to_numpy(out)

    def close(self) -> None:
        self._model = None  # type: ignore[assignment]


class SemiStructuredRuntime:
    name = "semi-structured"
    description = "2:4 semi-structured sparse Linear weights on NVIDIA sparse tensor cores (CUDA, sm80+)"
    params_model: type[BaseModel] = SemiStructuredParams
    device = "cuda"

    def availability(self) -> Availability:
        if not torch.cuda.is_available():
            return Availability.no("needs a CUDA GPU (torch.cuda.is_available() is False on this machine)")
        if not hasattr(torch.sparse, "to_sparse_semi_structured"):
            return Availability.no(f"torch {torch.__version__} lacks torch.sparse.to_sparse_semi_structured")
        capability = torch.cuda.get_device_capability()
        if capability < MIN_CAPABILITY:
            return Availability.no(f"needs compute capability >= 8.0 for sparse tensor cores; GPU has "
                                   f"{capability[0]}.{capability[1]}")
        return Availability.yes()

    def versions(self) -> dict[str, str]:
        return {**base_versions(), "cuda": str(torch.version.cuda)}

    def prepare(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], params: BaseModel, *,
                threads: int, workdir: Path) -> SemiStructuredSession:
        available = self.availability()
        if not available.available:
            raise RuntimeUnavailable(available.reason)
        p = coerce_params(params, SemiStructuredParams)
        dtype = _DTYPES[p.dtype]
        clone, switched = deploy_copy(model)
        clone = clone.to(device="cuda", dtype=dtype)
        chosen, skipped = semi_structured_candidates(clone)
        if not chosen:
            raise CellError(f"no Linear layer of {type(model).__name__} holds 2:4-sparse weights "
                            f"(prune with an N:M pruner first)")
        modules = dict(clone.named_modules())
        for name in chosen:
            linear = modules[name]
            linear.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(linear.weight.detach()),
                                         requires_grad=False)
        info = {"runtime": self.name, "device": "cuda", "versions": self.versions(), "dtype": p.dtype,
                "gpu": torch.cuda.get_device_name(), "semi_structured_linears": chosen,
                "dense_linears": skipped, "deploy_form_modules": switched, "threads": {"torch": threads}}
        return SemiStructuredSession(clone, dtype, info)


PLUGINS = (SemiStructuredRuntime(),)
