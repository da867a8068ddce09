"""Stored rows grouped over seeds: one group per setting (every identity field except the seed), with the
accuracy change against the dense reference paired per seed. Pure functions over row dicts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from tsbench_core.cells import DENSE
from tsbench_core.seed_stats import Spread, paired_p_value, spread, verdict
from tsbench_core.store import STATUS_OK

Row = dict[str, Any]

# what makes two rows the same setting (a timed cell without its seed) ...
SETTING_FIELDS = ("spec_name", "dataset", "seq_len", "label_len", "pred_len", "model", "pruner", "target_sparsity",
                  "fine_tuned", "quantize", "variant", "runtime", "batch_size")
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
    """The fp32 dense row whose accuracy other rows of its task and seed are compared with."""
    return row.get("pruner") == DENSE and not row.get("quantize")


def reference_key(row: Row) -> tuple[Any, ...]:
    """The (task, seed) a row's accuracy change refers to."""
    return (*setting_of(row, _TASK_FIELDS), row.get("seed"))


def reference_values(rows: Iterable[Row], column: str = "mse") -> dict[tuple[Any, ...], float]:
    """``column`` of every ok dense reference row, by ``reference_key``."""
    out: dict[tuple[Any, ...], float] = {}
    for row in rows:
        if is_dense_reference(row) and row.get("status") == STATUS_OK and row.get(column) is not None:
            out.setdefault(reference_key(row), float(row[column]))
    return out


@dataclass(frozen=True)
class Comparison:
    """A setting against its dense reference, seed by seed: ``pairs`` of (seed, value, reference)."""

    pairs: tuple[tuple[Any, float, float], ...]

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
    """The group's ``column`` paired per seed with its reference's; ``None`` for the reference itself or when no
    seed has both values."""
    if is_dense_reference(group.first):
        return None
    pairs = []
    for row in group.ok_rows:
        reference = references.get(reference_key(row))
        if row.get(column) is not None and reference is not None:
            pairs.append((row.get("seed"), float(row[column]), reference))
    return Comparison(tuple(pairs)) if pairs else None
