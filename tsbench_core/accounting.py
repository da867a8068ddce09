"""Size and compute accounting: parameter counts, sparsity, and one MAC counter for every model.

``count_params`` counts parameters and zeros. ``count_macs`` runs one forward pass under a
``TorchDispatchMode`` and counts multiply-accumulates of every contraction the model executes at the ATen
level (so it sees what ``nn.Linear``, ``nn.Conv1d``, ``einsum``, ``matmul`` and FFTs really run, whatever
module they sit in). The rules are written down in ``docs/metrics.md``:

* ``mm``/``addmm``/``bmm``/``baddbmm``/``mv``/``dot``/``matmul``: product of the contracted shapes
  (``m*k*n`` per matrix), ×4 for complex operands.
* ``convolution``: ``output elements × (C_in / groups) × kernel elements``.
* scaled-dot-product attention kernels: ``B*H*L*S*(E + D)``.
* ``_fft_r2c`` / ``_fft_c2r``: ``N log2 N`` per transformed signal of real length ``N``; ``_fft_c2c``:
  ``2 N log2 N`` (radix-2 Cooley-Tukey, ``N/2 log2 N`` complex multiplies of 4 real MACs, halved for
  real signals).
* embeddings, element-wise ops, reductions, softmax, normalisation: 0.

An operand that is a parameter, or was computed from parameters only (views, copies, transposes), makes the
op a *weight op*: its effective MACs are the dense MACs × the fraction of nonzeros of that operand.
Every other op (attention products, FFTs, DFT matrix products) counts the same in both totals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tsbench_core.protocols import DeployForm

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

aten = torch.ops.aten


def prunable_parameter_names(model: nn.Module) -> list[str]:
    """Names of the weights of Linear and Conv layers: what "prunable" means unless told otherwise."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def count_params(model: nn.Module, prunable: Iterable[str] | None = None) -> dict[str, float]:
    """Parameter totals and sparsity.

    ``params_*`` cover every parameter (shared ones once); ``prunable_*`` cover the parameters named in
    ``prunable`` (default: ``prunable_parameter_names(model)``). Sparsities are fractions of zeros.
    """
    named = dict(model.named_parameters())  # deduplicates shared parameters
    prunable_names = list(prunable_parameter_names(model) if prunable is None else prunable)
    missing = [n for n in prunable_names if n not in named]
    if missing:
        raise KeyError(f"not parameters of {type(model).__name__}: {missing[:5]}")

    def totals(params: Iterable[torch.Tensor]) -> tuple[int, int]:
        total = nonzero = 0
        for p in params:
            total += p.numel()
            nonzero += int(torch.count_nonzero(p.detach()))
        return total, nonzero

    params_total, params_nonzero = totals(named.values())
    prunable_total, prunable_nonzero = totals(named[n] for n in dict.fromkeys(prunable_names))
    return {
        "params_total": params_total,
        "params_nonzero": params_nonzero,
        "prunable_total": prunable_total,
        "prunable_nonzero": prunable_nonzero,
        "sparsity_prunable": 1.0 - prunable_nonzero / prunable_total if prunable_total else 0.0,
        "sparsity_all": 1.0 - params_nonzero / params_total if params_total else 0.0,
    }


def _complex_factor(*tensors: torch.Tensor) -> int:
    return 4 if any(t.is_complex() for t in tensors) else 1


def _fft_macs(length: int, signals: int, complex_input: bool) -> float:
    if length <= 1:
        return 0.0
    per_signal = length * math.log2(length) * (2 if complex_input else 1)
    return per_signal * signals


def _norm_dims(dims: Sequence[int], ndim: int) -> list[int]:
    return [d % ndim for d in dims]


def _op_macs(func: Any, args: tuple, out: Any) -> tuple[float, tuple[torch.Tensor, ...]]:
    """Dense MACs of one ATen call and the operands whose sparsity may reduce them (empty: not counted)."""
    packet = func.overloadpacket
    if packet in (aten.mm, aten.bmm, aten.matmul):
        a, b = args[0], args[1]
        return float(out.numel() * a.shape[-1] * _complex_factor(a, b)), (a, b)
    if packet in (aten.addmm, aten.baddbmm, aten.addbmm):
        a, b = args[1], args[2]
        batch = a.shape[0] if packet is aten.addbmm else 1
        return float(out.numel() * a.shape[-1] * batch * _complex_factor(a, b)), (a, b)
    if packet in (aten.mv, aten.dot, aten.vdot):
        a, b = args[0], args[1]
        return float(a.numel() * _complex_factor(a, b)), (a, b)
    if packet in (aten.convolution, aten._convolution, aten.conv1d, aten.conv2d):
        x, w = args[0], args[1]
        full = packet in (aten.convolution, aten._convolution)
        groups = args[8] if full else (args[6] if len(args) > 6 else 1)
        kernel = math.prod(w.shape[2:])
        if full and args[6]:  # transposed: every input element meets C_out/groups kernels
            return float(x.numel() * w.shape[1] * kernel * _complex_factor(x, w)), (w, x)
        return float(out.numel() * (x.shape[1] // groups) * kernel * _complex_factor(x, w)), (w, x)
    if packet in (
        aten._scaled_dot_product_flash_attention_for_cpu,
        aten._scaled_dot_product_efficient_attention,
        aten._scaled_dot_product_flash_attention,
    ):
        q, k, v = args[0], args[1], args[2]
        b_h = math.prod(q.shape[:-2])
        return float(b_h * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])), (q, k, v)
    if packet is aten._fft_r2c:
        x, dims = args[0], _norm_dims(args[1], args[0].ndim)
        macs = 0.0
        for d in dims:  # separable: each transformed dim costs its own 1-D FFTs
            macs += _fft_macs(x.shape[d], x.numel() // x.shape[d], complex_input=False)
        return macs, ()
    if packet is aten._fft_c2r:
        x, dims, last = args[0], _norm_dims(args[1], args[0].ndim), int(args[3])
        signals = x.numel() // x.shape[dims[-1]]
        macs = _fft_macs(last, signals, complex_input=False)
        for d in dims[:-1]:
            macs += _fft_macs(x.shape[d], x.numel() // x.shape[d], complex_input=True)
        return macs, ()
    if packet is aten._fft_c2c:
        x, dims = args[0], _norm_dims(args[1], args[0].ndim)
        return sum(_fft_macs(x.shape[d], x.numel() // x.shape[d], complex_input=True) for d in dims), ()
    return 0.0, ()


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return ptr or None  # empty storages all share address 0


class _MacCounter(TorchDispatchMode):
    """Counts MACs of every ATen call, tracking which tensors are derived from parameters only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.weight_storages: set[int] = set()
        self._keep_alive: list[torch.Tensor] = []  # derived weights stay allocated: no address reuse
        for p in model.parameters():
            key = _storage_key(p)
            if key is not None:
                self.weight_storages.add(key)
        self.dense = 0.0
        self.effective = 0.0
        self.weight_dense = 0.0
        self.by_op: dict[str, float] = {}

    def _is_weight(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and _storage_key(t) in self.weight_storages

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        macs, operands = _op_macs(func, args, out)
        if macs:
            weights = [t for t in operands if self._is_weight(t)]
            density = 1.0
            if weights:
                w = weights[0]
                density = float(torch.count_nonzero(w)) / w.numel() if w.numel() else 1.0
                self.weight_dense += macs
            self.dense += macs
            self.effective += macs * density
            key = str(func.overloadpacket.__name__)
            self.by_op[key] = self.by_op.get(key, 0.0) + macs
        else:
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if inputs and all(self._is_weight(t) for t in inputs):
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        key = _storage_key(t)
                        if key is not None and key not in self.weight_storages:
                            self.weight_storages.add(key)
                            self._keep_alive.append(t)
        return out


def _set_deploy_form(model: nn.Module, enabled: bool) -> None:
    for module in model.modules():
        if isinstance(module, DeployForm):
            module.set_deploy_form(enabled)


def count_macs(model: nn.Module, example_inputs: Sequence[torch.Tensor], *, deploy_form: bool = False,
               per_sample: bool = False) -> dict[str, Any]:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (eval mode, no grad).

    Returns ``macs_dense`` (what a dense kernel executes), ``macs_effective`` (weight ops scaled by their
    weights' density), ``macs_weight_dense`` (the part from ops with a weight operand) and ``by_op``.
    ``deploy_form`` counts the exportable form (DFT as matmuls...) of modules that have one.
    ``per_sample`` divides by the batch size (first dimension of the first input).
    """
    was_training = model.training
    model.eval()
    if deploy_form:
        _set_deploy_form(model, True)
    try:
        counter = _MacCounter(model)
        with torch.no_grad(), counter:
            model(*example_inputs)
    finally:
        if deploy_form:
            _set_deploy_form(model, False)
        model.train(was_training)
    scale = 1.0 / example_inputs[0].shape[0] if per_sample else 1.0
    return {
        "macs_dense": int(round(counter.dense * scale)),
        "macs_effective": int(round(counter.effective * scale)),
        "macs_weight_dense": int(round(counter.weight_dense * scale)),
        "by_op": {k: int(round(v * scale)) for k, v in sorted(counter.by_op.items())},
    }
