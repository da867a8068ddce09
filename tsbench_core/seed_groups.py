"""Stored rows grouped over seeds: one group per setting (every identity field except the seed), with the
accuracy change against its dense reference paired per seed. Pure functions over row dicts.

The reference of a fine-tuned row is the dense control with the same fine-tuning (the dense model given the same
extra training); of a one-shot row, and of a control itself, the plain dense model. A fine-tuned row whose control
is not stored (rows from before controls existed) falls back to the plain dense model, and says so."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tsbench_core.cells import DENSE
from tsbench_core.protocols import TRAINED_WHILE_PRUNING
from tsbench_core.seed_stats import Spread, paired_p_value, spread, verdict
from tsbench_core.store import STATUS_OK

Row = dict[str, Any]

# what makes two rows the same setting (a timed cell without its seed) ...
SETTING_FIELDS = ("spec_name", "dataset", "seq_len", "label_len", "pred_len", "model", "pruner", "target_sparsity",
                  "fine_tuned", "fine_tune", "quantize", "variant", "runtime", "batch_size")
# ... and the same model (accuracy does not depend on the runtime or batch size of fp32 cells)
JOB_FIELDS = tuple(f for f in SETTING_FIELDS if f not in ("runtime", "batch_size"))
# the rows a row's accuracy change is measured against share these fields and the seed
_TASK_FIELDS = ("spec_name", "dataset", "seq_len", "pred_len", "model")


@dataclass
class SeedGroup:
    """The rows of one setting, at most one per seed (an ok row preferred, then the latest)."""

    rows: list[Row]

    @property
    def first(self) -> Row:
        """The row that stands for the group's identity fields (its first ok row, else its first row)."""
        return next((r for r in self.rows if r.get("status") == STATUS_OK), self.rows[0])

    @property
    def ok_rows(self) -> list[Row]:
        return [r for r in self.rows if r.get("status") == STATUS_OK]

    @property
    def seeds(self) -> list[Any]:
        return [r.get("seed") for r in self.rows]

    @property
    def status(self) -> str:
        """``ok`` when every seed's row is ok, else the count of each status (``2 ok, 1 failed``)."""
        statuses = [str(r.get("status") or "?") for r in self.rows]
        if set(statuses) == {STATUS_OK}:
            return STATUS_OK
        if len(set(statuses)) == 1:
            return statuses[0]
        return ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))

    def spread(self, column: str) -> Spread | None:
        """The values of ``column`` over the group's ok rows."""
        return spread([r.get(column) for r in self.ok_rows])


def setting_of(row: Row, fields: Sequence[str] = SETTING_FIELDS) -> tuple[Any, ...]:
    return tuple(row.get(f) for f in fields)


def group_over_seeds(rows: Iterable[Row], fields: Sequence[str] = SETTING_FIELDS) -> list[SeedGroup]:
    """Rows grouped by ``fields`` in first-seen order, keeping one row per seed per group."""
    groups: dict[tuple[Any, ...], dict[Any, Row]] = {}
    for row in rows:
        per_seed = groups.setdefault(setting_of(row, fields), {})
        seed = row.get("seed")
        if seed not in per_seed or _better(row, per_seed[seed]):
            per_seed[seed] = row
    return [SeedGroup(list(per_seed.values())) for per_seed in groups.values()]


def _better(row: Row, kept: Row) -> bool:
    ok, kept_ok = row.get("status") == STATUS_OK, kept.get("status") == STATUS_OK
    if ok != kept_ok:
        return ok
    return (row.get("finished_at") or 0.0) > (kept.get("finished_at") or 0.0)


def is_dense_reference(row: Row) -> bool:
    """An fp32 dense row (the plain dense model or a dense control), which other rows are compared with."""
    return row.get("pruner") == DENSE and not row.get("quantize")


def is_plain_dense(row: Row) -> bool:
    """The fp32 trained dense model itself (no fine-tuning)."""
    return is_dense_reference(row) and not row.get("fine_tuned")


def trained_after_pruning(row: Row) -> bool:
    """Fine-tuned, or pruned by a pruner that trains (gradual magnitude records its training): not one-shot."""
    info = row.get("prune_info")
    return bool(row.get("fine_tuned")) or (isinstance(info, dict) and TRAINED_WHILE_PRUNING in info)


def is_control(row: Row) -> bool:
    """A dense control: the fp32 dense model given a fine-tuning budget."""
    return is_dense_reference(row) and bool(row.get("fine_tuned"))


def fine_tune_label(row: Row) -> str:
    """``none``, ``1 epoch, lr 0.0005`` (``, ≤ N batches/epoch`` when capped), or ``yes`` for older rows that did
    not record their fine-tuning config."""
    if not row.get("fine_tuned"):
        return "none"
    raw = row.get("fine_tune")
    if not raw:
        return "yes"
    config = json.loads(raw) if isinstance(raw, str) else raw
    epochs = config.get("epochs")
    text = f"{epochs} epoch{'s' if epochs != 1 else ''}, lr {config.get('lr'):g}"
    if config.get("max_train_batches"):
        text += f", ≤ {config['max_train_batches']} batches/epoch"
    return text


def reference_label(row: Row) -> str:
    """How a reference row is named in tables: ``dense`` or ``dense + <fine-tuning>``."""
    return "dense" if not row.get("fine_tuned") else f"dense + {fine_tune_label(row)}"


def _reference_slot(row: Row, fine_tune: Any) -> tuple[Any, ...]:
    return (*setting_of(row, _TASK_FIELDS), row.get("seed"), fine_tune)


def reference_key(row: Row) -> tuple[Any, ...]:
    """The (task, seed, fine-tuning) of the dense row a row's accuracy change refers to."""
    own = None if is_control(row) or not row.get("fine_tuned") else row.get("fine_tune")
    return _reference_slot(row, own)


@dataclass(frozen=True)
class Reference:
    value: float
    label: str  # e.g. "dense" or "dense + 1 epoch, lr 0.0005"


def reference_values(rows: Iterable[Row], column: str = "mse") -> dict[tuple[Any, ...], Reference]:
    """``column`` of every ok fp32 dense row (plain or control), by (task, seed, its fine-tuning)."""
    out: dict[tuple[Any, ...], Reference] = {}
    for row in rows:
        if is_dense_reference(row) and row.get("status") == STATUS_OK and row.get(column) is not None:
            fine_tune = row.get("fine_tune") if row.get("fine_tuned") else None
            out.setdefault(_reference_slot(row, fine_tune), Reference(float(row[column]), reference_label(row)))
    return out


def find_reference(row: Row, references: dict[tuple[Any, ...], Reference]) -> Reference | None:
    """A row's reference; a fine-tuned row without a stored control gets the plain dense model, labelled so."""
    found = references.get(reference_key(row))
    if found is None and row.get("fine_tuned") and not is_control(row):
        plain = references.get(_reference_slot(row, None))
        if plain is not None:
            found = Reference(plain.value, "dense (no fine-tuned control stored)")
    return found


@dataclass(frozen=True)
class Comparison:
    """A setting against its dense reference, seed by seed: ``pairs`` of (seed, value, reference)."""

    pairs: tuple[tuple[Any, float, float], ...]
    against: str = "dense"  # which dense row the change refers to

    @property
    def relative(self) -> Spread | None:
        """The per-seed relative change in percent: 100 · (value / reference − 1)."""
        return spread([100.0 * (v / r - 1.0) for _, v, r in self.pairs if r])

    @property
    def p_value(self) -> float | None:
        return paired_p_value([v for _, v, _ in self.pairs], [r for _, _, r in self.pairs])

    @property
    def verdict(self) -> str:
        return verdict(self.p_value)


def compare_to_reference(group: SeedGroup, references: dict[tuple[Any, ...], float],
                         column: str = "mse") -> Comparison | None:
    """The group's ``column`` paired per seed with its reference's; ``None`` for the plain dense model or when no
    seed has both values."""
    if is_plain_dense(group.first):
        return None
    pairs, labels = [], []
    for row in group.ok_rows:
        reference = find_reference(row, references)
        if row.get(column) is not None and reference is not None:
            pairs.append((row.get("seed"), float(row[column]), reference.value))
            labels.append(reference.label)
    return Comparison(tuple(pairs), labels[0]) if pairs else None
