"""Structured pruning with Torch-Pruning's DepGraph: whole channels of coupled layers are removed, so the
pruned model is physically smaller.

What is pruned: the *inner widths* — feed-forward/MLP hidden channels and attention widths (head dimensions,
or whole heads) — i.e. every DepGraph channel group whose members are all Linear/Conv layers. Groups that
reach a normalisation layer, an embedding, a free parameter or a buffer (the model width ``d_model`` carried
by the residual stream) and groups containing an output projection are left alone. The target is the
parameter reduction of the *prunable part* (all parameters of the layers in those groups); a bisection on
Torch-Pruning's channel ratio reaches it within ``tolerance`` or the result reports what it reached.

Attention is head-aware: query/key/value projections are declared with their head counts, so head-dimension
pruning removes the same dimensions from every head (and whole-head pruning removes the same heads from q, k
and v); the attention modules' ``n_heads`` and softmax ``scale`` are updated so the model computes with its
new widths (the scale keeps the dense model's ``1/sqrt(head_dim)``). FEDformer's Fourier blocks, whose
spectral weights DepGraph cannot prune, lose input head dimensions through ``fourier_groups``; their scores
join the global ranking.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from plugins.pruners import fourier_groups as fourier
from plugins.pruners.selection import DEFAULT_OUTPUT_PATTERNS, _matches, check_target
from tsbench_core.errors import CellError, UserError
from tsbench_core.protocols import Availability, PluginParams, PruneContext, PruneResult

# Module attributes that depend on widths: recorded in ``PruneResult.structure`` and set again by ``restore``.
WIDTH_ATTRIBUTES = ("in_features", "out_features", "in_channels", "out_channels", "normalized_shape",
                    "num_features", "n_heads", "scale", "groups")


class StructuredParams(PluginParams):
    importance: Literal["magnitude", "taylor"] = Field(
        default="magnitude", description="magnitude: L2 norm of each channel group's weights; taylor: "
        "|weight x gradient| on calibration batches of the training split.")
    scope: Literal["global", "uniform"] = Field(
        default="global", description="global: channels ranked across all groups; uniform: every group loses "
        "the same fraction.")
    attention: Literal["head_dims", "heads"] = Field(
        default="head_dims", description="head_dims: remove the same dimensions from every head; heads: "
        "remove whole heads.")
    iterative_steps: int = Field(default=1, ge=1, le=32, description="Prune in this many steps, re-scoring "
                                 "the channels after each.")
    round_to: int | None = Field(default=None, ge=1, description="Keep channel counts multiples of this "
                                 "(e.g. 8 for SIMD-friendly widths).")
    max_layer_ratio: float = Field(default=0.9, gt=0.0, lt=1.0, description="Largest fraction of one "
                                   "group's channels that may be removed (1 would remove every channel).")
    exclude: list[str] | None = Field(
        default=None, description="Glob patterns on module names whose output channels are never pruned; "
        "null means the output projections.")
    tolerance: float = Field(default=0.02, gt=0.0, lt=0.5, description="Accepted gap between the reached "
                             "and the target parameter reduction.")
    calibration_batches: int = Field(default=2, ge=1, le=64, description="Batches for Taylor importance.")


def _tp() -> Any:
    import torch_pruning

    return torch_pruning


def _attr_snapshot(model: nn.Module) -> dict[str, dict[str, Any]]:
    snap: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attrs = {}
        for attr in WIDTH_ATTRIBUTES:
            value = getattr(module, attr, None) if attr in vars(module) else None
            if isinstance(value, bool) or not isinstance(value, int | float | tuple) or value is None:
                continue
            attrs[attr] = list(value) if isinstance(value, tuple) else value
        if attrs:
            snap[name] = attrs
    return snap


def _module_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _attention_layers(model: nn.Module) -> list[tuple[str, nn.Module, list[nn.Linear]]]:
    """Modules with ``n_heads`` and q/k/v projections (every attention variant of the built-in models)."""
    found = []
    for name, module in model.named_modules():
        heads = getattr(module, "n_heads", None)
        projections = [getattr(module, p, None) for p in ("query_projection", "key_projection", "value_projection")]
        if isinstance(heads, int) and all(isinstance(p, nn.Linear) for p in projections):
            found.append((name, module, projections))
    return found


def _channel_group(graph: Any, module: nn.Module, tp: Any, limit: int = 5000
                   ) -> tuple[set[nn.Module], set[nn.Module]] | None:
    """Layers coupled with ``module``'s output channels: (producers, consumers), or None when the coupling
    reaches anything but Linear/Conv layers and shape-preserving ops (a norm, an embedding, a free parameter,
    a concatenation...), i.e. the model width.

    A breadth-first walk of the DepGraph nodes: downstream of a producer, a Linear/Conv is a consumer (its
    input channels follow) and an element-wise/reshape node couples all its inputs and its output. This is
    what DepGraph's own group would hold for inner groups, found without expanding the (for some models
    very costly) residual-stream group.
    """
    op = tp.ops.OPTYPE
    passthrough = {op.ELEMENTWISE, op.RESHAPE, op.EXPAND}
    layers = {op.LINEAR, op.CONV}
    start = graph.module2node[module]
    producers, consumers = {start.module}, set()
    stack = [(start, "down")]
    seen = {(start, "down")}
    while stack:
        if len(seen) > limit:
            return None
        node, direction = stack.pop()
        neighbours = node.outputs if direction == "down" else node.inputs
        for nxt in neighbours:
            if nxt.type in layers:
                if direction == "down":
                    consumers.add(nxt.module)
                    continue
                producers.add(nxt.module)
                moves = [(nxt, "down")]
            elif nxt.type in passthrough:
                moves = [(nxt, "down"), (nxt, "up")]
            else:
                return None
            for move in moves:
                if move not in seen:
                    seen.add(move)
                    stack.append(move)
    if any(not isinstance(m, nn.Linear | nn.Conv1d) for m in producers | consumers):
        return None
    return producers, consumers


def _group_scores(probe: Any, names: dict[nn.Module, str]) -> list[tuple[str, torch.Tensor]]:
    """Channel importance of every prunable group (normalised per group, averaged over heads for attention
    groups), keyed by the name of one layer whose output channels the group prunes."""
    scored = []
    for group in probe.DG.get_all_groups(ignored_layers=probe.ignored_layers,
                                         root_module_types=probe.root_module_types):
        is_attention, _ = probe._is_atten_group(group)
        if is_attention:
            group = probe._downstream_node_as_root_if_attention(group)
            if group is None:
                continue
        imp = probe.estimate_importance(group)
        if imp is None:
            continue
        channel_groups = probe._get_channel_groups(group)
        dim_imp = imp.view(channel_groups, -1).mean(0) if channel_groups > 1 else imp
        key = next((dep.target.module for dep, _ in group
                    if probe.DG.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names), None)
        if key is not None:
            scored.append((names[key], dim_imp.detach().float().cpu()))
    return scored


def _capped(ratio: float, cap: float, channels: int) -> float:
    # Torch-Pruning keeps int(channels * (1 - ratio)) channels and skips a group that would keep none
    return max(0.0, min(ratio, cap, (channels - 1) / channels - 1e-6))


def _group_ratios(scored: list[tuple[str, torch.Tensor]], ratio: float, cap: float,
                  ranking: str) -> dict[str, float]:
    """Per-group ratios: the same for every group (``uniform``) or from one ranking of all channel scores
    (``global``); each capped at ``cap`` and so that a group keeps at least one channel (per head)."""
    if ranking == "uniform" or not scored:
        return {name: _capped(ratio, cap, imp.numel()) for name, imp in scored}
    everything = torch.cat([imp for _, imp in scored])
    n_pruned = int(round(ratio * everything.numel()))
    if n_pruned <= 0:
        return {name: 0.0 for name, _ in scored}
    threshold = torch.kthvalue(everything, min(n_pruned, everything.numel())).values
    return {name: _capped(float((imp <= threshold).float().mean()), cap, imp.numel()) for name, imp in scored}


def _next_ratio(trials: list[dict[str, float]], target: float, low: float, high: float) -> float:
    """Secant step through the last two (ratio, reduction) points, or from the origin; bisection when the
    step leaves the bracket. Reduction is nearly linear in the channel ratio, so this takes few trials."""
    r1, y1 = trials[-1]["ratio"], trials[-1]["reduction"]
    r0, y0 = (trials[-2]["ratio"], trials[-2]["reduction"]) if len(trials) > 1 else (0.0, 0.0)
    if y1 != y0:
        guess = r1 + (target - y1) * (r1 - r0) / (y1 - y0)
        if low < guess < high:
            return guess
    return (low + high) / 2


class StructuredPruner:
    name = "structured"
    description = "DepGraph structured channel/head pruning with Torch-Pruning (L2 or Taylor importance)"
    params_model = StructuredParams
    structure = "structured"

    def availability(self) -> Availability:
        try:
            _tp()
        except Exception as exc:  # any import failure makes the plugin unavailable, not the host
            return Availability.no(f"torch_pruning cannot be imported: {type(exc).__name__}: {exc}")
        return Availability.yes()

    # --- groups ------------------------------------------------------------------------------------------

    def _plan(self, model: nn.Module, params: StructuredParams, inputs: tuple) -> tuple[list[nn.Module], set[str]]:
        """Layers to ignore (roots of width groups and output projections) and names of prunable layers."""
        tp = _tp()
        exclude = DEFAULT_OUTPUT_PATTERNS if params.exclude is None else params.exclude
        names = {m: n for n, m in model.named_modules()}
        try:
            self._check_patterns(model, params)
        except UserError as exc:
            raise CellError(str(exc)) from exc
        prunable: set[str] = set()
        for group in self._fourier(model, params):
            prunable.update(group.member_names())
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=inputs, verbose=False)
        ignored: list[nn.Module] = []
        classified: set[nn.Module] = set()
        for module in model.modules():
            if not isinstance(module, nn.Linear | nn.Conv1d) or module in classified:
                continue
            if module not in graph.module2node:  # not on the path to the output (e.g. an unused projection)
                classified.add(module)
                ignored.append(module)
                continue
            channel_group = _channel_group(graph, module, tp)
            if channel_group is None:  # tied to the model width: never a root
                classified.add(module)
                ignored.append(module)
                continue
            producers, consumers = channel_group
            classified.update(producers)
            if any(_matches(names.get(m, ""), exclude) for m in producers):
                ignored.extend(producers)
            else:
                prunable.update(names[m] for m in producers | consumers)
        return ignored, prunable

    @staticmethod
    def _fourier(model: nn.Module, params: StructuredParams) -> list[fourier.FourierGroup]:
        """Fourier-block groups whose projections no ``exclude`` pattern protects."""
        exclude = DEFAULT_OUTPUT_PATTERNS if params.exclude is None else params.exclude
        return [g for g in fourier.fourier_groups(model) if not any(_matches(n, exclude) for n, _ in g.projections)]

    def _scores(self, model: nn.Module, params: StructuredParams, context: PruneContext,
                ignored_names: list[str]) -> list[tuple[str, torch.Tensor]]:
        """Channel scores of the dense model, computed once for the global ranking of every trial."""
        tp = _tp()
        probe_model = copy.deepcopy(model)
        modules = dict(probe_model.named_modules())
        attention = _attention_layers(probe_model)
        num_heads = {p: layer.n_heads for _, layer, projections in attention for p in projections}
        if params.importance == "taylor":
            self._taylor_gradients(probe_model, params, context)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = self._pruner(tp, probe_model, 0.5, params, context, [modules[n] for n in ignored_names],
                                 num_heads, False, self._importance(tp, params))
            scored = _group_scores(probe, {m: n for n, m in modules.items()})
        taylor = params.importance == "taylor"
        return scored + [(g.key, fourier.group_scores(g, taylor)) for g in self._fourier(probe_model, params)]

    @staticmethod
    def _importance(tp: Any, params: StructuredParams) -> Any:
        return (tp.importance.GroupTaylorImportance() if params.importance == "taylor"
                else tp.importance.GroupMagnitudeImportance(p=2))

    def _prune_copy(self, model: nn.Module, ratio: float, params: StructuredParams, context: PruneContext,
                    ignored_names: list[str], scores: list[tuple[str, torch.Tensor]] | None) -> nn.Module:
        tp = _tp()
        pruned = copy.deepcopy(model)
        modules = dict(pruned.named_modules())
        ignored = [modules[n] for n in ignored_names]
        attention = _attention_layers(pruned)
        for _, layer, projections in attention:  # keep the dense softmax temperature
            inner = getattr(layer, "inner_attention", None)
            if inner is not None and hasattr(inner, "scale") and inner.scale is None:
                inner.scale = 1.0 / math.sqrt(projections[0].out_features // layer.n_heads)
        num_heads = {p: layer.n_heads for _, layer, projections in attention for p in projections}
        heads = params.attention == "heads"
        importance = self._importance(tp, params)
        with warnings.catch_warnings():  # unwrapped parameters (routers, positions) sit in ignored groups
            warnings.simplefilter("ignore")
            ratios = None
            fourier_groups = self._fourier(pruned, params)
            fourier_ratios = {g.key: _capped(ratio, params.max_layer_ratio, g.head_dim) for g in fourier_groups}
            if scores is not None:
                ratios = {}
                for n, r in _group_ratios(scores, ratio, params.max_layer_ratio, params.scope).items():
                    if n in fourier_ratios:
                        fourier_ratios[n] = r
                    else:
                        ratios[modules[n]] = r
            pruner = self._pruner(tp, pruned, ratio, params, context, ignored, num_heads, heads, importance,
                                  ratios)
        for _ in range(params.iterative_steps):
            if params.importance == "taylor":
                self._taylor_gradients(pruned, params, context)
            pruner.step()
        for group in fourier_groups:  # untouched by Torch-Pruning; Taylor gradients of the last step still hold
            fourier.prune_group(group, fourier_ratios[group.key], params.round_to, params.importance == "taylor")
        pruned.zero_grad(set_to_none=True)
        for _, layer, projections in attention:
            layer.n_heads = pruner.num_heads.get(projections[0], layer.n_heads)
        return pruned

    @staticmethod
    def _pruner(tp: Any, pruned: nn.Module, ratio: float, params: StructuredParams, context: PruneContext,
                ignored: list[nn.Module], num_heads: dict, heads: bool, importance: Any,
                ratios: dict[nn.Module, float] | None = None) -> Any:
        # global channel ranking is done by _global_ratios (as per-group ratios); Torch-Pruning's own global
        # mode skips every group whose channels would all fall below the threshold, so it stalls at high
        # targets. Whole-head pruning keeps Torch-Pruning's global head ranking.
        global_in_tp = params.scope == "global" and heads
        return tp.pruner.BasePruner(
            pruned, context.example_inputs, importance=importance, global_pruning=global_in_tp,
            pruning_ratio=min(ratio, params.max_layer_ratio), pruning_ratio_dict=ratios,
            max_pruning_ratio=params.max_layer_ratio, iterative_steps=params.iterative_steps,
            ignored_layers=ignored, round_to=params.round_to, num_heads=num_heads, prune_num_heads=heads,
            prune_head_dims=not heads, head_pruning_ratio=ratio if heads else 0.0,
        )

    @staticmethod
    def _taylor_gradients(model: nn.Module, params: StructuredParams, context: PruneContext) -> None:
        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()
        used = 0
        for batch in context.calibration_batches():
            x_enc, x_mark_enc, x_dec, x_mark_dec, y = batch
            out = model(x_enc, x_mark_enc, x_dec, x_mark_dec)
            loss = context.loss_fn(out[:, -y.shape[1]:, -y.shape[2]:], y)
            loss.backward()
            used += 1
            if used >= params.calibration_batches:
                break
        model.train(was_training)
        if used == 0:
            raise CellError("Taylor importance needs calibration batches, but the training split gave none")

    # --- the plugin API ----------------------------------------------------------------------------------

    @staticmethod
    def _check_patterns(model: nn.Module, params: Any) -> None:
        names = [n for n, _ in model.named_modules() if n]
        for pattern in params.exclude or []:
            if not any(_matches(n, [pattern]) for n in names):
                raise UserError(f"structured pruner params field 'exclude': pattern {pattern!r} matches no "
                                f"module of {type(model).__name__} (names look like {', '.join(names[:6])}, ...)")

    def validate_for_model(self, model: nn.Module, params: Any,
                           example_inputs: tuple[torch.Tensor, ...] | None = None) -> None:
        """Raise ``UserError`` when an ``exclude`` pattern matches no module of ``model``, or (given
        ``example_inputs``, which may live on the meta device with the model) when the model has no inner
        channel group to prune. A model with an attention layer or a Fourier block that ``exclude`` leaves
        alone has prunable head dimensions; any other is traced (DepGraph) to find out."""
        self._check_patterns(model, params)
        if example_inputs is None:
            return
        exclude = DEFAULT_OUTPUT_PATTERNS if params.exclude is None else params.exclude
        names = {m: n for n, m in model.named_modules()}
        if self._fourier(model, params) or any(not _matches(names[projections[0]], exclude)
                                               for _, _, projections in _attention_layers(model)):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, prunable = self._plan(model, params, example_inputs)
        if not prunable:
            raise UserError(f"structured pruning finds no inner channel group in {type(model).__name__}: its "
                            f"layers are all tied to the model width or the forecast; use an unstructured pruner")

    def validate_target(self, target_sparsity: float, params: Any) -> None:
        """Raise ``UserError`` for a target outside [0, 1) or one that would empty every layer."""
        check_target(target_sparsity)
        if params.scope == "uniform" and target_sparsity > params.max_layer_ratio:
            raise UserError(
                f"structured pruning with scope 'uniform' at {target_sparsity:g} would remove more than "
                f"max_layer_ratio={params.max_layer_ratio:g} of every layer's channels (at 1, every channel); "
                f"lower the target or raise max_layer_ratio below 1")

    def prune(self, model: nn.Module, target_sparsity: float, params: Any, context: PruneContext) -> PruneResult:
        self.validate_target(target_sparsity, params)
        model.eval()
        before_attrs = _attr_snapshot(model)
        ignored, prunable = self._plan(model, params, context.example_inputs)
        names = {m: n for n, m in model.named_modules()}
        ignored_names = [names[m] for m in ignored]
        if not prunable:
            raise CellError(f"structured pruning found no inner channel group in {context.model_name} (only "
                            f"layers tied to the model width or the output); use an unstructured pruner")
        modules = dict(model.named_modules())
        dense_prunable = sum(_module_params(modules[n]) for n in prunable)
        dense_total = sum(p.numel() for p in model.parameters())

        def reduction(candidate: nn.Module) -> float:
            mods = dict(candidate.named_modules())
            return 1.0 - sum(_module_params(mods[n]) for n in prunable) / dense_prunable

        scores = self._scores(model, params, context, ignored_names) if params.attention == "head_dims" else None
        best: tuple[float, float, nn.Module] | None = None  # (gap, ratio, model)
        # the global ranking caps each group at max_layer_ratio itself; its threshold may rank more channels so
        # that the groups below the cap make up for the capped ones
        ranked = scores is not None and params.scope == "global"
        low, high = 0.0, (0.999 if ranked else params.max_layer_ratio)
        ratio = min(target_sparsity, high)
        trials = []
        for _ in range(10):
            candidate = (self._prune_copy(model, ratio, params, context, ignored_names, scores) if ratio > 0
                         else copy.deepcopy(model))
            reached = reduction(candidate)
            trials.append({"ratio": ratio, "reduction": reached})
            gap = abs(reached - target_sparsity)
            if best is None or gap < best[0]:
                best = (gap, ratio, candidate)
            if gap <= params.tolerance / 2 or target_sparsity == 0:
                break
            low, high = (ratio, high) if reached < target_sparsity else (low, ratio)
            if high - low < 1e-3:
                break
            ratio = _next_ratio(trials, target_sparsity, low, high)
        assert best is not None
        gap, ratio, pruned = best
        reached = reduction(pruned)
        total_after = sum(p.numel() for p in pruned.parameters())
        self._check_runs(pruned, context)
        after_attrs = _attr_snapshot(pruned)
        changed = {n: {a: v for a, v in attrs.items() if before_attrs.get(n, {}).get(a) != v}
                   for n, attrs in after_attrs.items()}
        structure = {
            "attributes": {n: a for n, a in changed.items() if a},
            "shapes": {n: list(t.shape) for n, t in pruned.state_dict().items()
                       if n in model.state_dict() and model.state_dict()[n].shape != t.shape},
        }
        info = {
            "method": self.name, "importance": params.importance, "scope": params.scope,
            "attention": params.attention, "target_reduction": target_sparsity,
            "achieved_reduction": reached, "within_tolerance": gap <= params.tolerance,
            "channel_ratio": ratio, "prunable_params_dense": dense_prunable,
            "prunable_params": round(dense_prunable * (1 - reached)), "params_dense": dense_total,
            "params": total_after, "reduction_all_params": 1.0 - total_after / dense_total,
            "prunable_layers": len(prunable),
            "search": [{k: round(v, 5) for k, v in t.items()} for t in trials],
        }
        if gap > params.tolerance:
            info["note"] = (f"reached a parameter reduction of {reached:.4f}, not {target_sparsity:.4f} within "
                            f"{params.tolerance}: channel granularity (heads, round_to) or max_layer_ratio")
        return PruneResult(model=pruned, masks=None, structure=structure, info=info)

    @staticmethod
    def _check_runs(model: nn.Module, context: PruneContext) -> None:
        try:
            with torch.no_grad():
                out = model(*context.example_inputs)
        except Exception as exc:
            raise CellError(f"the structurally pruned {context.model_name} no longer runs: "
                            f"{type(exc).__name__}: {exc}") from exc
        if not torch.isfinite(out).all():
            raise CellError(f"the structurally pruned {context.model_name} gives non-finite outputs")

    def restore(self, model: nn.Module, structure: dict[str, Any]) -> nn.Module:
        """Give a freshly built dense model the pruned shapes and attributes; then its state_dict loads.

        A shared module (a FEDformer Fourier block, shared by the layers of its stack) has its tensors in
        ``shapes`` under every name it has; each name resolves to the same module, which is given its new
        tensors (the same shape) each time."""
        modules = dict(model.named_modules(remove_duplicate=False))
        for full_name, shape in structure.get("shapes", {}).items():
            owner_name, _, tensor_name = full_name.rpartition(".")
            owner = modules[owner_name]
            old = getattr(owner, tensor_name)
            new = torch.zeros(shape, dtype=old.dtype)
            if isinstance(old, nn.Parameter):
                setattr(owner, tensor_name, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                owner.register_buffer(tensor_name, new)
        for name, attrs in structure.get("attributes", {}).items():
            for attr, value in attrs.items():
                setattr(modules[name], attr, tuple(value) if isinstance(value, list) else value)
        return model


PLUGINS = (StructuredPruner(),)
