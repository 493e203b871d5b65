"""The zoo: export, verified loading, bad weights refused with clear messages, cards."""

from __future__ import annotations

import os
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ToyData, ToyDistill, ToyNet
from safetensors.torch import save_file

import cli
import zoo
from modules.core import Teacher
from zoo import cards, export, registry, store

META = {"method": "Toy", "task": "classification"}
GRAPHSET = "datamodules.graphs.stored.GraphSet"


@pytest.fixture
def toy_ckpt(tmp_path):
    module = ToyDistill(student=ToyNet(), teacher=ToyNet())
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=ToyData())
    path = tmp_path / "toy.ckpt"
    trainer.save_checkpoint(path)
    return path, module


def test_export_then_load_round_trips_bit_exactly(scratch_zoo, toy_ckpt):
    ckpt, module = toy_ckpt
    path = export.export(ckpt, "toy-student", META, scratch_zoo["weights"])
    sha = store.sha256_file(path)
    assert path.name == f"toy-student-{sha[:8]}.safetensors"
    assert zoo.list() == ["toy-student"] and zoo.get("toy-student").sha256 == sha
    loaded = zoo.load("toy-student")
    assert isinstance(loaded, ToyNet) and not loaded.training
    for key, value in module.student.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    tensors, _ = store.read_safetensors(path)
    assert not [k for k in tensors if "teacher" in k]
    assert set(tensors) == set(module.student.state_dict())
    # zoo:NAME works wherever weights are taken: as a teacher, and as a student's init.
    assert Teacher(weights="zoo:toy-student").manifest["sha256"] == sha
    assert torch.equal(ToyDistill(init_weights="zoo:toy-student").student.head.weight, module.student.head.weight)


def test_unknown_name_lists_close_names(scratch_zoo, toy_ckpt):
    export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    with pytest.raises(KeyError, match="unknown zoo entry 'toy-studnet'; did you mean toy-student"):
        zoo.load("toy-studnet")


def test_sha_mismatch_names_both_hashes(scratch_zoo, toy_ckpt):
    path = export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    good = store.sha256_file(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = store.sha256_file(path)
    with pytest.raises(ValueError, match=f"failed sha256: expected {good}, got {bad}"):
        zoo.load("toy-student")
    assert cli.main(["zoo", "verify", "toy-student"]) == 1


def test_truncated_and_foreign_files_are_refused(tmp_path):
    save_file({"w": torch.ones(64)}, tmp_path / "ok.safetensors")
    whole = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(whole[:-10])
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        store.resolve(str(tmp_path / "cut.safetensors"))
    (tmp_path / "tiny.safetensors").write_bytes(b"abc")
    with pytest.raises(ValueError, match="shorter than the 8-byte header"):
        store.resolve(str(tmp_path / "tiny.safetensors"))
    (tmp_path / "text.safetensors").write_bytes(b"hello world, not a tensor file at all")
    with pytest.raises(ValueError, match="not a complete safetensors file"):
        store.resolve(str(tmp_path / "text.safetensors"))


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_weights_are_refused_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Boom(), protocol=4))
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pt")
    for name in ("evil.pt", "legacy.pt"):
        with pytest.raises(ValueError, match="refuses to unpickle"):
            Teacher(ToyNet(), weights=str(tmp_path / name))
    assert not (tmp_path / "PWNED").exists()


def test_weights_for_another_shape_name_the_tensors(scratch_zoo, toy_ckpt):
    export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    with pytest.raises(
        ValueError, match=r"shape mismatch: .*body\.0\.weight: weights \(16, 8\) vs model \(32, 8\).*head\.weight"
    ):
        ToyDistill(student=ToyNet(hidden=32), init_weights="zoo:toy-student")


def test_spec_outside_the_allow_list_is_refused_before_import(tmp_path, monkeypatch):
    """A spec may only build @exportable classes of the project's packages: a foreign class path is refused
    without importing its module, and a project class without the decorator is refused too."""
    import sys

    marker = tmp_path / "imported"
    (tmp_path / "evil_pkg.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("os.system", "evil_pkg.Net", "torch.nn.Linear", "timm.models.vision_transformer.VisionTransformer"):
        with pytest.raises(PermissionError, match="refusing to build"):
            store.build({"class_path": path, "init_args": {}})
    assert not marker.exists() and "evil_pkg" not in sys.modules
    with pytest.raises(PermissionError, match="not an @exportable network"):
        store.build({"class_path": "modules.codec.BlockLinear", "init_args": {"groups": 1, "in_dim": 2, "out_dim": 2}})
    with pytest.raises(ValueError, match="init_args must be a mapping"):
        store.build({"class_path": "modules.graph_mlp.MLP", "init_args": ["x"]})


def test_export_refuses_existing_entry_unless_overwrite(scratch_zoo, toy_ckpt):
    first = export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    assert (
        cli.main(
            [
                "zoo",
                "export",
                str(toy_ckpt[0]),
                "--name",
                "toy-student",
                "--overwrite",
                "--weights-dir",
                str(scratch_zoo["weights"]),
            ]
        )
        == 0
    )
    # Export is deterministic: the same checkpoint gives the same bytes, so the file is kept, not replaced.
    assert first.exists() and zoo.get("toy-student").weights.file == str(first)
    assert zoo.get("toy-student").raw["method"] == "Toy"


def test_interrupted_export_leaves_no_partial_file(scratch_zoo, toy_ckpt, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    assert list(scratch_zoo["weights"].iterdir()) == []
    assert list(scratch_zoo["entries"].iterdir()) == []


def test_remote_entry_downloads_to_hash_named_cache_and_verifies(scratch_zoo, toy_ckpt, tmp_path):
    path = export.export(toy_ckpt[0], "toy-student", META, scratch_zoo["weights"])
    hosted = tmp_path / "hosted" / "v1"
    hosted.mkdir(parents=True)
    path.rename(hosted / "toy.safetensors")
    entry = zoo.get("toy-student").raw
    entry["weights"].update(file=None, url=f"file://{tmp_path}/hosted/{{revision}}/toy.safetensors", revision="v1")
    registry.write_entry(entry)
    model = zoo.load("toy-student")
    cached = scratch_zoo["cache"] / f"toy-student-{entry['weights']['sha256'][:8]}.safetensors"
    assert cached.is_file() and isinstance(model, ToyNet)
    # A tampered host: the download is refused and nothing is left in the cache.
    cached.unlink()
    (hosted / "toy.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="failed sha256"):
        zoo.load("toy-student")
    assert list(scratch_zoo["cache"].iterdir()) == []


def test_model_cards_match_what_zoo_cards_writes():
    committed = (registry.REPO_ROOT / "MODEL_CARDS.md").read_text()
    assert committed == cards.render(), "MODEL_CARDS.md is stale: run python cli.py zoo cards"


def test_committed_entries_verify():
    assert cli.main(["zoo", "verify"]) == 0


def test_dataset_entry_round_trips_as_a_pyg_dataset(scratch_zoo):
    from torch_geometric.data import Data

    graphs = [
        Data(
            x=torch.eye(3),
            edge_index=torch.tensor([[0, 1], [1, 2]]),
            root_mask=torch.tensor([0, 0, 1]).bool(),
            y=torch.tensor([1]),
        ),
        Data(
            x=torch.eye(3)[:2],
            edge_index=torch.tensor([[0], [1]]),
            root_mask=torch.tensor([0, 1]).bool(),
            y=torch.tensor([0]),
        ),
    ]
    path = export.export_dataset(
        graphs, "toy-graphs", {"method": "Mirage", "task": "graph-classification"}, GRAPHSET, scratch_zoo["weights"]
    )
    assert zoo.get("toy-graphs").kind == "dataset"
    loaded = zoo.load("toy-graphs")
    assert len(loaded) == 2
    for original, back in zip(graphs, loaded):
        for key in ("x", "edge_index", "root_mask", "y"):
            assert torch.equal(original[key], back[key]), key
    again = export.export_dataset(graphs, "toy-graphs", {}, GRAPHSET, scratch_zoo["weights"], overwrite=True)
    assert again == path  # deterministic bytes


def test_evidence_in_parallel_processes_summarises_every_metric(scratch_zoo, tmp_path):
    """``zoo evidence --jobs 2``: fits run in spawned processes; the headline and extra metrics get rows,
    and an extra metric the arm never logs is left out of its row; ``keep`` keeps seed 0's checkpoint."""
    import yaml

    import cli
    from zoo import evidence

    raw = yaml.safe_load((registry.REPO_ROOT / "zoo/entries/gcn-csbm.yaml").read_text())
    raw["evidence"] = {
        "metric": "test/acc",
        "metrics": ["test/loss", "test/never_logged"],
        "arms": [
            {
                "arm": "tiny MLP, no teacher",
                "config": ["recipes/graph_mlp/tiny.yaml"],
                "args": ["--model.init_args.mode=ce", "--trainer.max_epochs=2"],
            }
        ],
    }
    raw.pop("results", None)
    registry.write_entry(raw, registry.entries_dir())
    results = evidence.run("gcn-csbm", seeds=2, fit=cli.evidence_fit, jobs=2, keep=tmp_path / "kept")
    (row,) = results["rows"]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == [
        "tiny-mlp-no-teacher.ckpt",
        "tiny-mlp-no-teacher.metrics.csv",
    ]
    assert export.student_tensors(torch.load(tmp_path / "kept/tiny-mlp-no-teacher.ckpt", weights_only=True))
    assert row["n"] == 2 and len(row["values"]) == 2 and 0 <= row["mean"] <= 1
    assert set(row["metrics"]) == {"test/loss"} and row["metrics"]["test/loss"]["n"] == 2
    assert sorted(r["seed"] for r in results["runs"]["tiny MLP, no teacher"]) == [0, 1]
    assert "| test/loss |" in cards.render_entry(registry.get("gcn-csbm").meta)


FAKE_CALLS: list[tuple[str, int]] = []


def fake_fit(arm, seed, keep=None):
    """A fit that trains nothing: the distilled arm scores 0.1 above the baseline at every seed, plus noise."""
    FAKE_CALLS.append((arm.arm, seed))
    base = 0.5 + 0.01 * [3, -2, 1, 4][seed]
    # the distilled arm also scores its teacher (as GloReDi's jointly trained one): 0.3 above the baseline
    teacher = {"test/teacher_acc": base + 0.3} if arm.arm == "distilled" else {}
    return {"test/acc": base + (0.1 if arm.arm == "distilled" else 0.0)} | teacher, 0.0


def two_arm_entry(**evidence) -> dict:
    """gcn-csbm rewritten with a baseline and a distilled arm of the tiny recipe (and ``evidence`` keys), no
    results; its raw metafile."""
    import yaml

    raw = yaml.safe_load((registry.REPO_ROOT / "zoo/entries/gcn-csbm.yaml").read_text())
    arms = [{"arm": a, "role": r, "config": ["recipes/graph_mlp/tiny.yaml"]} for a, r in
            (("baseline", "baseline"), ("distilled", "distilled"))]  # fmt: skip
    raw["evidence"] = {"metric": "test/acc", "scale": 100, "arms": arms} | evidence
    raw.pop("results", None)
    registry.write_entry(raw, registry.entries_dir())
    return raw


def test_evidence_resumes_from_recorded_runs_and_pairs_arms_by_seed(scratch_zoo):
    """Finished runs are written into the metafile one by one; a rerun with more seeds runs only the new
    seeds, a changed arm reruns from scratch, and arms sharing seeds with the baseline get a paired row."""

    from zoo import evidence

    two_arm_entry()
    FAKE_CALLS.clear()
    evidence.run("gcn-csbm", seeds=2, fit=fake_fit)
    assert FAKE_CALLS == [("baseline", 0), ("baseline", 1), ("distilled", 0), ("distilled", 1)]
    assert len(registry.get("gcn-csbm").raw["results"]["runs"]["distilled"]) == 2  # on disk, not only returned
    FAKE_CALLS.clear()
    results = evidence.run("gcn-csbm", seeds=3, fit=fake_fit)
    assert FAKE_CALLS == [("baseline", 2), ("distilled", 2)]
    base, distilled = results["rows"]
    assert base["seeds"] == [0, 1, 2] and "paired" not in base
    paired = distilled["paired"]
    # identical per-seed offsets: the paired difference is exactly 10 points with a zero-width interval,
    # although the unpaired std of each arm is over 2 points
    assert paired["against"] == "baseline" and paired["n"] == 3
    assert paired["mean"] == pytest.approx(10.0) and paired["hi"] - paired["lo"] == pytest.approx(0.0, abs=1e-6)
    assert base["std"] > 2
    raw = registry.get("gcn-csbm").raw
    raw["evidence"]["arms"][1]["args"] = ["--trainer.max_epochs=3"]  # the distilled arm changed
    registry.write_entry(raw, registry.entries_dir())
    FAKE_CALLS.clear()
    evidence.run("gcn-csbm", seeds=3, fit=fake_fit)
    assert FAKE_CALLS == [("distilled", 0), ("distilled", 1), ("distilled", 2)]
    FAKE_CALLS.clear()  # --rows-only fits nothing: the rows hold the seeds recorded so far
    fitted_by = registry.get("gcn-csbm").raw["results"]["command"]
    results = evidence.run("gcn-csbm", seeds=4, fit=fake_fit, rows_only=True, command="rebuild rows")
    assert FAKE_CALLS == [] and [r["n"] for r in results["rows"]] == [3, 3]
    assert results["command"] == fitted_by  # the command that fitted the runs, not the one rebuilding rows
    FAKE_CALLS.clear()  # --fresh reruns the named arm's recorded runs (after a code change), and only those
    evidence.run("gcn-csbm", seeds=3, fit=fake_fit, only=["baseline"], fresh=True)
    assert FAKE_CALLS == [("baseline", 0), ("baseline", 1), ("baseline", 2)]
    assert len(registry.get("gcn-csbm").meta.results.runs["distilled"]) == 3


def test_a_failing_evidence_fit_is_reported_and_the_grid_goes_on(scratch_zoo, capsys):
    """One fit raising (a recipe that breaks at setup) does not stop the grid: it is reported when it fails, every
    other run is fitted and recorded, and the grid ends with an error naming the failed arm and seed."""
    from zoo import evidence

    two_arm_entry()

    def flaky(arm, seed, keep=None):
        if (arm.arm, seed) == ("baseline", 0):
            raise KeyError("module name can't contain '.'")
        return fake_fit(arm, seed, keep)

    FAKE_CALLS.clear()
    with pytest.raises(RuntimeError, match=r"1 fit\(s\) failed.*'baseline' seed 0: KeyError"):
        evidence.run("gcn-csbm", seeds=2, fit=flaky)
    assert FAKE_CALLS == [("baseline", 1), ("distilled", 0), ("distilled", 1)]
    assert "baseline | seed 0: FAILED, KeyError" in capsys.readouterr().out
    runs = registry.get("gcn-csbm").raw["results"]["runs"]
    assert [r["seed"] for r in runs["baseline"]] == [1] and len(runs["distilled"]) == 2
    FAKE_CALLS.clear()  # the rerun fits only the failed run
    evidence.run("gcn-csbm", seeds=2, fit=fake_fit)
    assert FAKE_CALLS == [("baseline", 0)]


def test_evidence_digits_set_the_decimals_of_rows_pairs_and_card(scratch_zoo):
    """A fraction such as AbsRel (scale 1) needs three decimals: 0.357 against 0.356 must not both read 0.36."""
    from zoo import cards, evidence

    two_arm_entry(scale=1, digits=3)
    results = evidence.run("gcn-csbm", seeds=2, fit=fake_fit)
    base, distilled = results["rows"]
    assert base["values"] == [0.53, 0.48] and distilled["mean"] == 0.605  # fake_fit: 0.5 + 0.03, 0.5 - 0.02, + 0.1
    assert distilled["paired"]["mean"] == pytest.approx(0.1)
    card = cards.render_entry(registry.get("gcn-csbm").meta)
    assert "| distilled | 0.605 ± 0.035 | 2 | +0.100 [+0.100, +0.100] |" in card
    raw = registry.get("gcn-csbm").raw
    raw["evidence"]["digits"] = 9
    with pytest.raises(ValueError, match="evidence.digits: expected 0 to 6 decimals, got 9"):
        registry.write_entry(raw, registry.entries_dir())


def test_a_metafile_edited_while_the_grid_runs_keeps_the_edit_and_every_run(scratch_zoo):
    """A grid holds the metafile it started from for hours; a summary written meanwhile survives its next write,
    and an edit that no longer loads is saved beside the metafile while the run is still recorded."""
    import yaml

    from zoo import evidence

    two_arm_entry()
    path = registry.entries_dir() / "gcn-csbm.yaml"

    def editing_fit(arm, seed, keep=None):
        if (arm.arm, seed) == ("baseline", 1):  # a user edits the card's prose during the grid
            raw = yaml.safe_load(path.read_text())
            raw["summary"] = "written while the grid ran"
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
        if (arm.arm, seed) == ("distilled", 1):  # a half-done edit: not YAML
            path.write_text(path.read_text() + "\nsummary: [unclosed\n")
        return fake_fit(arm, seed)

    evidence.run("gcn-csbm", seeds=2, fit=editing_fit)
    raw = yaml.safe_load(path.read_text())
    assert raw["summary"] == "written while the grid ran"  # the grid's later writes kept the edit
    assert sorted(len(v) for v in raw["results"]["runs"].values()) == [2, 2]  # and recorded every run
    edited = path.with_name("gcn-csbm.yaml.edited").read_text()
    assert edited.endswith("summary: [unclosed\n")  # the broken edit is kept, not lost


def test_per_sample_scores_are_recorded_and_pair_arms_sample_by_sample(scratch_zoo):
    """A fit that returns per-sample test scores has them kept with its run; the distilled row then also
    pairs per sample: each sample's difference averaged over the seeds, the interval over samples. Seed
    offsets shared by both arms cancel, as they do per seed; a sample-level effect shows with n = samples."""

    from zoo import cards, evidence

    def fit(arm, seed, keep=None):
        gain = [0.0, 0.02, 0.04, 0.06] if arm.arm == "distilled" else [0.0] * 4  # +3 points on average
        samples = [0.5 + 0.1 * seed + 0.01 * i + g for i, g in enumerate(gain)]
        return {"test/acc": statistics.fmean(samples)}, 0.0, {"test/acc": samples}

    two_arm_entry()
    base, distilled = evidence.run("gcn-csbm", seeds=2, fit=fit)["rows"]
    assert registry.get("gcn-csbm").meta.results.runs["distilled"][1].samples["test/acc"][3] == pytest.approx(0.69)
    per_sample = distilled["paired_samples"]
    assert per_sample["n"] == 4 and per_sample["seeds"] == 2 and per_sample["mean"] == pytest.approx(3.0)
    # diffs 0, 2, 4, 6 points: sample std 2.582, t(0.975, df 3) = 3.182 -> half width 4.108
    assert per_sample["hi"] - per_sample["mean"] == pytest.approx(4.108, abs=1e-3)
    assert distilled["paired"]["hi"] - distilled["paired"]["lo"] == pytest.approx(0.0, abs=1e-6)  # per seed: exact
    assert "paired_samples" not in base
    card = cards.render_entry(registry.get("gcn-csbm").meta)
    assert "per-sample Δ [95% CI] (4 test samples x 2 seeds)" in card and "+3.00 [-1.11, +7.11]" in card


def test_paired_difference_interval_matches_a_hand_worked_t_interval():
    from zoo.evidence import paired_difference

    # diffs 1, 2, 3: mean 2, sample std 1, t(0.975, df 2) = 4.303 -> half width 4.303 / sqrt(3) = 2.484
    assert paired_difference([1.0, 2.0, 3.0]) == {"mean": 2.0, "lo": -0.484, "hi": 4.484, "n": 3}


def test_sanity_gates_fail_pass_wait_and_are_waived_only_by_a_stated_reason(scratch_zoo, capsys):
    """A floor gate fails for an arm below it unless that arm waives it with a reason the card prints; a
    comparison gate is pending until both arms have every seed; ``zoo evidence`` exits 1 on a failed gate."""

    from zoo import evidence

    gates = [
        {"name": "accuracy floor", "kind": "floor", "metric": "test/acc", "value": 0.55},
        {"name": "distilled beats baseline", "kind": "compare", "metric": "test/acc", "arm": "distilled",
         "than": "baseline", "margin": 0.05},
    ]  # fmt: skip
    two_arm_entry(gates=gates)
    results = evidence.run("gcn-csbm", seeds=2, fit=fake_fit, only=["baseline"])
    assert [g["status"] for g in results["gates"]] == ["pending", "pending"]
    results = evidence.run("gcn-csbm", seeds=2, fit=fake_fit)
    floor, compare = results["gates"]
    assert floor["status"] == "fail" and "baseline 0.5" in floor["detail"]  # 0.505, under 0.55
    assert compare["status"] == "pass"  # 0.1 better, margin 0.05
    raw = registry.get("gcn-csbm").raw
    raw["evidence"]["arms"][0]["waive"] = {"accuracy floor": "the no-teacher arm is expected to be weak"}
    registry.write_entry(raw, registry.entries_dir())
    assert cli.main(["zoo", "evidence", "gcn-csbm", "--seeds", "2"]) == 0  # fingerprints unchanged: no fits run
    floor = registry.get("gcn-csbm").raw["results"]["gates"][0]
    assert floor["status"] == "pass" and floor["waived"] == {"baseline": "the no-teacher arm is expected to be weak"}
    assert "waived for baseline: the no-teacher arm is expected to be weak" in cards.render_entry(
        registry.get("gcn-csbm").meta
    )
    raw["evidence"]["gates"][1]["margin"] = 0.5
    registry.write_entry(raw, registry.entries_dir())
    assert cli.main(["zoo", "evidence", "gcn-csbm", "--seeds", "2"]) == 1
    assert "error: sanity gate 'distilled beats baseline' failed" in capsys.readouterr().err
    # a teacher-like arm must beat its own input (here the same metric: never by a margin > 0)
    gate = {"name": "beats its input", "kind": "beats_input", "arm": "distilled", "metric": "test/acc",
            "input_metric": "test/acc"}  # fmt: skip
    raw["evidence"]["gates"] = [gate]
    registry.write_entry(raw, registry.entries_dir())
    assert cli.main(["zoo", "evidence", "gcn-csbm", "--seeds", "2"]) == 1
    assert registry.get("gcn-csbm").raw["results"]["gates"][0]["status"] == "fail"
    # the distilled arm's teacher metric against the baseline arm's own metric: 0.3 better
    gate = {"name": "teacher beats the student alone", "kind": "compare", "arm": "distilled", "than": "baseline",
            "metric": "test/teacher_acc", "than_metric": "test/acc", "margin": 0.25}  # fmt: skip
    raw["evidence"] |= {"gates": [gate], "metrics": ["test/teacher_acc"]}
    registry.write_entry(raw, registry.entries_dir())
    outcome = evidence.run("gcn-csbm", seeds=2, fit=fake_fit, fresh=True)["gates"][0]
    assert outcome["status"] == "pass" and "test/teacher_acc 0.805 vs baseline: test/acc 0.505" in outcome["detail"]
    raw["evidence"]["gates"][0]["margin"] = 0.35
    registry.write_entry(raw, registry.entries_dir())
    assert cli.main(["zoo", "evidence", "gcn-csbm", "--seeds", "2"]) == 1


def test_names_and_weights_paths_are_confined(scratch_zoo, toy_ckpt, tmp_path):
    """A traversal name, an absolute path or a trailing newline is not an entry name; a metafile whose
    weights.file points outside the weights folder is refused; --overwrite never deletes a file outside it."""
    for bad in ("../../etc/passwd", "/etc/hosts", "toy\n", "a/b", "..", "Toy"):
        with pytest.raises(ValueError, match="must be lowercase"):
            zoo.get(bad)
    ckpt, _ = toy_ckpt
    export.export(ckpt, "toy-student", META, scratch_zoo["weights"])
    raw = registry.get("toy-student").raw
    outside = tmp_path / "users-own-file.safetensors"
    outside.write_bytes(b"precious")
    raw["weights"]["file"] = str(outside)
    registry.write_entry(raw, registry.entries_dir())
    with pytest.raises(ValueError, match="lies outside the weights folder"):
        zoo.load("toy-student")
    export.export(ckpt, "toy-student", META, scratch_zoo["weights"], overwrite=True)
    assert outside.read_bytes() == b"precious"


def test_invalid_graph_data_is_refused_where_it_enters(scratch_zoo):
    """NaN node features and out-of-range edge indices in a dataset entry fail at load, naming the graph and
    the attribute, instead of training to NaN or failing inside the first step."""
    from torch_geometric.data import Data

    good = Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]), y=torch.tensor([0]))
    nan = Data(
        x=torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), edge_index=torch.tensor([[0], [1]]), y=torch.tensor([1])
    )
    far = Data(x=torch.ones(2, 2), edge_index=torch.tensor([[0], [7]]), y=torch.tensor([1]))
    for bad, message in (
        (nan, r"graph 1 has 1 non-finite value\(s\) in x"),
        (far, r"graph 1 has edge indices in \[0, 7\] but 2 nodes"),
    ):
        export.export_dataset(
            [good, bad],
            "bad-graphs",
            {"method": "Toy", "task": "t"},
            GRAPHSET,
            scratch_zoo["weights"],
            overwrite=True,
        )
        with pytest.raises(ValueError, match=message):
            zoo.load("bad-graphs")


def test_a_second_export_of_a_name_at_once_is_refused_and_a_killed_export_reruns_cleanly(
    scratch_zoo, toy_ckpt, monkeypatch
):
    """Two exports of one name: one wins, the other is refused at once naming the entry. An export killed
    between the weights and the metafile leaves the old entry intact; its rerun accepts the written weights
    (same sha256) and sweeps the temporaries the kill left."""
    from zoo import files

    ckpt, _ = toy_ckpt
    monkeypatch.setenv("DISTILLZOO_CACHE", str(scratch_zoo["entries"].parent / "cache"))
    with files.exclusive_lock(export.lock_path(scratch_zoo["entries"] / "toy-student.yaml"), "test"):
        with pytest.raises(BlockingIOError, match="an export of zoo entry 'toy-student' is already in progress"):
            export.export(ckpt, "toy-student", META, scratch_zoo["weights"])
    assert zoo.list() == []
    stale = scratch_zoo["weights"] / ".toy-student-deadbeef.safetensors.abc.tmp"
    stale.write_bytes(b"half a file")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the weights, before the metafile

    monkeypatch.setattr(registry, "write_entry", killed)
    with pytest.raises(KeyboardInterrupt):
        export.export(ckpt, "toy-student", META, scratch_zoo["weights"])
    assert zoo.list() == [] and not stale.exists()
    assert list(scratch_zoo["weights"].iterdir()) == []  # the export removed the weights it had written
    monkeypatch.undo()
    monkeypatch.setenv("DISTILLZOO_ENTRIES", str(scratch_zoo["entries"]))
    monkeypatch.setenv("DISTILLZOO_WEIGHTS", str(scratch_zoo["weights"]))
    path = export.export(ckpt, "toy-student", META, scratch_zoo["weights"])
    assert zoo.list() == ["toy-student"]
    assert export.export(ckpt, "toy-student", META, scratch_zoo["weights"], overwrite=True) == path  # idempotent


def test_a_trickling_download_hits_the_total_deadline_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import io

    class Trickle(io.RawIOBase):
        def read(self, n=-1):
            return b"x"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(store.urllib.request, "urlopen", lambda url, timeout: Trickle())
    monkeypatch.setenv("DISTILLZOO_DOWNLOAD_TIMEOUT", "0.2")
    with pytest.raises(OSError, match=r"zoo entry 'slow' from https://example.org/w failed: took longer than 0 s"):
        store.download("https://example.org/w", tmp_path / "w.safetensors", "0" * 64, "slow")
    assert list(tmp_path.iterdir()) == []


def test_orphan_weights_of_a_killed_export_are_accepted_on_rerun(scratch_zoo, toy_ckpt):
    """Weights already on disk with the right sha256 (a kill after the weights, before the metafile, where
    the cleanup never ran) do not block the rerun."""
    ckpt, _ = toy_ckpt
    path = export.export(ckpt, "toy-student", META, scratch_zoo["weights"])
    (scratch_zoo["entries"] / "toy-student.yaml").unlink()  # as if the process died before the metafile
    assert export.export(ckpt, "toy-student", META, scratch_zoo["weights"]) == path
    assert zoo.list() == ["toy-student"]


def test_verify_fails_an_entry_whose_spec_would_build_a_foreign_class_and_checks_the_rest(
    scratch_zoo, toy_ckpt, capsys
):
    """A weights file whose stored spec names a class off the allow-list passes its sha256 but is FAILED by
    zoo verify (without anything being imported or built), and verify still checks the next entry; a
    metafile whose student differs from the weights' spec is refused by zoo.load naming the keys."""
    import json

    from safetensors.torch import save

    ckpt, _ = toy_ckpt
    export.export(ckpt, "toy-a", META, scratch_zoo["weights"])
    good = export.export(ckpt, "toy-b", META, scratch_zoo["weights"])
    hostile = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", "PWNED"]}}
    blob = save({"w": torch.zeros(1)}, metadata={store.SPEC_KEY: json.dumps(hostile)})
    weights = scratch_zoo["weights"] / "toy-a-hostile.safetensors"
    weights.write_bytes(blob)
    raw = registry.get("toy-a").raw
    raw["weights"] = {"file": str(weights), "sha256": store.sha256_file(weights), "url": None, "revision": None}
    raw.pop("student")
    registry.write_entry(raw, registry.entries_dir())
    assert cli.main(["zoo", "verify"]) == 1
    out = capsys.readouterr().out
    assert "FAILED  toy-a: refusing to build 'subprocess.Popen'" in out and f"ok      toy-b  {good}" in out
    raw = registry.get("toy-b").raw
    raw["student"]["init_args"]["hidden"] = 99
    registry.write_entry(raw, registry.entries_dir())
    with pytest.raises(
        ValueError, match=r"metafile's student differs from the spec stored in its weights \(at hidden\)"
    ):
        zoo.load("toy-b")


def test_a_metafile_with_an_unknown_key_is_refused_with_the_closest_valid_name(scratch_zoo):
    raw = yaml_load(registry.REPO_ROOT / "zoo/entries/gcn-csbm.yaml")
    raw["findigns"] = "a misspelt field would vanish from the card"
    path = scratch_zoo["entries"] / "gcn-csbm.yaml"
    path.write_text(yaml_dump(raw))
    with pytest.raises(ValueError, match=r"gcn-csbm.yaml: unknown key 'findigns'; did you mean findings"):
        zoo.get("gcn-csbm")
    raw.pop("findigns")
    raw["weights"]["sha"] = raw["weights"].pop("sha256")
    path.write_text(yaml_dump(raw))
    with pytest.raises(ValueError, match=r"unknown key 'weights.sha'; did you mean sha256"):
        zoo.get("gcn-csbm")


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def yaml_dump(raw):
    import yaml

    return yaml.safe_dump(raw, sort_keys=False)


def test_malformed_spec_metadata_names_the_file(tmp_path):
    from safetensors.torch import save_file

    for bad, message in (("{not json", "is not valid JSON"), ("[1, 2]", "must be a mapping, got list")):
        path = tmp_path / "w.safetensors"
        save_file({"w": torch.zeros(1)}, path, metadata={store.SPEC_KEY: bad})
        with pytest.raises(ValueError, match=rf"weights file .*w.safetensors: metadata 'distillzoo.spec' {message}"):
            store.load(str(path))


def test_cards_show_the_paired_difference_beside_the_unpaired_rows(scratch_zoo):
    from zoo import evidence

    two_arm_entry()
    evidence.run("gcn-csbm", seeds=3, fit=fake_fit)
    card = cards.render_entry(registry.get("gcn-csbm").meta)
    assert "| arm | mean ± std | n | paired Δ vs baseline [95% CI] |" in card
    assert "| distilled | 60.67 ± 2.52 | 3 | +10.00 [+10.00, +10.00] |" in card
    # an arm paired against another arm than the baseline (DMAE against MAE alone): each cell names its own
    raw = registry.get("gcn-csbm").raw
    raw["evidence"]["arms"].append(
        {"arm": "other", "config": ["recipes/graph_mlp/tiny.yaml"], "paired_against": "distilled"}
    )
    registry.write_entry(raw, registry.entries_dir())
    evidence.run("gcn-csbm", seeds=3, fit=fake_fit)
    card = cards.render_entry(registry.get("gcn-csbm").meta)
    assert "| arm | mean ± std | n | paired Δ [95% CI] |" in card
    assert "| other | 50.67 ± 2.52 | 3 | -10.00 [-10.00, -10.00] vs distilled |" in card
    assert "| distilled | 60.67 ± 2.52 | 3 | +10.00 [+10.00, +10.00] vs baseline |" in card
    rows = {r.arm: r.n for r in registry.get("gcn-csbm").meta.results.rows}
    raw = registry.get("gcn-csbm").raw
    raw["evidence"]["arms"].append({"arm": "one seed", "config": ["recipes/graph_mlp/tiny.yaml"]})
    registry.write_entry(raw, registry.entries_dir())
    evidence.run("gcn-csbm", seeds=1, fit=fake_fit)  # a new arm at one seed keeps the others' three
    assert {r.arm: r.n for r in registry.get("gcn-csbm").meta.results.rows} == rows | {"one seed": 1}
    raw["evidence"]["arms"][-2]["paired_against"] = "nobody"
    with pytest.raises(ValueError, match="paired against 'nobody', not another arm"):
        registry.write_entry(raw, registry.entries_dir())


def test_a_diagnostic_arm_runs_its_own_fewer_seeds_and_a_role_arm_cannot(scratch_zoo):
    """An arm with ``seeds: 1`` (a one-seed diagnostic) is fitted once when the evidence runs three seeds, shows
    n = 1 on the card, and does not hold a floor gate pending; an arm the comparison stands on (one with a
    role) may not run fewer seeds."""
    from zoo import evidence

    gates = [{"name": "accuracy floor", "kind": "floor", "metric": "test/acc", "value": 0.4}]
    raw = two_arm_entry(gates=gates)
    raw["evidence"]["arms"].append({"arm": "probe", "config": ["recipes/graph_mlp/tiny.yaml"], "seeds": 1})
    registry.write_entry(raw, registry.entries_dir())
    FAKE_CALLS.clear()
    results = evidence.run("gcn-csbm", seeds=3, fit=fake_fit)
    assert [c for c in FAKE_CALLS if c[0] == "probe"] == [("probe", 0)] and len(FAKE_CALLS) == 7
    assert {r["arm"]: r["n"] for r in results["rows"]} == {"baseline": 3, "distilled": 3, "probe": 1}
    assert results["gates"][0]["status"] == "pass"
    assert "| probe | 53.00 ± 0.00 | 1 |" in cards.render_entry(registry.get("gcn-csbm").meta)
    raw["evidence"]["arms"][1]["seeds"] = 1
    with pytest.raises(ValueError, match="'distilled' has seeds 1: fewer seeds .* not one with a role"):
        registry.write_entry(raw, registry.entries_dir())


def publishing_zoo(scratch_zoo, toy_ckpt, plan: dict, evidence: dict | None = None) -> dict:
    """A scratch entry exported from the toy checkpoint, with a publish block (and evidence) added."""
    ckpt, _ = toy_ckpt
    export.export(ckpt, "toy-student", META | {"input": TOY_INPUT}, scratch_zoo["weights"], overwrite=True)
    raw = registry.get("toy-student").raw
    raw["publish"] = plan
    if evidence:
        raw["evidence"] = evidence
    registry.write_entry(raw, registry.entries_dir())
    return raw


TOY_INPUT = {"reader": "a tensor", "type": "view", "shape": ["B", 8], "call": "net(x)"}


def test_zoo_publish_fits_exports_and_refuses_on_a_failed_gate(scratch_zoo, toy_ckpt, tmp_path):
    """``publish.fit``: one fit at seed 0 is exported as the entry; ``publish.arm``: the evidence runs first
    and a failed sanity gate stops the publish before anything is exported."""
    import shutil

    from zoo import publish, schema

    ckpt, _ = toy_ckpt
    fits = []

    def fit(arm, seed, keep=None):
        fits.append((arm.arm, seed))
        if keep is not None and seed == 0:  # as cli.evidence_fit keeps seed 0's checkpoint
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, keep / f"{evidence_slug(arm)}.ckpt")
        return {"test/acc": 0.5 + 0.1 * (arm.arm == "distilled")}, 0.0

    publishing_zoo(scratch_zoo, toy_ckpt, {"fit": {"config": ["recipes/graph_mlp/tiny.yaml"]}})
    before = zoo.get("toy-student").sha256
    path = publish.publish("toy-student", fit, lambda f: None, keep=tmp_path / "keep")
    assert fits == [("toy-student", 0)] and zoo.get("toy-student").sha256 == store.sha256_file(path) == before
    publish.publish("toy-student", fit, lambda f: None, keep=tmp_path / "keep")
    assert len(fits) == 1, "a kept checkpoint is not refitted"

    arms = [{"arm": a, "role": r, "config": ["recipes/graph_mlp/tiny.yaml"]} for a, r in
            (("baseline", "baseline"), ("distilled", "distilled"))]  # fmt: skip
    gate = {"name": "distilled beats baseline", "kind": "compare", "metric": "test/acc", "arm": "distilled",
            "than": "baseline", "margin": 0.5}  # fmt: skip
    publishing_zoo(scratch_zoo, toy_ckpt, {"arm": "distilled", "seeds": 2},
                   {"metric": "test/acc", "arms": arms, "gates": [gate]})  # fmt: skip
    with pytest.raises(ValueError, match=r"not publishing 'toy-student': sanity gate\(s\) failed \(distilled beats"):
        publish.publish("toy-student", fit, lambda f: None, keep=tmp_path / "keep2")
    raw = registry.get("toy-student").raw
    raw["evidence"]["gates"] = []
    registry.write_entry(raw, registry.entries_dir())
    publish.publish("toy-student", fit, lambda f: None, keep=tmp_path / "keep2")  # runs recorded, seed 0 kept
    shutil.rmtree(tmp_path / "keep2")  # a new machine: the kept checkpoint is gone, the recorded runs are not

    def drifting(arm, seed, keep=None):
        tests, val = fit(arm, seed, keep)
        return {"test/acc": tests["test/acc"] + 0.01}, val

    with pytest.raises(ValueError, match=r"the refit of 'distilled' at seed 0 does not reproduce the recorded run"):
        publish.publish("toy-student", drifting, lambda f: None, keep=tmp_path / "keep2")
    with pytest.raises(ValueError, match=r"publish.arm: 'distiled' is not one of the evidence arms"):
        schema.parse(dict(registry.get("toy-student").raw, publish={"arm": "distiled"}))


def evidence_slug(arm):
    from zoo.evidence import arm_slug

    return arm_slug(arm)


def test_a_publish_figure_must_be_a_project_script():
    from zoo import schema

    raw = yaml_load(registry.REPO_ROOT / "zoo/entries/gcn-csbm.yaml")
    for bad in (["sh", "-c", "touch PWNED"], ["scripts/../../x.py"], ["/usr/bin/python"]):
        with pytest.raises(schema.SchemaError, match=r"publish.figures\[0\]: expected \[scripts/NAME.py, args...\]"):
            schema.parse(dict(raw, publish={"fit": {"config": []}, "figures": [bad]}))


def test_a_dataset_entry_loads_only_through_an_allow_listed_loader(scratch_zoo):
    """A dataset entry names its loader class; a class outside the data packages is refused before anything is
    imported, and one inside them must be a @stored_dataset."""
    from torch_geometric.data import Data

    graphs = [Data(x=torch.eye(2), edge_index=torch.tensor([[0], [1]]), y=torch.tensor([0]))]
    export.export_dataset(graphs, "toy-graphs", META, GRAPHSET, scratch_zoo["weights"])
    raw = registry.get("toy-graphs").raw
    for loader, message in (("os.system", "only @stored_dataset classes of datamodules"),
                            ("datamodules.graphs.tu.TUDataModule", "it is not a @stored_dataset")):  # fmt: skip
        raw["loader"] = loader
        registry.write_entry(raw, registry.entries_dir())
        with pytest.raises(PermissionError, match=message):
            zoo.load("toy-graphs")
    raw.pop("loader")
    with pytest.raises(ValueError, match="a dataset entry names its @stored_dataset class"):
        registry.write_entry(raw, registry.entries_dir())


def test_an_interrupted_evidence_fit_resumes_from_its_last_epoch(tmp_path, monkeypatch, capsys):
    """A session that ends mid-fit leaves ``last.ckpt`` in the fit's folder; the next evidence_fit of the same
    arm and seed continues from it (only the remaining epoch is trained) and removes the folder when done."""
    from zoo import schema

    monkeypatch.setattr(cli, "RESUME_ROOT", tmp_path / "fits")
    base = ["--model.init_args.mode=ce", "--trainer.limit_train_batches=1"]
    short = schema.Arm(arm="mlp", config=["recipes/graph_mlp/tiny.yaml"], args=[*base, "--trainer.max_epochs=2"])
    arm = schema.Arm(arm="mlp", config=["recipes/graph_mlp/tiny.yaml"], args=[*base, "--trainer.max_epochs=3"])
    monkeypatch.setattr(cli.shutil, "rmtree", lambda *a, **k: None)  # the "killed" run leaves its folder
    saves = []
    save = cli.ModelCheckpoint._save_checkpoint
    monkeypatch.setattr(cli.ModelCheckpoint, "_save_checkpoint", lambda s, t, f: (saves.append(f), save(s, t, f)))
    cli.evidence_fit(short, 0)
    monkeypatch.undo()
    monkeypatch.setattr(cli, "RESUME_ROOT", tmp_path / "fits")
    partial = cli.fit_dir(short, 0) / "resume" / "last.ckpt"
    assert saves.count(str(partial)) == 2  # written after every epoch, not only when the fit ends
    assert torch.load(partial, weights_only=True)["global_step"] == 2
    target = cli.fit_dir(arm, 0) / "resume" / "last.ckpt"
    target.parent.mkdir(parents=True)
    partial.rename(target)
    (cli.fit_dir(short, 0) / "log").rename(cli.fit_dir(arm, 0) / "log")  # its curve so far, as a killed run leaves it
    capsys.readouterr()
    saves.clear()
    monkeypatch.setattr(cli.ModelCheckpoint, "_save_checkpoint", lambda s, t, f: (saves.append(f), save(s, t, f)))
    tests, _, _ = cli.evidence_fit(arm, 0, keep=tmp_path / "kept")
    assert f"resuming 'mlp' seed 0 from {target}" in capsys.readouterr().out
    assert saves.count(str(target)) == 1  # only the third epoch was trained
    assert "test/acc" in tests and (tmp_path / "kept/mlp.ckpt").is_file()
    curve = (tmp_path / "kept/mlp.metrics.csv").read_text().splitlines()
    epochs = {int(row.split(",")[0]) for row in curve[1:] if row.split(",")[0].isdigit()}
    assert curve[0].startswith("epoch") and {0, 1, 2} <= epochs  # before and after the resume, in one curve
    assert not cli.fit_dir(arm, 0).exists()  # a finished fit removes its folder


STAGE_CALLS: list[tuple[str, int, list[str]]] = []


def staged_fit(arm, seed, keep=None, keep_as=None):
    """A fit that trains nothing; a stage writes its 'checkpoint' where it is asked to keep it."""
    STAGE_CALLS.append((arm.arm, seed, list(arm.args)))
    if keep_as is not None:
        keep_as.parent.mkdir(parents=True, exist_ok=True)
        keep_as.write_text(f"{arm.arm} {seed}")
        return {"test/pixel": 0.5}, 0.5
    return {"test/acc": 0.5 + 0.1 * ("after" in arm.arm)}, 0.5


def test_a_pending_entry_runs_stages_once_per_seed_for_every_arm_built_on_them(scratch_zoo, tmp_path, monkeypatch):
    """An entry whose evidence is still running lives in zoo/pending/ without weights: zoo evidence records
    into it, zoo.load refuses it by name, and a pre-training stage is fitted once per seed however many arms
    start from it, each arm getting that seed's checkpoint in place of {after}."""
    from zoo import evidence

    monkeypatch.setattr(evidence, "STAGE_ROOT", tmp_path / "stages")
    arm = {"config": ["recipes/graph_mlp/tiny.yaml"]}
    raw = {
        "name": "toy-staged",
        "method": "toy",
        "task": "classification",
        "evidence": {
            "metric": "test/acc",
            "stages": [{"arm": "pretrain", **arm}],
            "arms": [
                {"arm": "scratch", "role": "baseline", **arm},
                {"arm": "after A", "after": "pretrain", "args": ["--init={after}"], **arm},
                {"arm": "after B", "after": "pretrain", "args": ["--init={after}", "--b"], **arm},
            ],
        },
    }
    with pytest.raises(ValueError, match="weights"):
        registry.write_entry(raw, registry.entries_dir())  # a published entry needs weights
    registry.pending_dir().mkdir()
    registry.write_entry(raw, registry.pending_dir())
    with pytest.raises(KeyError, match="unknown zoo entry"):
        zoo.get("toy-staged")  # nothing to load yet
    with pytest.raises(ValueError, match="not published yet.*zoo publish toy-staged"):
        _ = registry.get("toy-staged", pending=True).weights
    STAGE_CALLS.clear()
    results = evidence.run("toy-staged", seeds=2, fit=staged_fit)
    stage_fits = [(a, s) for a, s, _ in STAGE_CALLS if a == "pretrain"]
    assert stage_fits == [("pretrain", 0), ("pretrain", 1)]  # once per seed, before the arms
    spec = registry.get("toy-staged", pending=True).meta.evidence
    for name, seed, args in STAGE_CALLS:
        if name.startswith("after"):
            ckpt = evidence.stage_checkpoint("toy-staged", spec.stage("pretrain"), seed)
            assert args[0] == f"--init={ckpt}" and ckpt.read_text() == f"pretrain {seed}"
    assert len(STAGE_CALLS) == 2 + 3 * 2
    on_disk = registry.get("toy-staged", pending=True).meta.results
    assert [r.seed for r in on_disk.stage_runs["pretrain"]] == [0, 1] and on_disk.stage_runs["pretrain"][0].test
    assert {r["arm"] for r in results["rows"]} == {"scratch", "after A", "after B"}
    STAGE_CALLS.clear()
    evidence.run("toy-staged", seeds=2, fit=staged_fit)
    assert STAGE_CALLS == []  # everything recorded: nothing refitted
    raw = registry.get("toy-staged", pending=True).raw
    raw["evidence"]["stages"][0]["args"] = ["--longer"]  # the stage changed: it and the arms on it rerun
    registry.write_entry(raw, registry.pending_dir())
    evidence.run("toy-staged", seeds=1, fit=staged_fit)
    assert [a for a, _, _ in STAGE_CALLS] == ["pretrain", "after A", "after B"]
    raw["evidence"]["arms"][1]["after"] = "no-such-stage"
    with pytest.raises(ValueError, match="not a stage of"):
        registry.write_entry(raw, registry.pending_dir())


def test_publishing_an_arm_built_on_a_lost_stage_refits_the_stage_first(scratch_zoo, toy_ckpt, tmp_path, monkeypatch):
    """On a new machine the recorded runs survive and the kept checkpoints do not: publishing an arm that
    starts from a stage refits the stage at seed 0, refuses it if it does not reproduce its recorded run,
    and only then refits the arm with {after} filled in."""
    import shutil

    from zoo import evidence, publish

    monkeypatch.setattr(evidence, "STAGE_ROOT", tmp_path / "stages")
    ckpt, _ = toy_ckpt
    arm = {"config": ["recipes/graph_mlp/tiny.yaml"]}
    after = {"arm": "after A", "role": "distilled", "after": "pretrain", "args": ["--init={after}"], **arm}
    spec = {"metric": "test/acc", "stages": [{"arm": "pretrain", **arm}],
            "arms": [{"arm": "scratch", "role": "baseline", **arm}, after]}  # fmt: skip
    publishing_zoo(scratch_zoo, toy_ckpt, {"arm": "after A", "seeds": 1}, spec)
    calls = []

    def fit(arm, seed, keep=None, keep_as=None, pixel=0.5):
        calls.append((arm.arm, list(arm.args)))
        if keep_as is not None:
            keep_as.parent.mkdir(parents=True, exist_ok=True)
            keep_as.write_text("stage")
            return {"test/pixel": pixel}, None
        if keep is not None and seed == 0:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, keep / f"{evidence_slug(arm)}.ckpt")
        return {"test/acc": 0.6}, 0.6, {}  # as cli.evidence_fit: per-sample scores last (none here)

    evidence.run("toy-student", seeds=1, fit=fit)
    shutil.rmtree(tmp_path / "stages")  # a new machine
    calls.clear()
    with pytest.raises(ValueError, match=r"the refit of 'pretrain' at seed 0 does not reproduce its recorded run"):
        publish.publish("toy-student", lambda *a, **k: fit(*a, **k, pixel=0.7), lambda f: None, keep=tmp_path / "k")
    assert [c[0] for c in calls] == ["pretrain"] and not any((tmp_path / "stages").rglob("*.ckpt"))
    calls.clear()
    publish.publish("toy-student", fit, lambda f: None, keep=tmp_path / "k")
    stage = evidence.stage_checkpoint("toy-student", registry.get("toy-student").meta.evidence.stage("pretrain"), 0)
    assert calls == [("pretrain", []), ("after A", [f"--init={stage}"])]


def test_publishing_what_an_arm_starts_from_refits_a_lost_source_and_exports_it(
    scratch_zoo, toy_ckpt, tmp_path, monkeypatch
):
    """``export: after`` (a dense probe's backbone): when the source stage's checkpoint was lost with the machine,
    publish refits it at seed 0, checks it against its recorded run, and exports that checkpoint; the probe arm
    itself is not refitted."""
    import shutil

    from zoo import evidence, publish

    monkeypatch.setattr(evidence, "STAGE_ROOT", tmp_path / "stages")
    ckpt, _ = toy_ckpt
    arm = {"config": ["recipes/graph_mlp/tiny.yaml"]}
    probe = {"arm": "probe", "role": "distilled", "after": "pretrain", "args": ["--init={after}"], **arm}
    spec = {"metric": "test/acc", "stages": [{"arm": "pretrain", **arm}], "arms": [probe]}
    publishing_zoo(scratch_zoo, toy_ckpt, {"arm": "probe", "export": "after", "seeds": 1}, spec)
    calls = []

    def fit(arm, seed, keep=None, keep_as=None):
        calls.append(arm.arm)
        if keep_as is not None:
            keep_as.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ckpt, keep_as)
            return {"test/pixel": 0.5}, None
        return {"test/acc": 0.6}, 0.6

    evidence.run("toy-student", seeds=1, fit=fit)
    shutil.rmtree(tmp_path / "stages")  # a new machine
    calls.clear()
    weights = publish.publish("toy-student", fit, lambda f: None, keep=tmp_path / "k")
    assert calls == ["pretrain"] and weights.is_file() and zoo.get("toy-student").sha256


def test_publishing_a_pending_entry_moves_its_metafile_among_the_entries(scratch_zoo, toy_ckpt):
    """The exported weights join the pending metafile's recorded evidence; the pending file is removed."""
    registry.pending_dir().mkdir()
    registry.write_entry({**META, "name": "toy-student", "summary": "evidence ran first"}, registry.pending_dir())
    export.export(toy_ckpt[0], "toy-student", None, scratch_zoo["weights"])
    assert zoo.get("toy-student").meta.summary == "evidence ran first" and zoo.get("toy-student").sha256
    assert registry.list_pending() == [] and zoo.load("toy-student") is not None


def test_an_arm_shared_from_another_entry_shows_its_runs_and_is_never_refitted(scratch_zoo):
    """One grid, two entries: an arm with runs_from takes the other entry's recorded runs of the same arm; if
    the two arms differ, sharing is refused by name."""
    from zoo import evidence

    arm = {"arm": "scratch", "role": "baseline", "config": ["recipes/graph_mlp/tiny.yaml"]}
    registry.pending_dir().mkdir()
    owner = {"name": "toy-owner", "method": "toy", "task": "t", "evidence": {"metric": "test/acc", "arms": [arm]}}
    registry.write_entry(owner, registry.pending_dir())
    evidence.run("toy-owner", seeds=2, fit=staged_fit)
    shared = dict(arm, runs_from="toy-owner")
    other = {"name": "toy-user", "method": "toy", "task": "t", "evidence": {"metric": "test/acc", "arms": [shared]}}
    registry.write_entry(other, registry.pending_dir())
    STAGE_CALLS.clear()
    rows = evidence.run("toy-user", seeds=2, fit=staged_fit)["rows"]
    assert STAGE_CALLS == [] and rows[0]["arm"] == "scratch" and rows[0]["n"] == 2
    mine, theirs = registry.get("toy-user", pending=True).meta.results, registry.get("toy-owner", pending=True)
    assert (mine.command, mine.hardware) == (theirs.meta.results.command, theirs.meta.results.hardware)
    assert mine.command.startswith("python cli.py zoo evidence toy-owner")  # the runs were fitted there
    other["evidence"]["arms"][0]["args"] = ["--trainer.max_epochs=9"]
    registry.write_entry(other, registry.pending_dir())
    with pytest.raises(ValueError, match="differs from the arm of the same name in 'toy-owner'"):
        evidence.run("toy-user", seeds=2, fit=staged_fit)


def test_an_arm_can_start_after_another_arm_and_report_its_own_headline(scratch_zoo, tmp_path, monkeypatch):
    """A dense probe of a fine-tuned encoder: the probed arm is fitted first and kept at every seed, the probe
    arm gets its checkpoint and reports test/miou in a table of its own, never paired with the baseline."""
    from zoo import evidence

    monkeypatch.setattr(evidence, "STAGE_ROOT", tmp_path / "stages")
    config = ["recipes/graph_mlp/tiny.yaml"]
    raw = {
        "name": "toy-probed",
        "method": "toy",
        "task": "t",
        "evidence": {
            "metric": "test/acc",
            "scale": 100,
            "arms": [
                {"arm": "probe of B", "after": "B", "args": ["--backbone={after}"], "metric": "test/miou",
                 "config": config},
                {"arm": "A", "role": "baseline", "config": config},
                {"arm": "B", "config": config},
            ],
        },
    }  # fmt: skip
    registry.pending_dir().mkdir()
    registry.write_entry(raw, registry.pending_dir())

    def fit(arm, seed, keep=None, keep_as=None):
        STAGE_CALLS.append((arm.arm, seed, list(arm.args)))
        if keep_as is not None:
            keep_as.parent.mkdir(parents=True, exist_ok=True)
            keep_as.write_text(arm.arm)
        return {"test/acc": 0.5 + 0.01 * seed, "test/miou": 0.25}, 0.5

    STAGE_CALLS.clear()
    results = evidence.run("toy-probed", seeds=2, fit=fit)
    order = [(a, s) for a, s, _ in STAGE_CALLS]
    assert order.index(("B", 1)) < order.index(("probe of B", 0)) and len(order) == 6  # B once per seed
    probe_args = {s: args for a, s, args in STAGE_CALLS if a == "probe of B"}
    assert probe_args[1][0].startswith("--backbone=") and probe_args[1][0].endswith("-seed1.ckpt")
    rows = {r["arm"]: r for r in results["rows"]}
    assert rows["probe of B"]["metric"] == "test/miou" and rows["probe of B"]["mean"] == 25.0
    assert "paired" not in rows["probe of B"] and "paired" in rows["B"]
    card = cards.render_entry(registry.get("toy-probed", pending=True).meta)
    assert "### Results: test/acc" in card and "### Results: test/miou" in card


def test_a_run_records_its_thread_count_and_a_lost_checkpoint_is_refitted_at_it(scratch_zoo, tmp_path):
    """A CPU fit is deterministic only at a fixed number of torch threads, so each run records its count and the
    refit of a lost seed-0 checkpoint (publish, figures) runs at it, then gives the process its own back."""
    from zoo import evidence, publish

    seen = []

    def fit(arm, seed, keep=None):
        seen.append(torch.get_num_threads())
        if keep is not None and seed == 0:
            keep.mkdir(parents=True, exist_ok=True)
            evidence.kept_checkpoint(keep, arm).write_text("weights")
        return {"test/acc": 0.5 + 0.01 * seed}, 0.5

    arm = {"arm": "scratch", "role": "baseline", "config": ["recipes/graph_mlp/tiny.yaml"]}
    registry.pending_dir().mkdir()
    raw = {"name": "toy-threads", "method": "toy", "task": "t", "evidence": {"metric": "test/acc", "arms": [arm]}}
    registry.write_entry(raw, registry.pending_dir())
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        evidence.run("toy-threads", seeds=2, fit=fit)
        runs = registry.get("toy-threads", pending=True).meta.results.runs["scratch"]
        assert [r.threads for r in runs] == [1, 1]
        torch.set_num_threads(2)
        seen.clear()
        publish.arm_checkpoint("toy-threads", "scratch", fit, keep=tmp_path / "kept")
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_evidence_worker_busy_with_a_fit_dies_with_the_evidence_process(tmp_path):
    """Killing `zoo evidence --jobs N` kills its workers: one that outlived it would go on writing the
    checkpoints that the resumed grid reads back (SIGTERM to the parent used to leave both fits running)."""
    script = tmp_path / "grid.py"
    script.write_text(
        "import multiprocessing, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from zoo.evidence import _worker_init\n"
        "if __name__ == '__main__':\n"
        "    spawn = multiprocessing.get_context('spawn')\n"
        "    pool = ProcessPoolExecutor(1, mp_context=spawn, initializer=_worker_init, initargs=(1,))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 600)\n"
        "    time.sleep(600)\n"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    worker = int(parent.stdout.readline())
    time.sleep(0.5)  # the worker is inside time.sleep(600)
    parent.kill()
    parent.wait()

    def alive(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status")
        try:
            return "zombie" not in status.read_text()
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)
