"""pytest plugin: every timing cell of a tsbench spec as a pytest-benchmark benchmark.

    pytest --tsbench-spec specs/quickstart.json --benchmark-json out.json

Each (dataset, horizon, model, pruner, sparsity, runtime, batch size) cell becomes one test item whose id reads
like ``synthetic-H24-dlinear-magnitude@0.5-onnxruntime-bs32``. The item prepares the cell exactly as
``tsbench run`` does — dense training and pruning through the pipeline (checkpoints cached under
``--tsbench-store``, shared with ``tsbench run --store DIR/results.db``), the runtime session built from the
pruned model, the correctness gate against torch eager — and only then times ``session.run`` with the spec's
warmup and repeats (``benchmark.pedantic``), or with pytest-benchmark's own calibration given
``--tsbench-calibrate``. A gate failure fails the item; an unavailable runtime skips it.

Nothing heavy (torch, the registry) is imported unless ``--tsbench-spec`` is given.
"""

from __future__ import annotations

import os
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


def cell_id(cell: Any) -> str:
    """A readable, shell-friendly id: ``dataset-H<horizon>-model-pruner[@sparsity]-runtime-bs<batch>``."""
    train = cell.prune.train
    pruner = cell.prune.pruner if cell.prune.pruner == "dense" else f"{cell.prune.pruner}@{cell.prune.sparsity:g}"
    return f"{train.dataset.plugin}-H{train.pred_len}-{train.model}-{pruner}-{cell.runtime}-bs{cell.batch_size}"


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
        seen: dict[str, int] = {}
        for cell in expand(spec, registry):
            name = cell_id(cell)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:  # two runtime entries with different params: keep ids unique
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
    import copy

    import torch

    from tsbench_core.errors import CellError, RuntimeUnavailable, TsbenchError
    from tsbench_core.pipeline import load_model, load_splits, pruned_artifact
    from tsbench_core.protocols import availability_of
    from tsbench_core.steps.measure import static_batches
    from tsbench_core.verify import verify_session

    ws = state.workspace()
    runtime = ws.plugins().records["runtime"][cell.runtime].plugin
    availability = availability_of(runtime)
    if not availability.available:
        pytest.skip(f"runtime {cell.runtime!r} is unavailable: {availability.reason}")
    timing = cell.timing
    problem: str | None = None
    try:
        artifact = pruned_artifact(ws, cell.prune)
        splits = load_splits(ws, cell.prune.train)
        model = load_model(ws, cell.prune, artifact, splits).cpu().eval()
        threads = timing.threads or os.cpu_count() or 1
        batches = static_batches(splits.test, cell.batch_size, timing.verify_batches)
        example = tuple(torch.from_numpy(a) for a in batches[0])
        params = ws.params("runtime", cell.runtime, cell.runtime_params)
        session = runtime.prepare(copy.deepcopy(model), example, params, threads=threads,
                                  workdir=ws.artifacts / "runtime" / cell.key)
    except RuntimeUnavailable as exc:
        pytest.skip(str(exc))
    except TsbenchError as exc:  # a failed step, or a user mistake such as a missing data file
        problem = str(exc)
    if problem is not None:  # failed outside the except block: no chained traceback in the report
        pytest.fail(f"{cell.label()}: {problem}", pytrace=False)
    try:
        try:
            max_err = verify_session(session, model, batches, atol=timing.atol, rtol=timing.rtol)
        except CellError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(f"{cell.label()}: {problem}", pytrace=False)
        _describe(benchmark, cell, artifact.meta, threads, max_err)
        inputs = list(batches[0])
        if state.calibrate:
            benchmark(session.run, inputs)
        else:
            benchmark.pedantic(session.run, args=(inputs,), rounds=timing.repeats, warmup_rounds=timing.warmup,
                               iterations=1)
    finally:
        session.close()


def _describe(benchmark: Any, cell: Any, meta: dict[str, Any], threads: int, max_err: float) -> None:
    """Group and extra_info of a cell's benchmark: enough for `tsbench report` to match it with the store."""
    from tsbench_core.pipeline import model_columns
    from tsbench_core.steps.artifacts import Artifact

    train = cell.prune.train
    columns = model_columns(Artifact(cell.prune.key, Path(), meta))
    benchmark.group = f"{train.dataset.plugin} H{train.pred_len} {train.model} {cell.runtime} bs{cell.batch_size}"
    benchmark.extra_info.update({
        "tsbench_spec": cell.spec_name,
        "cell_key": cell.key,
        "label": cell.label(),
        "dataset": train.dataset.plugin,
        "pred_len": train.pred_len,
        "model": train.model,
        "pruner": cell.prune.pruner,
        "target_sparsity": cell.prune.sparsity,
        "achieved_sparsity": columns["achieved_sparsity"],
        "macs_effective": columns["macs_effective"],
        "mse": columns["mse"],
        "runtime": cell.runtime,
        "batch_size": cell.batch_size,
        "threads": threads,
        "max_abs_err_vs_torch": max_err,
    })
