"""Quantization-aware fine-tuning (QAT) of a pruned model through a SparseML recipe, for the INT8 step.

SparseML's ``QuantizationModifier`` wraps every quantized ``Linear`` in a ``QuantWrapper``: a fake-quantized
input (8-bit, asymmetric by default, min/max observers with a moving average) and a fake-quantized weight (8-bit
symmetric, one scale per tensor). A ``ConstantPruningModifier`` holds every pruned zero at zero. The model is
fine-tuned through the cell's training loop (``train``, as ``PruneContext.train``), with SparseML's manager
wrapping the optimizer. Afterwards:

* ``model`` is the float model, in the original module structure, with the fine-tuned weights (exported to fp32
  ONNX as usual);
* ``qparams`` are the learned scales and zero points of each quantized ``Linear``, which
  ``quantize_onnx(..., quant_format="matmulinteger", qparams=...)`` writes into the MatMulInteger graph, so the
  INT8 graph computes what QAT trained (the product of the int8 input and weight is exact in int32).

The generated recipe quantizes the ``Linear`` layers that ``keep_float`` does not match (the same selection as
post-training quantization, minus products of two activations and convolutions, which are not modules of this
kind) and ignores every other leaf module type. Observers only see training windows: they are switched off
while the model is in eval mode (the validation passes of the training loop).

SparseML 1.8 with torch 2.13 needs one fix, applied by ``import_sparseml_qat``: torch's ``QConfig`` (a named
tuple) declares ``__slots__ = ()``, so SparseML's ``qconfig.quantization_scheme = scheme`` raises
``AttributeError``; SparseML's qconfigs are made as a subclass without slots instead. SparseML is imported only
here, at use time, and ``torch.compile`` is put back after the import (SparseML replaces it).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from plugins.pruners.sparseml_recipe import manager_from_recipe, recipe_text
from sparse_runtime.int8.graph import module_keeps_float
from sparse_runtime.int8.qparams import LinearQParams
from tsbench_core.errors import CellError
from tsbench_core.telemetry import disable_neural_magic_analytics

TrainFn = Callable[..., dict[str, Any]]


def import_sparseml_qat() -> tuple[Any, Any]:
    """SparseML's recipe manager and logger manager, with the QConfig fix; ``torch.compile`` left untouched."""
    disable_neural_magic_analytics()
    before = torch.compile
    import sparseml.pytorch as sparseml_pytorch
    import sparseml.pytorch.sparsification.quantization.quantization_scheme as schemes
    from sparseml.pytorch.optim import ScheduledModifierManager
    from sparseml.pytorch.utils.logger import LoggerManager

    torch.compile = getattr(sparseml_pytorch, "torch_compile_func", before)
    if not getattr(schemes, "_tsbench_slotless_qconfig", False):
        original = schemes._get_qconfig

        def slotless_qconfig(activation_args: Any, weight_args: Any) -> Any:
            return _SchemeQConfig(*original(activation_args, weight_args))

        schemes._get_qconfig = slotless_qconfig
        schemes._tsbench_slotless_qconfig = True
    sparseml_logger = logging.getLogger("sparseml.pytorch.utils.logger")
    if not any(isinstance(h, logging.FileHandler) for h in sparseml_logger.handlers):
        sparseml_logger.addHandler(logging.FileHandler(os.devnull, delay=True))
    return ScheduledModifierManager, LoggerManager


class _SchemeQConfig(torch.ao.quantization.QConfig):
    """A ``QConfig`` that accepts attributes (SparseML attaches its scheme to it); still a ``QConfig``."""


def quantized_linear_names(model: nn.Module, keep_float: list[str]) -> list[str]:
    """Names of the ``Linear`` modules QAT quantizes: those ``keep_float`` does not match."""
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and module_keeps_float(keep_float, name) is None]


def build_qat_recipe(model: nn.Module, keep_float: list[str], *, epochs: int, symmetric_activations: bool) -> str:
    """A SparseML recipe: QAT of the selected ``Linear`` layers, zeros held, for ``epochs`` epochs."""
    selected = set(quantized_linear_names(model, keep_float))
    if not selected:
        raise CellError(f"sparseml-qat: every Linear layer is kept float by keep_float {keep_float}")
    leaf_types = {type(m).__name__ for m in model.modules() if not any(True for _ in m.children())
                  and not isinstance(m, nn.Linear)}
    kept = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in selected]
    ignore = "\n".join(f"      - {item}" for item in sorted(leaf_types) + sorted(kept))
    freeze = f"    disable_quantization_observer_epoch: {float(epochs - 1)}\n" if epochs > 1 else ""
    return (
        "modifiers:\n"
        "  - !EpochRangeModifier\n"
        "    start_epoch: 0.0\n"
        f"    end_epoch: {float(epochs)}\n"
        "  - !ConstantPruningModifier\n"
        "    start_epoch: 0.0\n"
        "    params: __ALL_PRUNABLE__\n"
        "  - !QuantizationModifier\n"
        "    start_epoch: 0.0\n"
        "    scheme:\n"
        "      input_activations:\n"
        "        num_bits: 8\n"
        f"        symmetric: {symmetric_activations}\n"
        "      weights:\n"
        "        num_bits: 8\n"
        "        symmetric: True\n"
        "      output_activations: null\n"
        + (f"    ignore:\n{ignore}\n" if ignore else "")
        + "    strict: False\n"
        + freeze
    )


@dataclass
class QatResult:
    """The fine-tuned float model, the learned INT8 parameters and how they were obtained."""

    model: nn.Module
    qparams: list[LinearQParams]
    qat_model: nn.Module | None = None  # the fake-quantized model as trained (for checks; not stored)
    info: dict[str, Any] = field(default_factory=dict)


def qparams_as_json(qparams: list[LinearQParams]) -> list[dict[str, Any]]:
    """The learned parameters without the weights (the stored fine-tuned model holds those)."""
    return [{"name": q.name, "act_scale": q.act_scale, "act_zero_point": q.act_zero_point,
             "weight_scale": (q.weight_scale.tolist() if isinstance(q.weight_scale, np.ndarray)
                              else float(q.weight_scale))} for q in qparams]


def qparams_from_json(items: list[dict[str, Any]], model: nn.Module) -> list[LinearQParams]:
    """``qparams_as_json`` read back, each weight taken from ``model`` (the fine-tuned float model)."""
    out = []
    for item in items:
        weight = model.get_submodule(item["name"]).weight.detach().cpu().numpy().astype(np.float32).T.copy()
        scale = item["weight_scale"]
        out.append(LinearQParams(name=item["name"], weight=weight, act_scale=float(item["act_scale"]),
                                 act_zero_point=int(item["act_zero_point"]),
                                 weight_scale=np.asarray(scale, dtype=np.float64) if isinstance(scale, list)
                                 else float(scale)))
    return out


def _pause_observers_in_eval(model: nn.Module) -> list[Any]:
    """Hooks that switch every observer off while its FakeQuantize is in eval mode (validation passes)."""
    handles = []

    def before(module: nn.Module, _: Any) -> None:
        module._tsbench_observer = int(module.observer_enabled[0])
        if not module.training:
            module.observer_enabled[0] = 0

    def after(module: nn.Module, _: Any, __: Any) -> None:
        module.observer_enabled[0] = module._tsbench_observer

    for module in model.modules():
        if isinstance(module, torch.ao.quantization.FakeQuantizeBase) and hasattr(module, "observer_enabled"):
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    return handles


def _levels(fake_quant: Any) -> tuple[int, int]:
    return int(fake_quant.quant_min), int(fake_quant.quant_max)


def learned_qparams(qat_model: nn.Module) -> list[LinearQParams]:
    """The scales and zero points of every fake-quantized ``Linear`` (input and weight), in the ONNX layout."""
    out = []
    for name, wrapper in qat_model.named_modules():
        if not isinstance(wrapper, torch.ao.quantization.QuantWrapper) or not isinstance(wrapper.module, nn.Linear):
            continue
        act = getattr(wrapper.quant, "activation_post_process", None)
        weight_fq = getattr(wrapper.module, "weight_fake_quant", None)
        if act is None or weight_fq is None:
            raise CellError(f"sparseml-qat: {name} has no input or weight fake-quantization")
        low, high = _levels(act)
        if high - low != 255 or act.qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise CellError(f"sparseml-qat: {name}: input quantization {act.qscheme} over [{low}, {high}] is not "
                            f"8-bit per-tensor (the INT8 writer needs that)")
        if not np.isfinite(float(act.activation_post_process.min_val)):
            raise CellError(f"sparseml-qat: {name}: the input observer saw no data")
        w_low, w_high = _levels(weight_fq)
        zero_points = weight_fq.zero_point.detach().cpu().numpy()
        if w_low < -128 or w_high > 127 or np.any(zero_points != 0):
            raise CellError(f"sparseml-qat: {name}: weights must be int8 symmetric (zero point 0)")
        scale = weight_fq.scale.detach().cpu().numpy().astype(np.float64).reshape(-1)
        out.append(LinearQParams(
            name=name,
            weight=wrapper.module.weight.detach().cpu().numpy().astype(np.float32).T.copy(),
            weight_scale=float(scale[0]) if scale.size == 1 else scale,
            act_scale=float(act.scale.detach().cpu().reshape(-1)[0]),
            act_zero_point=int(act.zero_point.detach().cpu().reshape(-1)[0]) - low,  # to the uint8 domain
        ))
    if not out:
        raise CellError("sparseml-qat: the recipe quantized no Linear layer")
    return out


def float_weights(original: nn.Module, qat_model: nn.Module) -> nn.Module:
    """A copy of ``original`` holding the fine-tuned float weights of ``qat_model`` (where QAT wrapped a layer,
    its tensors sit one level down, under ``.module``)."""
    trained = qat_model.state_dict()
    state = {}
    for key in original.state_dict():
        prefix, _, leaf = key.rpartition(".")
        candidates = (key, f"{prefix}.module.{leaf}" if prefix else f"module.{leaf}")
        found = next((c for c in candidates if c in trained), None)
        if found is None:
            raise CellError(f"sparseml-qat: no fine-tuned tensor for {key}")
        state[key] = trained[found].detach().clone()
    model = copy.deepcopy(original)
    model.load_state_dict(state)
    return model.eval()


def _zero_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: (p.detach() == 0) for name, p in model.named_parameters() if p.dim() >= 2 and bool((p == 0).any())}


def qat_finetune(model: nn.Module, train: TrainFn, *, keep_float: list[str], epochs: int, lr: float,
                 max_train_batches: int | None = None, symmetric_activations: bool = False,
                 recipe: str | None = None) -> QatResult:
    """Fine-tune a copy of ``model`` with SparseML QAT (zeros held), and return what the INT8 writer needs.

    ``train(model, epochs=, lr=, masks=, max_train_batches=, wrap_optimizer=)`` is the cell's training loop.
    ``recipe`` is a SparseML recipe file used instead of the generated one.
    """
    try:
        manager_cls, logger_cls = import_sparseml_qat()
    except Exception as exc:
        raise CellError(f"sparseml-qat needs sparseml, which cannot be imported: {type(exc).__name__}: {exc}") from exc
    original = copy.deepcopy(model).cpu().eval()
    zeros_before = _zero_masks(original)
    work = copy.deepcopy(original)
    selected = quantized_linear_names(work, keep_float)
    text = recipe_text(recipe, lambda: build_qat_recipe(work, keep_float, epochs=epochs,
                                                        symmetric_activations=symmetric_activations))
    manager = manager_from_recipe(manager_cls, text, "QAT recipe")
    hooks: list[Any] = []

    def wrap(module: nn.Module, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
        wrapped = manager.modify(module, optimizer, steps_per_epoch=max(int(steps_per_epoch), 1),
                                 loggers=logger_cls(log_python=False))
        hooks.extend(_pause_observers_in_eval(module))
        return wrapped

    try:
        outcome = train(work, epochs=epochs, lr=lr, masks=None, max_train_batches=max_train_batches,
                        wrap_optimizer=wrap)
    except CellError:
        raise
    except Exception as exc:
        raise CellError(f"sparseml-qat fine-tuning failed: {type(exc).__name__}: {exc}") from exc
    finally:
        manager.finalize(work)
        for handle in hooks:
            handle.remove()
    work = work.cpu().eval()
    work.apply(torch.ao.quantization.disable_observer)  # the learned parameters are final
    wrapped = sorted(n for n, m in work.named_modules() if isinstance(m, torch.ao.quantization.QuantWrapper))
    if recipe is None and wrapped != sorted(selected):
        raise CellError(f"sparseml-qat quantized {wrapped}, expected {sorted(selected)}")
    qparams = learned_qparams(work)
    fine_tuned = float_weights(original, work)
    params = dict(fine_tuned.named_parameters())
    moved = [name for name, mask in zeros_before.items() if bool(params[name].detach()[mask].ne(0).any())]
    if moved:
        raise CellError(f"sparseml-qat: pruned zeros moved during fine-tuning in {moved}")
    info = {"method": "sparseml-qat", "epochs": epochs, "lr": lr, "recipe": recipe or "generated",
            "recipe_text": text, "quantized_linears": [q.name for q in qparams], "training": outcome,
            "zeros_held": sum(int(m.sum()) for m in zeros_before.values())}
    return QatResult(model=fine_tuned, qparams=qparams, qat_model=work, info=info)
