"""``torch-compile``: TorchInductor-compiled model on CPU, or on CUDA when a GPU is present."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from sparse_runtime.common import (
    base_versions,
    coerce_params,
    deploy_copy,
    pin_torch_threads,
    to_numpy,
    to_tensors,
)
from tsbench_core.errors import CellError, RuntimeUnavailable
from tsbench_core.protocols import Availability, PluginParams


class CompileParams(PluginParams):
    """Options of the torch-compile runtime."""

    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available, else cpu
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    deploy_form: bool = True  # compile the deploy form (plain matmuls, no rfft) rather than the training form


def _resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


class CompiledSession:
    def __init__(self, fn: Any, device: str, threads: int, info: dict[str, Any]) -> None:
        self._fn = fn
        self._device = device
        self._threads = threads
        self.info = info

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        pin_torch_threads(self._threads)
        with torch.inference_mode():
            out = self._fn(*to_tensors(inputs, self._device))
            if self._device == "cuda":
                torch.cuda.synchronize()  # the timing harness must see the whole kernel time
        return to_numpy(out)

    def close(self) -> None:
        self._fn = None
        torch._dynamo.reset()


class TorchCompileRuntime:
    name = "torch-compile"
    description = "torch.compile (TorchInductor) on CPU, or CUDA when present; dense kernels"
    params_model: type[BaseModel] = CompileParams
    device = "cpu"

    def availability(self) -> Availability:
        if not hasattr(torch, "compile"):
            return Availability.no(f"torch {torch.__version__} has no torch.compile (needs torch >= 2.0)")
        return Availability.yes()

    def versions(self) -> dict[str, str]:
        out = base_versions()
        if torch.cuda.is_available():
            out["cuda"] = str(torch.version.cuda)
        return out

    def prepare(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], params: BaseModel, *,
                threads: int, workdir: Path) -> CompiledSession:
        p = coerce_params(params, CompileParams)
        device = _resolve_device(p.device)
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable("torch-compile on cuda: no CUDA device found by torch")
        if p.deploy_form:
            clone, switched = deploy_copy(model)
        else:
            clone, switched = copy.deepcopy(model).eval(), []
        clone = clone.to(device)
        used = pin_torch_threads(threads)
        compiled = torch.compile(clone, backend="inductor", mode=None if p.mode == "default" else p.mode,
                                 fullgraph=False, dynamic=False)
        info = {"runtime": self.name, "device": device, "versions": self.versions(),
                "threads": {"torch": used}, "backend": "inductor", "mode": p.mode,
                "deploy_form": p.deploy_form, "deploy_form_modules": switched}
        session = CompiledSession(compiled, device, used, info)
        try:  # compile now, so neither the gate nor the timed calls pay for it
            session.run([t.detach().cpu().numpy() for t in example_inputs])
        except Exception as exc:
            raise CellError(f"torch.compile of {type(model).__name__} failed: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
        return session


PLUGINS = (TorchCompileRuntime(),)
