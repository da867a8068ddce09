"""A pruning entry's own ``runtimes`` and ``batch_sizes``: where its cells run, their dense references, errors."""

from __future__ import annotations

from itertools import product

import pytest
from tsbench_testing import tiny_spec

from tsbench_core.cells import DENSE, cell_fields, expand
from tsbench_core.spec import SpecProblems, load_spec

RUNTIMES = [{"plugin": "torch-eager"}, {"plugin": "onnxruntime"}, {"plugin": "deepsparse"}]


def targets(cells, **where):
    """(runtime, batch size) of the cells whose fields equal ``where``."""
    return sorted((c.runtime, c.batch_size) for c in cells
                  if all(cell_fields(c)[k] == v for k, v in where.items()))


def test_entries_run_only_where_they_say_and_every_cell_has_its_dense_reference(write_spec, registry):
    spec = tiny_spec(
        pruning=[
            {"pruner": "magnitude", "sparsities": [0.3, 0.6], "runtimes": ["torch-eager", "deepsparse"],
             "batch_sizes": [4]},
            {"pruner": "random", "sparsities": [0.5], "batch_sizes": [1]},
            {"pruner": "magnitude", "sparsities": [0.9], "runtimes": ["onnxruntime"]},
        ],
        runtimes=RUNTIMES,
        timing={"batch_sizes": [4, 1], "warmup": 1, "repeats": 2, "threads": 1},
    )
    cells = expand(load_spec(write_spec(spec), registry), registry)
    every_runtime = ["deepsparse", "onnxruntime", "torch-eager"]
    assert targets(cells, pruner=DENSE) == sorted(product(every_runtime, [4, 1]))
    assert targets(cells, pruner="magnitude") == sorted(
        [*list(product(["torch-eager", "deepsparse"], [4])) * 2, *product(["onnxruntime"], [4, 1])])
    assert targets(cells, pruner="random") == sorted(product(every_runtime, [1]))
    assert len(cells) == 6 + 2 * 2 + 2 + 3
    keys = {c.key for c in cells}
    assert all(c.dense_key in keys for c in cells)


def test_dense_int8_cells_run_where_their_quantized_entries_run(write_spec, registry):
    quantize = {"method": "static-int8", "calibration_batches": 2}
    spec = tiny_spec(
        pruning=[{"pruner": "magnitude", "sparsities": [0.9], "quantize": quantize, "runtimes": ["deepsparse"],
                  "batch_sizes": [4]},
                 {"pruner": "random", "sparsities": [0.9], "quantize": quantize, "runtimes": ["onnxruntime"],
                  "batch_sizes": [4]}],
        runtimes=RUNTIMES,
        timing={"batch_sizes": [4, 1], "warmup": 1, "repeats": 2, "threads": 1},
    )
    cells = expand(load_spec(write_spec(spec), registry), registry)
    assert targets(cells, pruner=DENSE, quantize="static-int8") == [("deepsparse", 4), ("onnxruntime", 4)]
    assert targets(cells, pruner=DENSE, quantize="none") == sorted(
        product(["torch-eager", "onnxruntime", "deepsparse"], [4, 1]))


def test_entries_without_the_options_keep_their_keys(write_spec, registry):
    plain = load_spec(write_spec(tiny_spec(sparsities=[0.5])), registry)
    assert set(plain.pruning[0].model_dump(mode="json")) == {"pruner", "sparsities", "params", "fine_tune"}
    spelled = tiny_spec(sparsities=[0.5])
    spelled["pruning"][0] |= {"runtimes": ["torch-eager"], "batch_sizes": [4]}  # the same cells, named
    named = expand(load_spec(write_spec(spelled, "named.json"), registry), registry)
    default = expand(plain, registry)
    # the spec hash differs (the file says more) but no cell key does: keys hold the spec name, not its hash
    assert [c.key for c in named] == [c.key for c in default]


def test_adding_seeds_keeps_the_keys_of_the_seeds_already_run(write_spec, registry):
    one = expand(load_spec(write_spec(tiny_spec(seeds=[2021])), registry), registry)
    three = expand(load_spec(write_spec(tiny_spec(seeds=[2021, 2022, 2023]), "three.json"), registry), registry)
    assert {c.key for c in one} < {c.key for c in three}
    assert len(three) == 3 * len(one)


def test_runtimes_and_batch_sizes_outside_the_spec_are_located(write_spec, registry):
    spec = tiny_spec(pruning=[{"pruner": "magnitude", "sparsities": [0.5], "runtimes": ["torch-eager", "deepsprse"],
                               "batch_sizes": [4, 8]}])
    path = write_spec(spec)
    with pytest.raises(SpecProblems) as err:
        load_spec(path, registry)
    problems = err.value.problems
    assert ("pruning[0].runtimes[1]: 'deepsprse' is not one of the spec's runtimes (torch-eager); add it to "
            "'runtimes' or remove it here") in problems
    assert any(p.startswith("pruning[0].batch_sizes[1]: 8 is not one of timing.batch_sizes (4)") for p in problems)
    assert all(line.startswith(f"{path}: ") for line in str(err.value).splitlines())
