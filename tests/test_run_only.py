"""``tsbench run --only``: a selection that names nothing, or glues two fields into one option, is refused."""

from __future__ import annotations

import json

from tsbench_testing import tiny_spec

from tsbench_core.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_two_fields_in_one_option_are_refused_with_the_right_spelling(write_spec, tmp_path, capsys):
    spec = write_spec(tiny_spec(seeds=[0, 1]))
    store = tmp_path / "s" / "results.db"
    code, _, err = run_cli(["run", str(spec), "--dry-run", "--store", str(store), "--only", "model=dlinear,seed=1"],
                           capsys)
    assert code == 2
    assert "give one --only per field, e.g. --only model=dlinear --only seed=1" in err
    assert "Traceback" not in err and not store.exists()


def test_a_value_no_cell_has_is_refused_naming_the_values_there_are(write_spec, tmp_path, capsys):
    spec = write_spec(tiny_spec(seeds=[0, 1]))
    store = tmp_path / "s" / "results.db"
    code, _, err = run_cli(["run", str(spec), "--dry-run", "--store", str(store), "--only", "seed=7,1",
                            "--only", "model=dlinaer"], capsys)
    assert code == 2
    assert "--only seed=7: no cell of the given specs has seed '7' (they have: 0, 1)" in err
    assert "--only model=dlinaer: no cell of the given specs has model 'dlinaer' (they have: dlinear)" in err
    assert not store.exists()


def test_a_selection_across_fields_keeps_the_cells_having_all_of_them(write_spec, tmp_path, capsys):
    spec = write_spec(tiny_spec(seeds=[0, 1], sparsities=[0.3, 0.6]))
    store = str(tmp_path / "results.db")
    code, out, _ = run_cli(["run", str(spec), "--dry-run", "--json", "--store", store], capsys)
    every = json.loads(out)["specs"][0]["cells"]
    code, out, _ = run_cli(["run", str(spec), "--dry-run", "--json", "--store", store, "--only", "seed=1",
                            "--only", "pruner=magnitude"], capsys)
    assert code == 0
    chosen = json.loads(out)["specs"][0]["cells"]
    expected = [c for c in every if " seed 1 " in c["label"] and " magnitude@" in c["label"]]
    assert [c["key"] for c in chosen] == [c["key"] for c in expected] and len(expected) == 2


def test_sparsity_selects_by_target_in_any_spelling(write_spec, tmp_path, capsys):
    spec = write_spec(tiny_spec(sparsities=[0.3, 0.6, 0.9]))
    store = str(tmp_path / "results.db")
    code, out, _ = run_cli(["run", str(spec), "--dry-run", "--json", "--store", store, "--only", "sparsity=0.60,.9"],
                           capsys)
    assert code == 0
    labels = [c["label"] for c in json.loads(out)["specs"][0]["cells"]]
    assert len(labels) == 2
    assert any("magnitude@0.6 " in x for x in labels) and any("magnitude@0.9 " in x for x in labels)
    code, _, err = run_cli(["run", str(spec), "--dry-run", "--store", store, "--only", "sparsity=0.5"], capsys)
    assert code == 2 and "no cell of the given specs has sparsity '0.5' (they have: 0, 0.3, 0.6, 0.9)" in err
    code, _, err = run_cli(["run", str(spec), "--dry-run", "--store", store, "--only", "sparsity=half"], capsys)
    assert code == 2 and "sparsity 'half' is not a number" in err
