"""Helpers shared by the runtime plugins: deploy forms, input conversion, thread pinning."""

from __future__ import annotations

import copy
import platform
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tsbench_core.protocols import DeployForm, PluginParams


def set_deploy_form(model: nn.Module, enabled: bool = True) -> list[str]:
    """Call ``set_deploy_form(enabled)`` on every submodule that has it (``DeployForm``); return their qualified
    names."""
    switched = []
    for name, module in model.named_modules():
        if isinstance(module, DeployForm):
            module.set_deploy_form(enabled)
            switched.append(name or "<root>")
    return switched


def deploy_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """An eval-mode copy of ``model`` in deploy form (the caller's model is left untouched)."""
    clone = copy.deepcopy(model).eval()
    return clone, set_deploy_form(clone, True)


def to_tensors(inputs: Sequence[np.ndarray], device: str = "cpu") -> list[torch.Tensor]:
    """numpy arrays -> float32 torch tensors on ``device`` (no copy on CPU when already float32)."""
    return [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device) for a in inputs]


def to_numpy(output: torch.Tensor | tuple | list) -> np.ndarray:
    """The forecast tensor (first element if the model returns a tuple) as a float32 numpy array."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.detach().to("cpu", torch.float32).numpy()


def pin_torch_threads(threads: int) -> int:
    """Set torch's intra-op thread count (process-wide) and return the value now in force."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def base_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def dist_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the given distributions (missing ones are left out)."""
    from importlib import metadata

    out = {}
    for dist in distributions:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def coerce_params(params: object, model_cls: type[PluginParams]) -> PluginParams:
    """``params`` as an instance of ``model_cls`` (accepts the instance, a dict, None or another model)."""
    if isinstance(params, model_cls):
        return params
    if params is None:
        return model_cls()
    if isinstance(params, dict):
        return model_cls.model_validate(params)
    return model_cls.model_validate(params.model_dump())  # type: ignore[attr-defined]
