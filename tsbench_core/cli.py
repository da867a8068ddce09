"""The ``tsbench`` command line: run | validate | schema | plugins | results | bench | report.

User mistakes (bad spec, unknown plugin, missing data) print one clear message per problem and exit 2,
without a traceback. A run whose cells failed exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tsbench_core.errors import PluginError, UserError
from tsbench_core.store import DEFAULT_STORE

EXIT_OK, EXIT_FAILED_CELLS, EXIT_USAGE = 0, 1, 2


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # logs and pipes: do not squeeze the results table into 80 columns
        console.width = max(console.width, 180)
    return console


def _registry() -> Any:
    from tsbench_core.registry import load_plugins

    registry = load_plugins()
    for err in registry.load_errors:
        _console(stderr=True).print(
            f"[yellow]warning:[/] plugin {err.entry_point} from {err.distribution} failed to load and was "
            f"skipped: {err.error}"
        )
    return registry


def _load_specs(paths: Sequence[str], registry: Any) -> list[Any]:
    """Validate every file before anything runs; collect the problems of all files."""
    from tsbench_core.spec import SpecProblems, load_spec

    specs, problems = [], []
    for path in paths:
        try:
            specs.append(load_spec(path, registry))
        except SpecProblems as exc:
            problems.append(str(exc))
    if problems:
        raise UserError("\n".join(problems))
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(f"several spec files share the name {', '.join(duplicated)}; spec names must be unique")
    return specs


# --- commands -------------------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    specs = _load_specs(args.specs, _registry())
    for path, spec in zip(args.specs, specs, strict=True):
        print(f"{path}: ok ({spec.name})")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from tsbench_core.spec import spec_json_schema

    text = json.dumps(spec_json_schema(_registry()), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry()
    records = registry.all_records()
    if args.json:
        out = []
        for rec in records:
            availability = rec.availability()
            out.append({"kind": rec.kind, "name": rec.name, "description": rec.plugin.description,
                        "distribution": rec.distribution, "version": rec.version, "source": rec.source,
                        "available": availability.available, "reason": availability.reason})
        errors = [vars(e) if hasattr(e, "__dict__") else e.__dict__ for e in registry.load_errors]
        print(json.dumps({"plugins": out, "load_errors": [dict(e) for e in errors]}, indent=2))
        return EXIT_OK
    from rich.table import Table

    table = Table(title="tsbench plugins")
    for column in ("kind", "name", "distribution", "available", "description"):
        table.add_column(column, overflow="fold")
    for rec in records:
        availability = rec.availability()
        status = "yes" if availability.available else f"[red]no[/]: {availability.reason}"
        table.add_row(rec.kind, rec.name, f"{rec.distribution} {rec.version}".strip(), status,
                      rec.plugin.description)
    console = _console()
    console.print(table)
    for err in registry.load_errors:
        console.print(f"[red]failed to load[/] {err.entry_point} ({err.distribution}): {err.error}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from tsbench_core.progress import NullProgress, RichProgress
    from tsbench_core.runner import plan, run
    from tsbench_core.store import Store
    from tsbench_core.tables import rich_table

    registry = _registry()
    specs = _load_specs(args.specs, registry)
    only = _selection(args.only or [])
    console = _console()
    with Store(args.store) as store:
        if args.dry_run:
            for spec in specs:
                cells, todo = plan(spec, store, registry, force=args.force, only=only)
                for cell in cells:
                    mark = "run" if cell in todo else "cached"
                    console.print(f"{mark:6} {cell.key} {cell.label()}")
                console.print(f"{spec.name}: {len(cells)} cells, {len(todo)} to run, "
                              f"{len(cells) - len(todo)} cached")
            return EXIT_OK
        executor = _executor(args)
        failed = 0
        for spec in specs:
            progress_cm = NullProgress() if args.quiet else RichProgress(console)
            if isinstance(progress_cm, RichProgress):
                with progress_cm as progress:
                    summary = run(spec, store, registry=registry, force=args.force, data_dir=args.data_dir,
                                  executor=executor, progress=progress, only=only)
            else:
                summary = run(spec, store, registry=registry, force=args.force, data_dir=args.data_dir,
                              executor=executor, progress=progress_cm, only=only)
            ran = summary.total - summary.cached
            console.print(f"[bold]{spec.name}[/]: {summary.total} cells — {summary.cached} cached, {ran} run"
                          + "".join(f", {n} {s}" for s, n in sorted(summary.statuses.items())))
            for label, error in summary.failures:
                console.print(f"  [red]{label}[/]: {error}")
            failed += summary.failed
            if not args.quiet:
                console.print(rich_table(store.rows(spec.name), title=f"results: {spec.name}"))
    return EXIT_FAILED_CELLS if failed else EXIT_OK


def _selection(raw: list[str]) -> dict[str, set[str]]:
    from tsbench_core.cells import SELECTABLE

    selection: dict[str, set[str]] = {}
    for item in raw:
        field, sep, values = item.partition("=")
        if not sep or field not in SELECTABLE or not values:
            raise UserError(f"--only {item!r}: expected FIELD=VALUE[,VALUE] with FIELD one of {', '.join(SELECTABLE)}")
        selection.setdefault(field, set()).update(v.strip() for v in values.split(","))
    return selection


def _executor(args: argparse.Namespace) -> Any:
    if args.executor == "local":
        return None
    try:
        from tsbench_core.executors.dask import DaskExecutor
    except ImportError as exc:
        raise UserError(f"--executor dask needs the dask extra: pip install 'tsbench[dask]' ({exc})") from None
    return DaskExecutor(scheduler=args.scheduler, local_workers=args.local_workers)


def cmd_results(args: argparse.Namespace) -> int:
    from tsbench_core.store import Store
    from tsbench_core.tables import rich_table, to_csv, to_jsonl, to_markdown

    if not Path(args.store).exists():
        raise UserError(f"no results store at {args.store}; run a spec first or pass --store PATH")
    with Store(args.store) as store:
        if args.spec and args.spec not in store.spec_names():
            known = ", ".join(store.spec_names()) or "none"
            raise UserError(f"--spec {args.spec!r}: no rows for that spec in {args.store} (stored specs: {known})")
        rows = store.rows(args.spec)
    if args.format == "table":
        _console().print(rich_table(rows, title=f"{len(rows)} cells in {args.store}"))
    else:
        writer: Callable[[list[dict[str, Any]]], str] = {"csv": to_csv, "jsonl": to_jsonl,
                                                          "markdown": to_markdown}[args.format]
        sys.stdout.write(writer(rows))
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    from tsbench_core.bench import bench, render_rows

    rows = bench(
        args.model, args.pruner, args.sparsity, args.runtime or ["torch-eager"], args.batch_size,
        threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        model_params=_json_arg(args.model_params, "--model-params"),
        pruner_params=_json_arg(args.pruner_params, "--pruner-params"),
        seq_len=args.seq_len, label_len=args.label_len, pred_len=args.pred_len, enc_in=args.enc_in,
        registry=_registry(), quantize=args.quantize, quantize_tolerance=args.int8_tolerance,
    )
    render_rows(rows, as_json=args.json)
    return EXIT_OK if all(r.get("status") in ("ok", "skipped") for r in rows) else EXIT_FAILED_CELLS


def _json_arg(raw: str | None, flag: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{flag}: not valid JSON ({exc.msg}): {raw!r}") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag}: expected a JSON object like '{{\"d_model\": 64}}', got {raw!r}")
    return value


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from tsbench_core.report import write_report
    except ImportError as exc:
        raise UserError(f"reports need matplotlib: {exc}") from None
    written = write_report(store_path=Path(args.store), spec_name=args.spec, out_dir=Path(args.out),
                           benchmark_json=[Path(p) for p in args.benchmark_json or []])
    for path in written:
        print(path)
    return EXIT_OK


# --- parser ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run benchmark specs (resumable)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="SQLite results file (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="redo stored cells (and rebuild their checkpoints)")
    p.add_argument("--dry-run", action="store_true", help="print the cells and counts, run nothing")
    p.add_argument("--data-dir", help="folder with the dataset files (else TSBENCH_DATA_DIR, then the cache)")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", help="dask scheduler address tcp://HOST:PORT or a scheduler file (.json)")
    p.add_argument("--local-workers", type=int, default=None, help="start a local dask cluster of N workers")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    p.add_argument("--only", action="append", metavar="FIELD=V1[,V2]",
                   help="run only the cells whose FIELD (dataset, pred_len, model, pruner, runtime, batch_size, "
                        "quantize: static-int8, sparseml-qat or none) is one of the values; repeat for several fields")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="validate spec files; exit 2 with located problems")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("schema", help="print the JSON Schema of specs, with every plugin's params")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("plugins", help="list plugins, where they come from and whether they are available")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("results", help="print stored results")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--spec", help="only this spec's rows")
    p.add_argument("--format", choices=("table", "csv", "jsonl", "markdown"), default="table")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("bench", help="time one ad-hoc cell on random weights, with its dense reference")
    p.add_argument("--model", required=True)
    p.add_argument("--pruner", default="magnitude")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--runtime", action="append", help="repeat for several runtimes (default torch-eager)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--model-params", help="JSON object of model hyperparameters")
    p.add_argument("--pruner-params", help="JSON object of pruner params")
    p.add_argument("--seq-len", type=int, default=96)
    p.add_argument("--label-len", type=int, default=48)
    p.add_argument("--pred-len", type=int, default=96)
    p.add_argument("--enc-in", type=int, default=7)
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="also time the (pruned) model quantized to INT8 (MatMulInteger) on onnxruntime/deepsparse")
    p.add_argument("--int8-tolerance", type=float, default=0.1,
                   help="INT8 gate: max RMS error / std of the fp32 torch-eager output (default %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="write report.md/html, plots and results.csv")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--spec", help="only this spec")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--benchmark-json", action="append", help="pytest-benchmark JSON files to plot too")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        _console(stderr=True).print(f"[red]error:[/] {exc}", markup=True)
        return EXIT_USAGE
    except PluginError as exc:
        _console(stderr=True).print(f"[red]plugin error:[/] {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; stored cells are kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
