"""pytest plugin: every timing cell of a tsbench spec as a pytest-benchmark benchmark.

    pytest --tsbench-spec specs/quickstart.json --benchmark-json out.json

Each cell of the spec becomes one test item whose id reads like
``synthetic-H24-dlinear-seed0-magnitude-s0.5-block_4-int8-onnxruntime-bs32`` (``-k`` selects on it). The item
prepares the cell with the measure step of ``tsbench run`` (``pipeline.cell_models`` + ``prepare_cell``): dense
training and pruning through the pipeline (checkpoints cached under ``--tsbench-store``, shared with
``tsbench run --store DIR/results.db``), the runtime session — an INT8 cell's quantized graph — and the correctness
gate; only then it times ``session.run`` on the batch `tsbench run` times, with the spec's warmup and repeats
(``benchmark.pedantic``), or with pytest-benchmark's own calibration given ``--tsbench-calibrate``. A gate failure
fails the item; an unavailable runtime skips it.

Nothing heavy (torch, the registry) is imported unless ``--tsbench-spec`` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

_STATE = pytest.StashKey["_SpecState"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tsbench", "tsbench spec cells as pytest-benchmark benchmarks")
    group.addoption("--tsbench-spec", action="append", default=[], metavar="PATH",
                    help="benchmark every timing cell of this spec (repeatable)")
    group.addoption("--tsbench-store", default=None, metavar="DIR",
                    help="folder of trained/pruned checkpoints, shared with `tsbench run --store DIR/results.db` "
                         "(default: tsbench-results); a path to a results.db means its folder")
    group.addoption("--tsbench-data-dir", default=None, metavar="DIR",
                    help="folder with the dataset files; wins over TSBENCH_DATA_DIR, which wins over the spec's "
                         "data_dir")
    group.addoption("--tsbench-calibrate", action="store_true",
                    help="let pytest-benchmark choose rounds (default: the spec's warmup and repeats)")


def artifacts_dir(option: str | None) -> Path:
    """The artifact folder for ``--tsbench-store`` (a folder, or a results database inside one)."""
    from tsbench_core.store import DEFAULT_STORE

    path = Path(option) if option else DEFAULT_STORE.parent
    if path.suffix == ".db" or path.is_file():
        path = path.parent
    return path / "artifacts"


class _SpecState:
    """Per-session shared state: one workspace (memoised datasets, registry) for every cell."""

    def __init__(self, config: pytest.Config) -> None:
        self.specs = [Path(p).resolve() for p in config.getoption("tsbench_spec")]
        self.store_option = config.getoption("tsbench_store")
        self.data_dir = config.getoption("tsbench_data_dir")
        self.calibrate = bool(config.getoption("tsbench_calibrate"))
        self._workspace: Any = None

    def workspace(self) -> Any:
        if self._workspace is None:
            from tsbench_core.pipeline import Workspace
            from tsbench_core.registry import load_plugins

            self._workspace = Workspace(artifacts_dir(self.store_option), self.data_dir, load_plugins())
        return self._workspace


def pytest_configure(config: pytest.Config) -> None:
    specs = config.getoption("tsbench_spec", default=[])
    if not specs:
        return
    for spec in specs:
        if not Path(spec).is_file():
            raise pytest.UsageError(f"--tsbench-spec {spec}: no such file")
    from tsbench_core.telemetry import disable_neural_magic_analytics

    disable_neural_magic_analytics()
    config.stash[_STATE] = _SpecState(config)
    # Benchmark only the spec unless paths were named on the command line (not the project's test suite).
    named = list(config.args) if config.args_source == pytest.Config.ArgsSource.ARGS else []
    resolved = {Path(a.split("::")[0]).resolve() for a in named}
    config.args = named + [str(Path(s)) for s in specs if Path(s).resolve() not in resolved]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state = parent.config.stash.get(_STATE, None)
    if state is not None and file_path.resolve() in state.specs:
        return SpecFile.from_parent(parent, path=file_path)
    return None


def cell_id(cell: Any, variant: str = "") -> str:
    """A readable id that ``-k`` can select (no ``@``, ``=`` or spaces): ``dataset-H<horizon>-model-seed<seed>-
    pruner[-s<sparsity>][-ft<epochs>][-<variant>][-<quantizer>]-runtime-bs<batch>``."""
    train = cell.prune.train
    parts = [train.dataset.plugin, f"H{train.pred_len}", train.model, f"seed{train.seed}", cell.prune.pruner]
    if cell.prune.pruner != "dense":
        parts.append(f"s{cell.prune.sparsity:g}")
    if cell.prune.fine_tune is not None:
        parts.append(f"ft{cell.prune.fine_tune.epochs}")
    if variant:
        parts.append(_id_safe(variant))
    if cell.quantize is not None:
        parts.append(cell.quantize.method)
    parts += [cell.runtime, f"bs{cell.batch_size}"]
    return "-".join(parts)


def _id_safe(text: str) -> str:
    """``block=4 runtime.opset=17`` as ``block_4.runtime.opset_17``: only characters a ``-k`` name may hold."""
    out = text.replace("=", "_").replace(" ", ".")
    return "".join(ch if ch.isalnum() or ch in "_.:+-[]/" else "_" for ch in out)


class SpecFile(pytest.File):
    """A spec file given with ``--tsbench-spec``: one benchmark item per timing cell."""

    def collect(self) -> Any:
        from tsbench_core.cells import expand
        from tsbench_core.errors import UserError
        from tsbench_core.spec import load_spec

        state: _SpecState = self.config.stash[_STATE]
        registry = state.workspace().plugins()
        try:
            spec = load_spec(self.path, registry)
        except UserError as exc:
            raise SpecError(str(exc)) from None
        from tsbench_core.variants import variant_label

        seen: dict[str, int] = {}
        for cell in expand(spec, registry):
            name = cell_id(cell, variant_label(cell, registry, with_model=False))
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:  # two entries of one model plugin, or options the id leaves out: keep ids unique
                name = f"{name}-{seen[name]}"
            yield pytest.Function.from_parent(self, name=name, callobj=_cell_test(state, cell))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, SpecError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class SpecError(Exception):
    """A spec that does not validate: reported as its located messages, without a traceback."""


def _cell_test(state: _SpecState, cell: Any) -> Any:
    def test_cell(benchmark: Any) -> None:
        _benchmark_cell(state, cell, benchmark)

    test_cell.__doc__ = f"tsbench cell {cell.label()}"
    return test_cell


def _benchmark_cell(state: _SpecState, cell: Any, benchmark: Any) -> None:
    """The cell prepared and gated by the measure step of `tsbench run` (INT8 cells quantized, gated and their
    accuracy measured through the runtime), then its session timed by pytest-benchmark on the same batch with
    the spec's warm-up and repeats."""
    from tsbench_core.errors import RuntimeUnavailable, TsbenchError
    from tsbench_core.pipeline import cell_models, prepare_cell
    from tsbench_core.protocols import availability_of

    ws = state.workspace()
    runtime = ws.plugins().records["runtime"][cell.runtime].plugin
    availability = availability_of(runtime)
    if not availability.available:
        pytest.skip(f"runtime {cell.runtime!r} is unavailable: {availability.reason}")
    timing = cell.timing
    problem: str | None = None
    try:
        models = cell_models(ws, cell, with_reference=False)
        prepared = prepare_cell(ws, cell, models)
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    except TsbenchError as exc:  # a failed step or gate, or a user mistake such as a missing data file
        problem = str(exc)
    if problem is not None:  # failed outside the except block: no chained traceback in the report
        pytest.fail(f"{cell.label()}: {problem}", pytrace=False)
    try:
        _describe(benchmark, cell, models.artifact.meta, prepared)
        if state.calibrate:
            benchmark(prepared.session.run, prepared.inputs)
        else:
            benchmark.pedantic(prepared.session.run, args=(prepared.inputs,), rounds=timing.repeats,
                               warmup_rounds=timing.warmup, iterations=1)
    finally:
        prepared.close()


def _describe(benchmark: Any, cell: Any, meta: dict[str, Any], prepared: Any) -> None:
    """Group and extra_info of a cell's benchmark: enough for `tsbench report` to match it with the store."""
    from tsbench_core.pipeline import model_columns
    from tsbench_core.steps.artifacts import Artifact

    train = cell.prune.train
    columns = {**model_columns(Artifact(cell.prune.key, Path(), meta)), **prepared.columns}
    precision = "fp32" if cell.quantize is None else "int8"
    benchmark.group = (f"{train.dataset.plugin} H{train.pred_len} {train.model} {cell.runtime} {precision} "
                       f"bs{cell.batch_size}")
    benchmark.extra_info.update({
        "tsbench_spec": cell.spec_name,
        "cell_key": cell.key,
        "label": cell.label(),
        "dataset": train.dataset.plugin,
        "pred_len": train.pred_len,
        "model": train.model,
        "seed": train.seed,
        "pruner": cell.prune.pruner,
        "target_sparsity": cell.prune.sparsity,
        "quantize": cell.quantize.method if cell.quantize is not None else None,
        "achieved_sparsity": columns["achieved_sparsity"],
        "macs_effective": columns["macs_effective"],
        "mse": columns["mse"],  # an INT8 cell's: measured through the runtime, as `tsbench run` stores it
        "runtime": cell.runtime,
        "batch_size": cell.batch_size,
        "threads": prepared.threads,
        "prepare_s": prepared.prepare_s,
        "max_abs_err_vs_torch": columns["max_abs_err_vs_torch"],
        "rel_err_vs_torch": columns.get("rel_err_vs_torch"),
    })
