"""The small spec of the report and pytest-plugin tests."""

from __future__ import annotations

from typing import Any

SPEC_NAME = "report-tiny"


def report_spec(name: str = SPEC_NAME, **overrides: Any) -> dict[str, Any]:
    """Synthetic series, DLinear and a tiny Transformer, one training epoch of a few batches, magnitude 50 %,
    torch eager on one thread with 1 warmup call and 3 timed calls."""
    spec: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "datasets": [{"plugin": "synthetic", "params": {"length": 400, "n_vars": 2, "periods": [12], "seed": 0},
                      "seq_len": 24, "label_len": 12, "pred_len": [8]}],
        "models": [
            {"plugin": "dlinear"},
            {"plugin": "transformer",
             "params": {"d_model": 8, "n_heads": 2, "e_layers": 1, "d_layers": 1, "d_ff": 16}},
        ],
        "training": {"epochs": 1, "batch_size": 16, "lr": 0.001, "max_train_batches": 3, "max_eval_batches": 3},
        "pruning": [{"pruner": "magnitude", "sparsities": [0.5]}],
        "runtimes": [{"plugin": "torch-eager"}],
        "timing": {"batch_sizes": [4], "warmup": 1, "repeats": 3, "threads": 1, "verify_batches": 1},
    }
    spec.update(overrides)
    return spec


def markdown_table_rows(markdown: str, title_word: str) -> list[list[str]]:
    """The body cells of the first report table whose bold title contains ``title_word``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("**") and title_word in line)
    out = []
    for line in lines[start + 4:]:
        if not line.startswith("|"):
            break
        out.append([c.strip() for c in line.strip("|").split("|")])
    return out
