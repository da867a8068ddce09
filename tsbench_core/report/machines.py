"""Which CPU measured which rows. A store merged from several runs (chunks of a study, other machines) can hold
rows timed on different CPUs; hostnames and model names do not tell them apart (two AMD EPYC generations both
report "AMD EPYC"), the CPU fingerprint does (``tsbench_core/cpu.py``). Pure functions over run and row dicts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

UNRECORDED = "unrecorded"


@dataclass
class Machine:
    """One CPU of the store: the environment of its most recent run, its runs and how many rows it measured."""

    fingerprint: str
    environment: dict[str, Any]
    run_ids: list[str] = field(default_factory=list)
    rows: int = 0

    @property
    def label(self) -> str:
        return machine_label(self.environment, self.fingerprint)


def fingerprint_of(environment: dict[str, Any]) -> str:
    """The CPU fingerprint a run recorded; older runs without one fall back to host and CPU model."""
    if environment.get("cpu_fingerprint"):
        return str(environment["cpu_fingerprint"])
    if environment.get("cpu_model") or environment.get("host"):
        return f"{environment.get('host') or '?'}/{environment.get('cpu_model') or '?'}"
    return UNRECORDED


def machine_label(environment: dict[str, Any], fingerprint: str) -> str:
    """``AMD EPYC (family 26 model 2), fingerprint 41231d6b9bf26f3e``: the model name alone can be ambiguous."""
    cpu = environment.get("cpu") or {}
    name = environment.get("cpu_model") or cpu.get("model_name") or "CPU not recorded"
    if cpu.get("family") is not None and cpu.get("model") is not None:
        name += f" (family {cpu['family']} model {cpu['model']})"
    return f"{name}, fingerprint {fingerprint}" if fingerprint != UNRECORDED else name


def machines(runs: Sequence[dict[str, Any]], rows: Iterable[dict[str, Any]]) -> list[Machine]:
    """The CPUs that measured ``rows`` (through each row's ``run_id``), in order of their first run; a row whose
    run is not in ``runs`` counts under ``UNRECORDED``. CPUs with runs but no rows here are left out."""
    by_run = _fingerprint_by_run(runs)
    found: dict[str, Machine] = {}
    for run in runs:  # the store sorts runs by start time, so the last environment seen is the latest
        env = run.get("environment") or {}
        machine = found.setdefault(fingerprint_of(env), Machine(fingerprint_of(env), env))
        if env:
            machine.environment = env
        machine.run_ids.append(str(run.get("run_id")))
    for row in rows:
        key = by_run.get(str(row.get("run_id")), UNRECORDED)
        found.setdefault(key, Machine(key, {})).rows += 1
    return [m for m in found.values() if m.rows]


def rows_per_machine(runs: Sequence[dict[str, Any]], rows: Iterable[dict[str, Any]]) -> list[tuple[str, int]]:
    """``(machine label, row count)`` for the rows of one section, most rows first."""
    return [(m.label, m.rows) for m in sorted(machines(runs, rows), key=lambda m: -m.rows)]


def with_cpu(rows: Iterable[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with ``cpu_fingerprint`` and ``cpu_label`` of the CPU that measured it (through its ``run_id``;
    derived columns, not stored: ``tables.DERIVED_COLUMNS``)."""
    by_run = _fingerprint_by_run(runs)
    environments = {str(r.get("run_id")): r.get("environment") or {} for r in runs}
    out = []
    for row in rows:
        run_id = str(row.get("run_id"))
        key = by_run.get(run_id, UNRECORDED)
        out.append({**row, "cpu_fingerprint": key, "cpu_label": machine_label(environments.get(run_id, {}), key)})
    return out


def _fingerprint_by_run(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {str(r.get("run_id")): fingerprint_of(r.get("environment") or {}) for r in runs}
