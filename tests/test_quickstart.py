"""The quickstart spec at reduced size: every cell runs, prunes to its target and is verified and timed."""

from __future__ import annotations

import json

from tsbench_testing import REPO

from tsbench_core.runner import run
from tsbench_core.spec import parse_spec, validate_against
from tsbench_core.store import Store


def test_quickstart_reduced(tmp_path, registry):
    raw = json.loads((REPO / "specs" / "quickstart.json").read_text())
    raw["training"].update(epochs=1, max_train_batches=6)
    for entry in raw["pruning"]:
        entry["fine_tune"] = {"epochs": 1, "lr": 0.0005, "max_train_batches": 3}
    raw["runtimes"] = [{"plugin": "torch-eager"}, {"plugin": "onnxruntime"}]
    raw["timing"].update(warmup=1, repeats=3)
    spec = parse_spec(json.dumps(raw), "quickstart.json")
    validate_against(spec, registry, "quickstart.json")
    with Store(tmp_path / "r.db") as store:
        summary = run(spec, store, registry=registry)
        rows = store.rows("quickstart")
    # 2 models x (dense + its fine-tuning control + 3 sparsities) x 2 runtimes x 1 batch size
    assert summary.total == len(rows) == 20
    assert len([r for r in rows if r["pruner"] == "dense" and r["fine_tuned"]]) == 4
    assert {r["status"] for r in rows} == {"ok"}, [r["error"] for r in rows if r["error"]]
    for row in rows:
        assert abs(row["achieved_sparsity"] - row["target_sparsity"]) < 0.02
        assert row["mse"] > 0 and row["latency_ms_median"] > 0 and row["max_abs_err_vs_torch"] < 1e-3
        assert row["params_nonzero"] <= row["params_total"] and row["macs_effective"] <= row["macs_dense"]
        if row["pruner"] != "dense":
            assert row["speedup_vs_dense"] > 0
    high = [r for r in rows if r["target_sparsity"] == 0.9]
    dense = [r for r in rows if r["pruner"] == "dense"]
    assert min(r["params_total"] - r["params_nonzero"] for r in high) > max(
        r["params_total"] - r["params_nonzero"] for r in dense)
