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
    # Inductor's pattern matcher (attention -> SDPA fusion among others). None: on, and if compiling fails,
    # once more with it off (torch 2.13's attention rewrite fails on a key permuted as (0, 2, 3, 1)).
    pattern_matcher: bool | None = None


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
        # no_grad, not inference_mode: dynamo guards on constants the models build with torch.from_numpy
        # fail under inference_mode (dispatch key set mismatch) in torch 2.13
        with torch.no_grad():
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

    def device_for(self, params: BaseModel) -> str:
        """``cuda`` when the params ask for it; ``auto`` takes a GPU only where one is present, so needs none."""
        return "cuda" if coerce_params(params, CompileParams).device == "cuda" else self.device

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
        info = {"runtime": self.name, "device": device, "versions": self.versions(),
                "threads": {"torch": used}, "backend": "inductor", "mode": p.mode,
                "deploy_form": p.deploy_form, "deploy_form_modules": switched}
        example = [t.detach().cpu().numpy() for t in example_inputs]
        attempts = [p.pattern_matcher] if p.pattern_matcher is not None else [True, False]
        failures = []
        for pattern_matcher in attempts:
            compiled = torch.compile(clone, backend="inductor", mode=None if p.mode == "default" else p.mode,
                                     fullgraph=False, dynamic=False,
                                     options={"pattern_matcher": pattern_matcher})
            session = CompiledSession(compiled, device, used, {**info, "pattern_matcher": pattern_matcher})
            try:  # compile now, so neither the gate nor the timed calls pay for it
                session.run(example)
            except Exception as exc:
                failures.append(f"pattern_matcher={pattern_matcher}: {_last_error_line(exc)}")
                torch._dynamo.reset()
                continue
            if failures:
                session.info["compile_retries"] = failures
            return session
        raise CellError(f"torch.compile of {type(model).__name__} failed: {'; '.join(failures)}")


def _last_error_line(exc: BaseException) -> str:
    """The informative line of an inductor error (the first line is only 'backend=inductor raised:')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "Error" in line and not line.startswith("Set TORCHDYNAMO")]
    return (useful[-1] if useful else lines[0] if lines else type(exc).__name__)[:500]


PLUGINS = (TorchCompileRuntime(),)
