"""Precomputed teacher outputs (``kind: teacher-outputs``): rows served by sample id, and a file made for
other samples or by another teacher refused with both hashes named."""

import json

import pytest
import torch
from safetensors.torch import save

import zoo
from zoo import export, outputs, registry, store

IDS = ["a", "b", "c", "d"]
TEACHER_SHA = "1" * 64
INPUT = {"reader": "ids of a sample list", "type": "view", "shape": ["N", 3], "call": "read_outputs(src, ids)"}


def test_rows_come_back_by_sample_id_in_any_order(tmp_path):
    table, logits = torch.arange(12.0).view(4, 3), torch.arange(8.0).view(4, 2)
    named = {"features": table, "logits": logits}
    path = outputs.write_outputs(tmp_path / "t.safetensors", named, IDS, "zoo:teacher", TEACHER_SHA)
    picked = store.read_outputs(str(path), ["c", "a"])
    assert torch.equal(picked.outputs["features"], table[[2, 0]]) and torch.equal(
        picked.outputs["logits"], logits[[2, 0]]
    )
    assert picked.ids == ["c", "a"] and picked.samples_sha256 == outputs.ids_sha256(["c", "a"])
    assert torch.equal(store.read_outputs(str(path), IDS, teacher_sha256=TEACHER_SHA).outputs["features"], table)


def test_other_samples_or_another_teacher_are_refused_naming_both_hashes(tmp_path):
    path = outputs.write_outputs(tmp_path / "t.safetensors", {"f": torch.zeros(4, 3)}, IDS, "zoo:teacher", TEACHER_SHA)
    file_sha, asked_sha = outputs.ids_sha256(IDS), outputs.ids_sha256(["a", "e"])
    message = rf"made for other samples: 1 of the 2 requested ids .*'e'.*file samples sha256 {file_sha}, requested {asked_sha}"  # noqa: E501
    with pytest.raises(ValueError, match=message):
        store.read_outputs(str(path), ["a", "e"])
    with pytest.raises(ValueError, match=rf"another teacher: made by zoo:teacher \(sha256 {TEACHER_SHA}\), expected "
                       rf"sha256 {'2' * 64}"):  # fmt: skip
        store.read_outputs(str(path), IDS, teacher_sha256="2" * 64)


def test_a_tampered_or_foreign_file_is_refused(tmp_path):
    tensors, metadata = outputs.to_tensors({"f": torch.zeros(4, 3)}, IDS, "zoo:teacher", TEACHER_SHA)
    meta = json.loads(metadata[outputs.OUTPUTS_KEY])
    meta["ids"] = ["a", "b", "c", "x"]  # rows relabelled after the fact
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(save(tensors, metadata={outputs.OUTPUTS_KEY: json.dumps(meta)}))
    with pytest.raises(ValueError, match="its ids do not hash to the samples sha256 it records"):
        store.read_outputs(str(bad))
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save({"w": torch.zeros(2)}))
    with pytest.raises(ValueError, match="is not a teacher-outputs file"):
        store.read_outputs(str(plain))
    with pytest.raises(ValueError, match="produced 1 non-finite outputs"):
        outputs.to_tensors({"f": torch.tensor([[float("nan")], [0.0], [0.0], [0.0]])}, IDS, "t", TEACHER_SHA)
    with pytest.raises(ValueError, match=r"every output needs one row per id \(4 ids\); got shapes \{'g': \(3, 1\)\}"):
        outputs.to_tensors({"f": torch.zeros(4, 1), "g": torch.zeros(3, 1)}, IDS, "t", TEACHER_SHA)


def test_a_teacher_outputs_entry_loads_verifies_and_serves_rows(scratch_zoo):
    table = torch.randn(4, 3)
    meta = {"method": "Toy", "task": "teacher outputs", "input": INPUT}
    path = export.export_outputs({"features": table}, IDS, "zoo:teacher", TEACHER_SHA, "toy-outputs", meta,
                                 scratch_zoo["weights"])  # fmt: skip
    loaded = zoo.load("toy-outputs")
    assert isinstance(loaded, outputs.TeacherOutputs) and loaded.ids == IDS
    assert torch.equal(loaded.outputs["features"], table)
    assert torch.equal(store.read_outputs("zoo:toy-outputs", ["d"]).outputs["features"], table[[3]])
    assert store.check_entry(registry.get("toy-outputs")) == path
    path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x00\x00")  # a flipped byte: sha256 fails first
    with pytest.raises(ValueError, match="failed sha256"):
        store.read_outputs("zoo:toy-outputs")
