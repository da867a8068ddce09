"""Artifact integrity: checksums in every sidecar, verified before any load; damage is moved aside and rebuilt."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile

import pytest
import torch
from tsbench_testing import tiny_spec

from tsbench_core.steps.artifacts import (
    DAMAGED_DIR,
    WEIGHTS_FILE,
    DamagedArtifact,
    find_artifact,
    load_weights,
    save_artifact,
    usable_artifact,
)
from tsbench_core.store import Store


def zero_a_tensor_record(path) -> None:
    """Zero bytes inside the first tensor record of a torch checkpoint, leaving the zip structure intact."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        record = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 64)
    name_len, extra_len = struct.unpack("<HH", data[record.header_offset + 26 : record.header_offset + 30])
    start = record.header_offset + 30 + name_len + extra_len  # the local header's own extra field
    data[start : start + 64] = bytes(64)
    path.write_bytes(bytes(data))


@pytest.fixture
def artifact(tmp_path):
    return save_artifact(tmp_path, "k1", {"w": torch.arange(1.0, 257.0).reshape(16, 16)}, {"kind": "dense"})


def test_sidecar_records_sha256_and_size_of_the_weights_file(artifact):
    data = artifact.weights.read_bytes()
    sidecar = json.loads(artifact.weights.with_suffix(".json").read_text())
    assert sidecar[WEIGHTS_FILE] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert torch.equal(load_weights(artifact)["w"], torch.arange(1.0, 257.0).reshape(16, 16))


@pytest.mark.parametrize("damage", ["zeroed-record", "junk", "truncated"])
def test_damaged_weights_are_never_loaded_and_are_moved_aside(tmp_path, artifact, damage, capsys):
    if damage == "zeroed-record":
        zero_a_tensor_record(artifact.weights)
        assert torch.load(artifact.weights, weights_only=True)["w"][0, 0] == 0  # torch alone loads it silently
    elif damage == "junk":
        artifact.weights.write_bytes(b"not a checkpoint" * 10)
    else:
        artifact.weights.write_bytes(artifact.weights.read_bytes()[:-100])
    with pytest.raises(DamagedArtifact) as raised:
        load_weights(find_artifact(tmp_path, "k1"))
    assert "\n" not in str(raised.value) and str(artifact.weights) in str(raised.value)
    assert "weights_only" not in str(raised.value)

    assert usable_artifact(tmp_path, "k1") is None
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and str(artifact.weights) in warning[0] and "rebuilding" in warning[0]
    assert find_artifact(tmp_path, "k1") is None
    assert sorted(p.suffix for p in (tmp_path / DAMAGED_DIR).iterdir()) == [".json", ".pt"]


def test_legacy_sidecar_without_checksum_is_adopted_when_its_zip_crcs_match(tmp_path, artifact):
    sidecar = artifact.weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    del meta[WEIGHTS_FILE]
    sidecar.write_text(json.dumps(meta))
    adopted = usable_artifact(tmp_path, "k1")
    assert adopted is not None
    recorded = json.loads(sidecar.read_text())[WEIGHTS_FILE]
    assert recorded["sha256"] == hashlib.sha256(artifact.weights.read_bytes()).hexdigest()
    assert "adopted_at" in recorded


def test_legacy_sidecar_with_a_crc_mismatch_is_treated_as_damage(tmp_path, artifact, capsys):
    sidecar = artifact.weights.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    del meta[WEIGHTS_FILE]
    sidecar.write_text(json.dumps(meta))
    zero_a_tensor_record(artifact.weights)
    assert usable_artifact(tmp_path, "k1") is None
    assert "CRC-32" in capsys.readouterr().err


def test_a_run_rebuilds_a_damaged_dense_checkpoint_from_its_inputs(write_spec, tmp_path, registry, capsys):
    from tsbench_core.runner import run
    from tsbench_core.spec import load_spec

    db = tmp_path / "store" / "r.db"
    spec = load_spec(write_spec(tiny_spec(name="damaged", sparsities=[0.5])), registry)
    with Store(db) as store:
        assert run(spec, store, registry=registry).statuses == {"ok": 2}
    dense_key = next(p.stem for p in (db.parent / "artifacts").glob("*.json")
                     if json.loads(p.read_text())["kind"] == "dense")
    weights = db.parent / "artifacts" / f"{dense_key}.pt"
    original = torch.load(weights, weights_only=True)
    zero_a_tensor_record(weights)
    capsys.readouterr()

    grown = load_spec(write_spec(tiny_spec(name="damaged", sparsities=[0.5, 0.7])), registry)
    with Store(db) as store:
        summary = run(grown, store, registry=registry)
        assert summary.statuses == {"ok": 1} and summary.cached == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(warnings) == 1 and str(weights) in warnings[0]
    rebuilt = torch.load(weights, weights_only=True)  # trained again from the same inputs and seed
    assert rebuilt.keys() == original.keys()
    assert all(torch.equal(rebuilt[name], original[name]) for name in original)
