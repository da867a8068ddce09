"""The summary that opens a report: per model, how far it prunes within 1 %, 5 % and 10 % of its dense reference
(one-shot, and trained: fine-tuned or pruned while training), and the fastest setting within 5 % on each runtime."""

from __future__ import annotations

from typing import Any

from tsbench_core.report.data import Section, accuracy_groups, pruner_label, sparsity_of
from tsbench_core.report.tables import Table
from tsbench_core.seed_groups import (
    Reference,
    SeedGroup,
    compare_to_reference,
    group_over_seeds,
    is_dense_reference,
    is_plain_dense,
    reference_values,
    trained_after_pruning,
)

THRESHOLDS = (1.0, 5.0, 10.0)  # percent MSE increase over the dense reference
FAST_WITHIN = 5.0


def mean_change(group: SeedGroup, references: dict[tuple[Any, ...], Reference]) -> float | None:
    """Mean over seeds of the relative MSE change (percent) against the group's reference; 0 for plain dense."""
    if is_plain_dense(group.first):
        return 0.0
    comparison = compare_to_reference(group, references)
    relative = comparison.relative if comparison is not None else None
    return None if relative is None else relative.mean


def _prunes(group: SeedGroup, trained: bool) -> bool:
    """A pruned fp32 setting, trained after pruning (``trained_after_pruning``) or one-shot as asked."""
    row = group.first
    return not is_dense_reference(row) and not row.get("quantize") and trained_after_pruning(row) == trained


def highest_sparsity(groups: list[SeedGroup], references: dict[tuple[Any, ...], Reference], within: float,
                     trained: bool) -> SeedGroup | None:
    """The pruned fp32 group of the highest achieved sparsity whose mean MSE change is at most ``within`` %."""
    best: SeedGroup | None = None
    for group in groups:
        row = group.first
        if not _prunes(group, trained):
            continue
        change = mean_change(group, references)
        if change is not None and change <= within and (best is None or sparsity_of(row) > sparsity_of(best.first)):
            best = group
    return best


def fastest_within(groups: list[SeedGroup], references: dict[tuple[Any, ...], Reference],
                   within: float = FAST_WITHIN) -> SeedGroup | None:
    """The timed group of the lowest mean latency per window whose mean MSE change is at most ``within`` %."""
    best, best_ms = None, float("inf")
    for group in groups:
        latency = group.spread("latency_ms_median")
        change = mean_change(group, references)
        if latency is None or change is None or change > within:
            continue
        per_window = latency.mean / (group.first.get("batch_size") or 1)
        if per_window < best_ms:
            best, best_ms = group, per_window
    return best


def _setting(group: SeedGroup | None, with_speedup: bool = False, missing: str = "–") -> str:
    if group is None:
        return missing
    row = group.first
    text = f"{sparsity_of(row):.3f} {pruner_label(row)}" if not with_speedup else pruner_label(row)
    if with_speedup:
        if row.get("pruner") != "dense" or row.get("quantize"):
            text += f"@{row.get('target_sparsity'):g}"
        if row.get("fine_tuned"):
            text += " ft"
        speedup = group.spread("speedup_vs_dense")
        text += f" ({speedup.mean:.2f}×)" if speedup is not None else " (1.00×)"
    return text


def summary_table(section: Section) -> Table | None:
    """One line per model of the section; ``None`` when it has no ok rows."""
    ok = section.ok_rows
    if not ok:
        return None
    references = reference_values(ok)
    accuracy = accuracy_groups(ok)
    timed = group_over_seeds(ok)
    runtimes = list(dict.fromkeys(r.get("runtime") for r in ok))
    models = list(dict.fromkeys(r.get("model") for r in ok))
    body = []
    for model in models:
        mine = [g for g in accuracy if g.first.get("model") == model]
        line = [str(model)]
        for trained in (False, True):
            if not any(_prunes(g, trained) for g in mine):  # no such rows, unlike rows that all miss
                line += ["–"] * len(THRESHOLDS)
                continue
            line += [_setting(highest_sparsity(mine, references, t, trained), missing="none within")
                     for t in THRESHOLDS]
        for runtime in runtimes:
            on_runtime = [g for g in timed if g.first.get("model") == model and g.first.get("runtime") == runtime]
            line.append(_setting(fastest_within(on_runtime, references), with_speedup=True))
        body.append(line)
    headers = ["model", *[f"one-shot ≤{t:g} %" for t in THRESHOLDS], *[f"trained ≤{t:g} %" for t in THRESHOLDS],
               *[f"fastest ≤{FAST_WITHIN:g} %: {rt}" for rt in runtimes]]
    title = (f"Summary — {section.title}: highest achieved sparsity (and pruner) whose mean test MSE stays within "
             f"1/5/10 % of its dense reference, one-shot and trained (fine-tuned, against the dense model given the "
             f"same fine-tuning, or pruned while training, e.g. gradual magnitude; – no such rows), and the "
             f"setting of lowest latency per window within {FAST_WITHIN:g} % on each runtime (speedup vs dense; "
             f"ft = fine-tuned)")
    return Table(title, headers, body, [False] * len(headers))
