"""Pad feed-forward hidden widths that DeepSparse 1.8's compiler aborts on: an exact deploy-form transform.

Why it exists: DeepSparse 1.8 (end-of-life, no fix coming) *aborts the process* (exit code 1, ``Assertion at
src/lib/jit/function/fused_ops.cpp:250``) when it compiles a feed-forward block ``Linear(d -> h) - GELU - Linear(h
-> d)`` on token sequences ``[B, L, d]`` whose hidden width ``h`` lies just above a multiple of 64. Measured with
``benchmarks/deepsparse_width_probe.py`` (286 compiles, ``benchmarks/results/deepsparse_width_probe/``): at one
core, d_model 512, L = 96, every aborting width has ``h mod 64`` in 1..16 and ``h >= 705`` (961-976 and 1025-1040
abort, 960 and 977-1024 compile; in-band widths up to 657 compile); the same at d_model 256, L = 144, batch 1, 4 and
32. With two cores fewer widths abort (1030 compiles; 1552 and 2060 abort), all inside the same band — but small
widths abort there too: the structured-50 % Crossformer's decoder MLPs of width 262 and 266 aborted its 2-core
compile (2026-12-01; padded, it compiles). Erf-GELU only: tanh-GELU and ReLU compile at the aborting widths, and so
do 2-D inputs ``[B, d]``. All 47 multiples of 32 scanned (64..2144) compile. Dense models have ``h = 2048``;
structured pruning leaves each FFN at whatever width the global channel ranking gives (the 50 % Transformer has 1034
and 1032), so the pruned Transformer, Informer, FEDformer and Crossformer aborted.

That band was measured on one CPU (AVX-512 with VNNI); on an AVX2-only Zen 3 width 1030 compiles (issue #16). So
the band is only a hint: which widths abort is a probe result for this CPU. ``pad_for_deepsparse`` takes a
``decide`` callable that says, for each FFN pair whose width is not a multiple of ``SAFE_MULTIPLE``, whether it
aborts here — the DeepSparse runtime compiles that FFN alone in a subprocess, once per CPU fingerprint, library
version, shape and core count, and caches the verdict (``tsbench_core/hardware_rules.py``). Without ``decide``
(or when a probe gives no verdict) the static band below is used.

What it does: every FFN judged to abort (by default: an erf-GELU FFN whose width is in the band and at least
``MIN_PADDED_WIDTH`` — 129, a margin below the smallest aborting width seen, 262 at two cores; iTransformer's 75
compiled at one and two cores) is padded up to the next multiple of ``SAFE_MULTIPLE`` (32): the first projection
gets zero output rows (and zero bias entries), the second zero input columns. The padded channels carry
``act(0 + 0)`` — 0 for GELU and ReLU, and any finite value would do — into zero weights, so the output is the
unpadded model's (up to float summation order). Applied by the DeepSparse runtime to a copy of the model before the
ONNX export; the model, its checkpoint and its accounting keep the pruned widths. The runtime's subprocess compile
probe of the whole graph remains the safety net.

How FFN pairs are found, for any model: two ``nn.Linear`` (or kernel-1 ``nn.Conv1d``) modules A and B with ``A``'s
output width equal to ``B``'s input width, where, on the example inputs, every input of B equals an elementwise
activation (ReLU, erf-GELU or tanh-GELU) of the matching output of A. After padding the whole model is run again and
compared with the unpadded copy; a mismatch drops the padding (recorded, never silent).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparse_runtime.common import set_deploy_form

ABORT_PERIOD = 64  # widths h with h % ABORT_PERIOD in ABORT_BAND abort the compile (GELU FFNs) ...
ABORT_BAND = range(1, 17)
MIN_PADDED_WIDTH = 129  # ... from 705 on at one core, from 262 or lower at two (measured); padded from 129 on
SAFE_MULTIPLE = 32  # every multiple of 32 compiled in the scan; padding goes to the next one
PADDED_ACTIVATIONS = frozenset({"gelu"})  # erf-GELU only: tanh-GELU and ReLU compiled at the aborting widths
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu,
}
EXACT_ATOL = 1e-5  # padded vs unpadded output (float summation order only)


@dataclass(frozen=True)
class FeedForwardPair:
    """Two projections around an elementwise activation: ``second(act(first(x)))``."""

    first: str  # qualified module names
    second: str
    width: int  # hidden width (first's output channels = second's input channels)
    activation: str
    input_shape: tuple[int, ...] = ()  # first's input as the FFN sees it: [..., tokens, channels]


@dataclass(frozen=True)
class WidthVerdict:
    """Whether an FFN pair aborts DeepSparse's compile on this CPU, and where that was learned."""

    aborts: bool
    source: str  # "static hint", "probe" or "cache"
    detail: str = ""


Decide = Callable[[FeedForwardPair], WidthVerdict]


def aborts(width: int, activation: str) -> bool:
    """Whether DeepSparse 1.8 aborted compiling an FFN of this hidden width and activation on the CPU the static
    band was measured on (a hint for other CPUs)."""
    return activation in PADDED_ACTIVATIONS and width >= MIN_PADDED_WIDTH and width % ABORT_PERIOD in ABORT_BAND


def static_hint(pair: FeedForwardPair) -> WidthVerdict:
    """The static band's verdict for a pair."""
    return WidthVerdict(aborts(pair.width, pair.activation), "static hint")


def needs_verdict(pair: FeedForwardPair) -> bool:
    """Whether padding could apply: a width that is not already a multiple of ``SAFE_MULTIPLE``."""
    return safe_width(pair.width) > pair.width


def safe_width(width: int) -> int:
    """The width to pad to: the next multiple of ``SAFE_MULTIPLE`` (``width`` itself if it is one)."""
    return -(-width // SAFE_MULTIPLE) * SAFE_MULTIPLE


def _projection_width(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) channels of a Linear or a pointwise Conv1d; None for anything else."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if (isinstance(module, nn.Conv1d) and module.kernel_size == (1,) and module.stride == (1,)
            and module.dilation == (1,) and module.groups == 1 and module.padding in ((0,), "valid")):
        return module.in_channels, module.out_channels
    return None


def _activation_of(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> str | None:
    """The activation that maps every output of A to the matching input of B, or None."""
    if len(outputs) != len(inputs) or not outputs:
        return None
    if any(a.shape != b.shape for a, b in zip(outputs, inputs, strict=True)):
        return None
    head_a, head_b = outputs[0].flatten()[:256], inputs[0].flatten()[:256]  # cheap rejection first
    for name, fn in ACTIVATIONS.items():
        if not torch.allclose(fn(head_a), head_b, rtol=1e-5, atol=1e-6):
            continue
        if all(torch.allclose(fn(a), b, rtol=1e-5, atol=1e-6) for a, b in zip(outputs, inputs, strict=True)):
            return name
    return None


def _run(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    with torch.no_grad():
        out = model(*example_inputs)
    return out[0] if isinstance(out, tuple | list) else out


def find_feed_forward_pairs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[FeedForwardPair]:
    """The FFN pairs of ``model`` (eval mode expected), found by one forward pass on ``example_inputs``."""
    return _find_pairs(model, example_inputs)[0]


def _find_pairs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]
                ) -> tuple[list[FeedForwardPair], torch.Tensor]:
    projections = {name: m for name, m in model.named_modules() if _projection_width(m) is not None}
    outputs: dict[str, list[torch.Tensor]] = defaultdict(list)
    inputs: dict[str, list[torch.Tensor]] = defaultdict(list)

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
                inputs[name].append(args[0].detach().clone())
                outputs[name].append(output.detach().clone())
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in projections.items()]
    try:
        output = _run(model, example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    pairs = []
    for first, a in projections.items():
        width = _projection_width(a)[1]  # type: ignore[index]
        for second, b in projections.items():
            if second == first or _projection_width(b)[0] != width or type(a) is not type(b):  # type: ignore[index]
                continue
            activation = _activation_of(outputs.get(first, []), inputs.get(second, []))
            if activation is not None:
                shape = tuple(inputs[first][0].shape)
                if isinstance(a, nn.Conv1d):  # [B, C, L] -> [B, L, C], as the Linear form sees it
                    shape = (*shape[:-2], shape[-1], shape[-2])
                pairs.append(FeedForwardPair(first, second, width, activation, shape))
    return pairs, output


def _pad_first(module: nn.Module, extra: int) -> None:
    weight = module.weight.detach()
    zeros = weight.new_zeros((extra, *weight.shape[1:]))
    module.weight = nn.Parameter(torch.cat([weight, zeros], 0), requires_grad=False)
    if module.bias is not None:
        module.bias = nn.Parameter(torch.cat([module.bias.detach(), module.bias.new_zeros(extra)]),
                                   requires_grad=False)
    if isinstance(module, nn.Linear):
        module.out_features += extra
    else:
        module.out_channels += extra


def _pad_second(module: nn.Module, extra: int) -> None:
    weight = module.weight.detach()
    zeros = weight.new_zeros((weight.shape[0], extra, *weight.shape[2:]))
    module.weight = nn.Parameter(torch.cat([weight, zeros], 1), requires_grad=False)
    if isinstance(module, nn.Linear):
        module.in_features += extra
    else:
        module.in_channels += extra


def pad_feed_forward(model: nn.Module, pairs: list[FeedForwardPair], widths: dict[str, int]) -> nn.Module:
    """Pad, in place, each pair whose ``first`` is in ``widths`` to that width; returns ``model``.

    A first projection feeding several second ones is padded once; every second one gets the zero columns.
    """
    modules = dict(model.named_modules())
    seconds: dict[str, set[str]] = defaultdict(set)
    for pair in pairs:
        if pair.first in widths:
            seconds[pair.first].add(pair.second)
    for first, target in widths.items():
        extra = target - _projection_width(modules[first])[1]  # type: ignore[index]
        if extra <= 0:
            continue
        _pad_first(modules[first], extra)
        for second in sorted(seconds[first]):
            _pad_second(modules[second], extra)
    return model


def pad_for_deepsparse(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                       decide: Decide | None = None) -> tuple[nn.Module, dict]:
    """A deploy-form, eval-mode copy of ``model`` with the aborting FFN widths padded, and what was done.

    ``decide`` judges each pair whose width is not a multiple of ``SAFE_MULTIPLE`` (default: ``static_hint``).
    Returns ``(copy, info)``; ``info["padded_widths"]`` maps each padded first projection to ``[from, to]``;
    ``info["ffn_width_verdicts"]`` each judged pair to its verdict and source; ``info["padding_rejected"]`` says
    why padding was dropped (output mismatch, shape error), if it was. ``model`` itself is returned (not copied)
    when nothing needs padding.
    """
    clone = copy.deepcopy(model).eval()
    set_deploy_form(clone, True)  # find the pairs in the form that is exported
    pairs, reference = _find_pairs(clone, example_inputs)
    seconds_of: dict[str, set[str]] = defaultdict(set)
    for pair in pairs:
        seconds_of[pair.second].add(pair.first)
    judge = decide or static_hint
    verdicts = {p.first: judge(p) for p in pairs if needs_verdict(p) and len(seconds_of[p.second]) == 1}
    targets = {p.first: safe_width(p.width) for p in pairs if p.first in verdicts and verdicts[p.first].aborts}
    info: dict[str, Any] = {"ffn_pairs": len(pairs), "padded_widths": {}, "ffn_width_verdicts": {
        name: {"aborts": v.aborts, "source": v.source, **({"detail": v.detail} if v.detail else {})}
        for name, v in sorted(verdicts.items())}}
    if not targets:
        return model, info
    padded = pad_feed_forward(clone, pairs, targets)
    try:
        error = float((_run(padded, example_inputs) - reference).abs().max())
    except Exception as exc:  # a first projection feeding something else too: shapes no longer fit
        info["padding_rejected"] = f"{type(exc).__name__}: {exc}"
        return model, info
    if not error <= EXACT_ATOL:
        info["padding_rejected"] = f"padded output differs by {error:.3g} (> {EXACT_ATOL:g})"
        return model, info
    widths = {p.first: p.width for p in pairs}
    info["padded_widths"] = {name: [widths[name], target] for name, target in sorted(targets.items())}
    info["padding_max_abs_err"] = error
    return padded, info
