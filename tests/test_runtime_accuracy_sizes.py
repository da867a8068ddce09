"""``timing.runtime_accuracy`` as a list: a runtime's own test accuracy only at those batch sizes."""

from __future__ import annotations

import json

import pytest
from tsbench_testing import tiny_spec

from tsbench_core.runner import run
from tsbench_core.spec import SpecProblems, load_spec, parse_spec
from tsbench_core.store import Store


def test_accuracy_through_the_runtime_only_at_the_listed_batch_sizes(registry, tmp_path) -> None:
    raw = tiny_spec(name="accuracy-at", pruning=[])
    raw["timing"] |= {"batch_sizes": [4, 2], "runtime_accuracy": [4]}
    spec = parse_spec(json.dumps(raw), "s.json")
    with Store(tmp_path / "r.db") as db:
        run(spec, db, registry=registry)
        rows = {row["batch_size"]: row for row in db.rows()}
    assert sorted(rows) == [2, 4]
    measured, copied = rows[4], rows[2]
    assert measured["accuracy_from"] == "runtime"
    assert measured["mse"] == pytest.approx(measured["runtime_info"]["torch_metrics"]["mse"], rel=1e-5)
    assert copied["accuracy_from"] == "torch" and copied["mse"] == copied["runtime_info"]["torch_metrics"]["mse"]


def test_listed_batch_sizes_must_be_timed(write_spec, registry) -> None:
    raw = tiny_spec()
    raw["timing"]["runtime_accuracy"] = [4, 8]
    with pytest.raises(SpecProblems) as err:
        load_spec(write_spec(raw), registry)
    assert any(p.startswith("timing: ") and "runtime_accuracy: batch sizes [8] are not among batch_sizes [4]" in p
               for p in err.value.problems)
    raw["timing"]["runtime_accuracy"] = True  # the two plain forms keep working, and keep the cell keys
    assert load_spec(write_spec(raw, "plain.json"), registry).timing.accuracy_at(4)
