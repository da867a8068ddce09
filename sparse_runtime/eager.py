"""``torch-eager``: the reference runtime — the model as given, eval mode, ``torch.inference_mode``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from sparse_runtime.common import base_versions, coerce_params, deploy_copy, pin_torch_threads, to_numpy, to_tensors
from tsbench_core.protocols import Availability, PluginParams


class EagerParams(PluginParams):
    """Options of the torch-eager runtime."""

    deploy_form: bool = False  # run the exportable deploy form instead of the training form


class EagerSession:
    """Runs the eval-mode module under ``inference_mode`` with the pinned thread count."""

    def __init__(self, model: nn.Module, threads: int, info: dict[str, Any]) -> None:
        self.model = model
        self.threads = threads
        self.info = info

    def run(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        pin_torch_threads(self.threads)
        with torch.inference_mode():
            return to_numpy(self.model(*to_tensors(inputs)))

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


class TorchEagerRuntime:
    name = "torch-eager"
    description = "PyTorch eager mode on CPU (the reference every other runtime is checked against)"
    params_model: type[BaseModel] = EagerParams
    device = "cpu"

    def availability(self) -> Availability:
        return Availability.yes()

    def versions(self) -> dict[str, str]:
        return base_versions()

    def prepare(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...], params: BaseModel, *,
                threads: int, workdir: Path) -> EagerSession:
        deploy = coerce_params(params, EagerParams).deploy_form
        switched: list[str] = []
        if deploy:
            model, switched = deploy_copy(model)
        model.eval()
        used = pin_torch_threads(threads)
        info = {"runtime": self.name, "device": "cpu", "versions": self.versions(),
                "threads": {"torch": used}, "deploy_form": deploy, "deploy_form_modules": switched}
        return EagerSession(model, used, info)


PLUGINS = (TorchEagerRuntime(),)
