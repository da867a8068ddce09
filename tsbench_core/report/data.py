"""Report data: stored rows read and checked, grouped per (spec, dataset, horizon), reduced to what tables and
plots show. Pure functions over row dicts (no matplotlib, no torch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsbench_core.errors import UserError
from tsbench_core.seed_groups import JOB_FIELDS, SeedGroup, group_over_seeds, is_dense_reference, setting_of
from tsbench_core.seed_stats import Spread, spread
from tsbench_core.store import STATUS_OK, Store
from tsbench_core.variants import pruning_part

Row = dict[str, Any]


@dataclass
class Section:
    """The rows of one (spec, dataset, horizon): what one block of the report shows."""

    spec_name: str
    dataset: str
    pred_len: int
    seq_len: int | None
    rows: list[Row] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset}, horizon {self.pred_len} (seq_len {self.seq_len}) — spec {self.spec_name}"

    @property
    def slug(self) -> str:
        """A file-name-safe id of the section."""
        raw = f"{self.spec_name}_{self.dataset}_H{self.pred_len}"
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)

    @property
    def ok_rows(self) -> list[Row]:
        return [r for r in self.rows if r.get("status") == STATUS_OK]


@dataclass
class ReportData:
    """Everything a report shows: the sections, all rows, and the runs (with environments) that made them."""

    store_path: Path
    spec_name: str | None
    rows: list[Row]
    sections: list[Section]
    runs: list[dict[str, Any]]


def load_report_data(store_path: Path, spec_name: str | None) -> ReportData:
    """Read the store; ``UserError`` when it is missing or empty, or holds no spec named ``spec_name``."""
    store_path = Path(store_path)
    if not store_path.is_file():
        raise UserError(f"{store_path}: no results store here; run `tsbench run SPEC --store {store_path}` first")
    with Store(store_path) as store:
        names = store.spec_names()
        if not names:
            raise UserError(f"{store_path}: the store holds no results yet; run `tsbench run SPEC` first")
        if spec_name is not None and spec_name not in names:
            raise UserError(f"{store_path}: no results for spec {spec_name!r}; the store holds: {', '.join(names)}")
        rows = store.rows(spec_name)
        runs = [r for r in store.runs() if spec_name is None or r.get("spec_name") == spec_name]
    return ReportData(store_path, spec_name, rows, group_sections(rows), runs)


def group_sections(rows: Iterable[Row]) -> list[Section]:
    """Rows grouped by (spec, dataset, horizon), in first-seen order (the store sorts them)."""
    sections: dict[tuple[Any, ...], Section] = {}
    for row in rows:
        key = (row.get("spec_name"), row.get("dataset"), row.get("pred_len"), row.get("seq_len"))
        if key not in sections:
            sections[key] = Section(str(key[0]), str(key[1]), int(key[2] or 0), key[3])
        sections[key].rows.append(row)
    return list(sections.values())


def sparsity_of(row: Row) -> float:
    """The achieved sparsity of a row, else its target (dense rows are 0)."""
    value = row.get("achieved_sparsity")
    if value is None:
        value = row.get("target_sparsity")
    return float(value or 0.0)


def model_rows(rows: Iterable[Row]) -> list[Row]:
    """One row per model job and seed (``JOB_FIELDS`` + seed): the model columns are the same on every runtime
    (INT8 accuracy is measured per runtime; the first ok runtime's figure stands for the job).

    Prefers an ``ok`` row; a job with no ok row keeps its first row (so a failure still shows up).
    """
    chosen: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        key = (*setting_of(row, JOB_FIELDS), row.get("seed"))
        if key not in chosen or (chosen[key].get("status") != STATUS_OK and row.get("status") == STATUS_OK):
            chosen[key] = row
    return list(chosen.values())


def accuracy_groups(rows: Iterable[Row]) -> list[SeedGroup]:
    """One group per model job (its rows over seeds, one runtime's row each)."""
    return group_over_seeds(model_rows(rows), JOB_FIELDS)


def dense_spread(rows: Iterable[Row], model: str, column: str = "mse") -> Spread | None:
    """``column`` of the dense fp32 reference of ``model`` among ``rows``, over its seeds."""
    mine = [r for r in model_rows(rows) if r.get("model") == model and is_dense_reference(r)
            and r.get("status") == STATUS_OK and not r.get("fine_tuned")]
    return spread([r.get(column) for r in mine])


def dense_mse(rows: Iterable[Row], model: str) -> float | None:
    """Test MSE of the dense fp32 reference of ``model`` among ``rows`` (the mean over its seeds)."""
    value = dense_spread(rows, model)
    return None if value is None else value.mean


def per_sample_ms(row: Row) -> float | None:
    latency, batch = row.get("latency_ms_median"), row.get("batch_size") or 1
    return None if latency is None else float(latency) / batch


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when both coordinates are minimised, sorted by the first one.

    A point is dominated when another is <= on both coordinates and < on at least one.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front: list[int] = []
    best = float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def failures(rows: Iterable[Row]) -> list[Row]:
    """Rows that are not ok (failed or skipped), with their error messages."""
    return [r for r in rows if r.get("status") != STATUS_OK]


def pruner_label(row: Row) -> str:
    """The pruner of a row, with ``+<quantizer>`` for INT8 cells (``magnitude+static-int8``), and its
    non-default pruner/INT8 options (``variants.pruning_part``) in parentheses."""
    name = str(row.get("pruner") or "?")
    options = pruning_part(row.get("variant"))
    if row.get("quantize"):
        name = f"{name}+{row['quantize']}"
    return f"{name} ({options})" if options else name


def _without_int8(variant: str | None) -> str:
    return " ".join(p for p in pruning_part(variant).split(" ") if p and not p.startswith("int8."))


def fp32_twin(rows: Iterable[Row], row: Row) -> Row | None:
    """The ok fp32 row of the same model, seed, pruner, sparsity, fine-tuning, runtime and batch size as a
    quantized ``row``."""
    for other in rows:
        if (not other.get("quantize") and other.get("status") == STATUS_OK
                and all(other.get(k) == row.get(k) for k in ("model", "seed", "pruner", "target_sparsity",
                                                              "fine_tuned", "runtime", "batch_size"))
                and pruning_part(other.get("variant")) == _without_int8(row.get("variant"))):
            return other
    return None
