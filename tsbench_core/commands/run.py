"""``tsbench run``: run benchmark specs, resumably (stored cells are skipped)."""

from __future__ import annotations

import argparse
from typing import Any

from tsbench_core.commands.common import (
    EXIT_FAILED_CELLS,
    EXIT_OK,
    console,
    load_specs,
    print_json,
    registry,
    styled,
)
from tsbench_core.errors import UserError
from tsbench_core.settings import DATA_DIR_ENV
from tsbench_core.store import DEFAULT_STORE

NAME = "run"
SUMMARY = "run benchmark specs (resumable: stored cells are not run again)"
EXAMPLES = (
    "tsbench run specs/quickstart.json                   # resumable; prints a results table per spec",
    "tsbench run specs/quickstart.json --dry-run         # list the cells: run or cached",
    "tsbench run specs/paper/*.json --only model=informer --only pred_len=96,192",
    "tsbench run specs/study/etth1_dlinear.json --only runtime=onnxruntime --retime   # measure again, no training",
    "tsbench run specs/paper/*.json --executor dask --local-workers 2",
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC", help="spec JSON files, all validated before any runs")
    parser.add_argument("--store", default=str(DEFAULT_STORE), metavar="FILE", help="SQLite results file")
    redo = parser.add_mutually_exclusive_group()
    redo.add_argument("--force", action="store_true", help="redo stored cells (and rebuild their checkpoints)")
    redo.add_argument("--retime", action="store_true",
                      help="redo stored cells' export, output check, timing and runtime accuracy on their stored "
                           "checkpoints (nothing is trained): after a timing-protocol change or on another machine")
    redo.add_argument("--retry-failed", action="store_true",
                      help="run only the cells stored as failed (a plain run also retries them, and runs new cells)")
    parser.add_argument("--dry-run", action="store_true", help="print the cells and counts, run nothing")
    parser.add_argument("--data-dir", metavar="DIR",
                        help=f"folder with the dataset files; wins over ${DATA_DIR_ENV}, which wins over the spec's "
                             "data_dir; the download cache is searched last")
    parser.add_argument("--executor", choices=("local", "dask"), default="local",
                        help="where cells run: this process, or a Dask cluster (extra tsbench[dask])")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="dask scheduler address tcp://HOST:PORT or a scheduler file (.json); "
                             "without it --executor dask starts a local cluster")
    parser.add_argument("--local-workers", type=int, default=None, metavar="N",
                        help="size of the local dask cluster (default: one worker per core)")
    parser.add_argument("--only", action="append", metavar="FIELD=V1[,V2]",
                        help="run only the cells whose FIELD (dataset, pred_len, model, seed, pruner, sparsity: "
                             "the target, 0 for dense; fine_tune: none or the epochs; runtime, batch_size, quantize: "
                             "static-int8, sparseml-qat or none) is one of the values; repeat for several fields "
                             "(--only seed=1 --only pruner=magnitude: cells with both); a value no cell of the specs "
                             "has is an error (exit 2)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="no progress bars or tables, only the summary lines")
    output.add_argument("--json", action="store_true",
                        help="print one JSON document (per spec: counts, statuses, failures; with --dry-run: the "
                             "cells) instead of text; implies --quiet")


def run(args: argparse.Namespace) -> int:
    from tsbench_core.progress import NullProgress, RichProgress
    from tsbench_core.runner import plan
    from tsbench_core.runner import run as run_spec
    from tsbench_core.store import Store
    from tsbench_core.tables import rich_table

    plugins = registry()
    specs = load_specs(args.specs, plugins)
    only = selection(args.only or [])
    check_selection(only, specs, plugins)
    out = console()
    quiet = args.quiet or args.json
    report: list[dict[str, Any]] = []
    with Store(args.store) as store:
        if args.dry_run:
            for spec in specs:
                cells, todo = plan(spec, store, plugins, force=args.force, only=only,
                                   retry_failed=args.retry_failed, retime=args.retime)
                listed = [{"key": c.key, "label": c.label(), "status": "run" if c in todo else "cached"}
                          for c in cells]
                report.append({"spec": spec.name, "cells": listed, "total": len(cells), "to_run": len(todo),
                               "cached": len(cells) - len(todo)})
                if args.json:
                    continue
                for cell in listed:
                    out.print(f"{cell['status']:6} {cell['key']} {cell['label']}")
                out.print(f"{spec.name}: {len(cells)} cells, {len(todo)} to run, {len(cells) - len(todo)} cached")
            if args.json:
                print_json({"specs": report})
            return EXIT_OK
        executor = _executor(args)
        failed = 0
        for spec in specs:
            progress = NullProgress() if quiet else RichProgress(out)
            with progress:
                summary = run_spec(spec, store, registry=plugins, force=args.force, data_dir=args.data_dir,
                                   executor=executor, progress=progress, only=only, retry_failed=args.retry_failed,
                                   retime=args.retime)
            failed += summary.failed
            ran = summary.total - summary.cached - summary.elsewhere
            report.append({"spec": spec.name, "run_id": summary.run_id, "total": summary.total,
                           "cached": summary.cached, "run": ran, "by_another_run": summary.elsewhere,
                           "statuses": dict(summary.statuses),
                           "failures": [{"cell": label, "error": error} for label, error in summary.failures]})
            if args.json:
                continue
            elsewhere = f", {summary.elsewhere} by another run" if summary.elsewhere else ""
            out.print(styled((spec.name, "bold"), f": {summary.total} cells — {summary.cached} cached{elsewhere}, "
                             f"{ran} run" + "".join(f", {n} {s}" for s, n in sorted(summary.statuses.items()))))
            for label, error in summary.failures:
                out.print(styled("  ", (label, "red"), f": {error}"))
            if not quiet:
                out.print(rich_table(store.rows(spec.name), title=f"results: {spec.name}"))
    if args.json:
        print_json({"specs": report})
    return EXIT_FAILED_CELLS if failed else EXIT_OK


def selection(raw: list[str]) -> dict[str, set[str]]:
    """``--only FIELD=V1,V2`` options as ``{field: {values}}``."""
    from tsbench_core.cells import SELECTABLE

    chosen: dict[str, set[str]] = {}
    for item in raw:
        field, sep, values = item.partition("=")
        if not sep or field not in SELECTABLE or not values:
            raise UserError(f"--only {item!r}: expected FIELD=VALUE[,VALUE] with FIELD one of {', '.join(SELECTABLE)}")
        chosen.setdefault(field, set()).update(_normal(field, v.strip(), item) for v in values.split(","))
        glued = sorted(v for v in chosen[field] if "=" in v)
        if glued:
            other = glued[0].partition("=")[0]
            raise UserError(f"--only {item!r}: {glued[0]!r} is not a {field}; give one --only per field, e.g. "
                            f"--only {field}={values.partition(',')[0]} --only {glued[0]}"
                            + ("" if other in SELECTABLE else f" (FIELD one of {', '.join(SELECTABLE)})"))
    return chosen


def _normal(field: str, value: str, item: str) -> str:
    """A sparsity in the form cells show it (0.90 and .9 select 0.9); other values as given."""
    from tsbench_core.cells import sparsity_text

    if field != "sparsity" or "=" in value:
        return value
    try:
        return sparsity_text(float(value))
    except ValueError:
        raise UserError(f"--only {item!r}: sparsity {value!r} is not a number (e.g. --only sparsity=0.9)") from None


def check_selection(only: dict[str, set[str]], specs: list[Any], plugins: Any) -> None:
    """A selected value that no cell of the given specs has is a mistake (a typo would run nothing, silently)."""
    from tsbench_core.cells import cell_fields, expand

    if not only:
        return
    present: dict[str, set[str]] = {field: set() for field in only}
    for spec in specs:
        for cell in expand(spec, plugins):
            fields = cell_fields(cell)
            for field in only:
                present[field].add(fields[field])
    problems = [f"--only {field}={value}: no cell of the given specs has {field} {value!r} (they have: "
                f"{', '.join(sorted(present[field]))})"
                for field, values in only.items() for value in sorted(values - present[field])]
    if problems:
        raise UserError("\n".join(problems))


def _executor(args: argparse.Namespace) -> Any:
    if args.executor == "local":
        return None
    try:
        from tsbench_core.executors.dask import DaskExecutor
    except ImportError as exc:
        raise UserError(f"--executor dask needs the dask extra: pip install 'tsbench[dask]' ({exc})") from None
    return DaskExecutor(scheduler=args.scheduler, local_workers=args.local_workers)
