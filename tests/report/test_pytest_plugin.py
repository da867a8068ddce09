"""The pytest plugin: spec cells as pytest-benchmark benchmarks, through the same pipeline and correctness gate
as `tsbench run` (run in-process with pytester, reusing the checkpoints of the shared small run)."""

from __future__ import annotations

import ast
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from report_helpers import SPEC_NAME, report_spec

from tsbench_core.report import write_report

pytest_plugins = ["pytester"]

EXPECTED_IDS = {
    "synthetic-H8-dlinear-seed0-dense-torch-eager-bs4",
    "synthetic-H8-dlinear-seed0-magnitude-s0.5-torch-eager-bs4",
    "synthetic-H8-transformer-seed0-dense-torch-eager-bs4",
    "synthetic-H8-transformer-seed0-magnitude-s0.5-torch-eager-bs4",
}


def plugin_args() -> list[str]:
    """``-p tsbench_core.pytest_plugin`` unless the pytest11 entry point already loads it."""
    installed = any(ep.value.startswith("tsbench_core.pytest_plugin")
                    for ep in metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "tsbench_core.pytest_plugin"]


def run_spec(pytester: pytest.Pytester, store: Path, spec: dict[str, Any], *extra: str) -> pytest.RunResult:
    path = pytester.path / f"{spec['name']}.json"
    path.write_text(json.dumps(spec))
    return pytester.runpytest_inprocess(*plugin_args(), "--tsbench-spec", str(path), "--tsbench-store",
                                        str(store), "-p", "no:cacheprovider", *extra)


def test_cells_become_benchmarks_with_valid_json(pytester: pytest.Pytester, report_store: Path,
                                                 stored_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_spec(pytester, report_store.parent, report_spec(), f"--benchmark-json={out}", "-v")
    result.assert_outcomes(passed=4)
    doc = json.loads(out.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    names = {b["name"] for b in doc["benchmarks"]}
    assert names == EXPECTED_IDS
    stored = {r["cell_key"]: r for r in stored_rows}
    for bench in doc["benchmarks"]:
        stats = bench["stats"]
        assert stats["rounds"] == 3 and stats["iterations"] == 1  # the spec's repeats, one call per round
        assert 0 < stats["min"] <= stats["median"] <= stats["max"]
        info = bench["extra_info"]
        # the same cells as `tsbench run`: same content keys, same pruned model, gate passed
        row = stored[info["cell_key"]]
        assert (info["model"], info["pruner"], info["runtime"]) == (row["model"], row["pruner"], row["runtime"])
        assert info["achieved_sparsity"] == row["achieved_sparsity"] and info["mse"] == row["mse"]
        assert info["max_abs_err_vs_torch"] <= 1e-3
        assert bench["group"] == f"synthetic H8 {info['model']} torch-eager fp32 bs4"
    # nothing was trained again: the run's checkpoints were found under --tsbench-store
    assert len(list((report_store.parent / "artifacts").glob("*"))) > 0
    # and `tsbench report` shows the pytest-benchmark medians beside the store's
    report_out = tmp_path / "report"
    written = write_report(report_store, SPEC_NAME, report_out, [out])
    assert report_out / "plots" / "pytest_benchmark.png" in written
    markdown = (report_out / "report.md").read_text(encoding="utf-8")
    for name in EXPECTED_IDS:
        assert f"| {name} |" in markdown


def test_compare_across_runs(pytester: pytest.Pytester, report_store: Path, tmp_path: Path) -> None:
    """Two saved runs of the same spec compare by benchmark name, as pytest-benchmark does for any test."""
    spec = report_spec(models=[{"plugin": "dlinear"}])
    storage = f"--benchmark-storage=file://{tmp_path / 'saved'}"
    first = run_spec(pytester, report_store.parent, spec, storage, "--benchmark-autosave")
    first.assert_outcomes(passed=2)
    second = run_spec(pytester, report_store.parent, spec, storage, "--benchmark-compare=0001")
    second.assert_outcomes(passed=2)
    second.stderr.fnmatch_lines(["*Comparing against benchmarks from: *0001_*"])
    second.stdout.fnmatch_lines(["*synthetic-H8-dlinear-seed0-dense-torch-eager-bs4 (0001*"])
    second.stdout.fnmatch_lines(["*synthetic-H8-dlinear-seed0-dense-torch-eager-bs4 (NOW)*"])


@pytest.mark.filterwarnings("ignore:Not saving anything")
def test_gate_failure_fails_the_item_untimed(pytester: pytest.Pytester, report_store: Path, tmp_path: Path,
                                             report_registry, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime_cls = type(report_registry.runtimes["torch-eager"])
    real_prepare = runtime_cls.prepare

    class Off:
        """A session whose outputs are off by 0.5: the gate must refuse to time it."""

        def __init__(self, inner: Any) -> None:
            self.inner, self.info = inner, inner.info

        def run(self, inputs: Any) -> Any:
            return self.inner.run(inputs) + 0.5

        def close(self) -> None:
            self.inner.close()

    monkeypatch.setattr(runtime_cls, "prepare", lambda self, *a, **k: Off(real_prepare(self, *a, **k)))
    out = tmp_path / "bench.json"
    result = run_spec(pytester, report_store.parent, report_spec(models=[{"plugin": "dlinear"}]),
                      f"--benchmark-json={out}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*correctness gate failed for runtime 'torch-eager'*max abs error 0.5*"])
    assert not out.exists()  # pytest-benchmark saves nothing: no cell was timed


def test_unavailable_runtime_is_skipped(pytester: pytest.Pytester, report_store: Path, report_registry) -> None:
    unavailable = [name for name, plugin in report_registry.runtimes.items()
                   if hasattr(plugin, "availability") and not plugin.availability().available]
    if not unavailable:
        pytest.skip("every runtime is available on this machine")
    spec = report_spec(models=[{"plugin": "dlinear"}], runtimes=[{"plugin": unavailable[0]}])
    result = run_spec(pytester, report_store.parent, spec, "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([f"*runtime '{unavailable[0]}' is unavailable*"])


def test_invalid_spec_is_a_located_collection_error(pytester: pytest.Pytester, report_store: Path) -> None:
    spec = report_spec(models=[{"plugin": "dlinear", "params": {"no_such_option": 1}}])
    result = run_spec(pytester, report_store.parent, spec)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*report-tiny.json: models[[]0[]].params.no_such_option: *"])


def test_missing_spec_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(*plugin_args(), "--tsbench-spec", "nope.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tsbench-spec nope.json: no such file*"])


def test_inert_without_a_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest_inprocess(*plugin_args())
    result.assert_outcomes(passed=1)


def test_import_is_light() -> None:
    """Module-level imports of the plugin are standard library and pytest only: torch, the registry and the
    pipeline load when a spec is collected, not at every pytest start-up."""
    import tsbench_core.pytest_plugin as plugin

    tree = ast.parse(Path(plugin.__file__).read_text(encoding="utf-8"))
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert top <= {"__future__", "os", "pathlib", "typing", "pytest"}, top
