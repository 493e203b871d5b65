"""Hostile or careless input, each built here in tmp_path: every one must fail early with a message naming the
file, key or value at fault (never a bare TypeError/KeyError/IndexError from deep inside a library), and the
CLI must end with ``error: <that message>``. Non-finite data are refused where they enter, and a non-finite
model output stops the evaluation naming the metric (issue 15, items 5 and 7)."""

from __future__ import annotations

import json
import pickle
import re
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import ToyDistill, ToyNet
from safetensors.torch import save_file
from torch_geometric.data import Data

import cli
from zoo import specs, store

MLP = "modules.graph_mlp.MLP"
MLP_ARGS = {"in_channels": 4, "hidden_channels": 8, "out_channels": 3}
TINY = "recipes/graph_mlp/tiny.yaml"


def weights_with_spec(path, spec, tensors=None):
    save_file(tensors or {"w": torch.zeros(1)}, path, metadata={store.SPEC_KEY: json.dumps(spec)})
    return path


def last_error_line(monkeypatch, capsys, args: list[str]) -> str:
    """What a user of ``python cli.py ARGS`` reads last: the CLI must exit 2 with ``error: ...``."""
    monkeypatch.setattr(sys, "argv", ["cli.py", *args])
    with pytest.raises(SystemExit) as exit_:
        cli.console_main()
    assert exit_.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------------- specs in weights files


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"class_path": MLP, "init_args": [1, 2]}, r"init_args must be a mapping, got list"),
        ({"class_path": 5, "init_args": {}}, r"class_path \(from .*w\.safetensors\) must be a string .* got int 5"),
        (
            {"class_path": MLP, "init_args": {**MLP_ARGS, "hiden_channels": 8}},
            r"MLP takes no argument 'hiden_channels' \(did you mean 'hidden_channels'\?\)",
        ),
        ({"class_path": MLP, "init_args": {}}, r"MLP needs 'in_channels', 'hidden_channels', 'out_channels'"),
        (
            {"class_path": MLP, "init_args": {**MLP_ARGS, "in_channels": "1433"}},
            r"MLP argument 'in_channels' must be int, got str '1433'",
        ),
        (
            {"class_path": MLP, "init_args": {**MLP_ARGS, "dropout": [0.5]}},
            r"MLP argument 'dropout' must be float, got list \[0.5\]",
        ),
        (  # the right type, a value the network refuses: torch's message alone names neither class nor value
            {"class_path": MLP, "init_args": {**MLP_ARGS, "in_channels": -4}},
            r"MLP\(in_channels=-4, .*\): Trying to create tensor with negative dimension -4",
        ),
    ],
    ids=["init-args-list", "class-path-int", "misspelt-arg", "missing-args", "str-for-int", "list-for-float", "neg"],
)
def test_a_bad_spec_in_a_weights_file_names_the_file_the_class_and_the_argument(tmp_path, spec, message):
    path = weights_with_spec(tmp_path / "w.safetensors", spec)
    with pytest.raises(ValueError, match=message) as err:
        store.load(str(path))
    assert str(path) in str(err.value)


def test_a_folder_given_as_weights_is_named_as_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"weights file .* is a folder"):
        store.resolve(str(tmp_path))


def test_specs_from_python_still_build_with_tuples_and_defaults():
    """The type check accepts what module_spec records (tuples, not only JSON lists) and omitted defaults."""
    from modules.codec import Codec

    spec = {"class_path": "modules.codec.Codec", "init_args": {"encoder_dims": (16, 16), "encoder_depths": [1, 1]}}
    assert isinstance(specs.build(spec), Codec)


# ---------------------------------------------------------------------- a loaded network given NaN


def test_a_loaded_network_refuses_non_finite_input_naming_its_source(tmp_path):
    net = ToyNet()
    spec = specs.module_spec(net)
    path = weights_with_spec(tmp_path / "toy.safetensors", spec, dict(net.state_dict()))
    loaded = store.load(str(path))
    x = torch.randn(4, 8)
    assert torch.isfinite(loaded(x)).all()
    x[1, 2], x[3, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=rf"{path} \(ToyNet\) was given 2 non-finite value\(s\) \(NaN/inf\) of 32"):
        loaded(x)
    pickle.loads(pickle.dumps(loaded))  # the check is no closure: a loaded network still pickles (ddp_spawn)


def test_a_zoo_student_given_nan_features_names_the_entry():
    import zoo

    student = zoo.load("gcn-csbm")
    x, edge_index = torch.rand(5, student.init_args["in_channels"]), torch.tensor([[0, 1, 2], [1, 2, 3]])
    x[4, 7] = float("nan")
    with pytest.raises(ValueError, match=r"^zoo:gcn-csbm \(GNN\) was given 1 non-finite value\(s\) .* \(argument 0,"):
        student(x, edge_index)


def test_a_loaded_graph_network_checks_the_features_of_a_pyg_batch(tmp_path):
    from torch_geometric.data import Batch

    from modules.mirage import MirageGNN

    net = MirageGNN(in_channels=3, hidden_channels=4, pool="sum")
    path = weights_with_spec(tmp_path / "gnn.safetensors", specs.module_spec(net), dict(net.state_dict()))
    loaded = store.load(str(path))
    graph = Data(x=torch.rand(3, 3), edge_index=torch.tensor([[0, 1], [1, 2]]))
    assert loaded(Batch.from_data_list([graph])).shape == (1, 2)
    graph.x[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"gnn\.safetensors \(MirageGNN\) was given 1 non-finite .* \(argument 0\.x"):
        loaded(Batch.from_data_list([graph]))


# ---------------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: [unclosed\n  x: :\n", r"config file .*bad\.yaml is not valid YAML at line 2, column 4"),
        ("- a\n- b\n", r"config file .*bad\.yaml must hold a YAML mapping of keys, but it is a list"),
        ("", r"config file .*bad\.yaml must hold a YAML mapping of keys, but it is empty"),
    ],
    ids=["bad-yaml", "list", "empty"],
)
def test_a_bad_config_file_is_named_with_the_line(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    last = last_error_line(monkeypatch, capsys, ["fit", f"--config={tmp_path / 'bad.yaml'}"])
    assert last.startswith("error: config file") and re.search(message, last), last


def test_a_missing_config_file_is_named(monkeypatch, capsys, tmp_path):  # already good: a regression test
    last = last_error_line(monkeypatch, capsys, ["fit", "--config", str(tmp_path / "nope.yaml")])
    assert "File does not exist" in last and "nope.yaml" in last


def test_a_wrong_typed_init_arg_names_the_option_and_the_class(monkeypatch, capsys):
    args = ["fit", f"--config={TINY}", "--model.init_args.student.init_args.in_channels=abc"]
    last = last_error_line(monkeypatch, capsys, args)
    assert last == (
        "error: --model.init_args.student.init_args.in_channels (modules.graph_mlp.MLP): "
        "Expected a <class 'int'>. Got value: abc"
    )
    last = last_error_line(monkeypatch, capsys, ["fit", f"--config={TINY}", "--trainer.max_epochs=abc"])
    assert last == "error: --trainer.max_epochs: Expected a <class 'int'>; got abc"


def test_a_value_the_constructor_refuses_names_the_network_and_its_arguments(monkeypatch, capsys):
    args = ["fit", f"--config={TINY}", "--model.init_args.student.init_args.in_channels=-1"]
    last = last_error_line(monkeypatch, capsys, args)
    assert last.startswith("error: MLP(in_channels=-1, hidden_channels=128,") and "negative dimension -1" in last


def test_an_unknown_class_path_and_an_unknown_entry_read_plainly(monkeypatch, capsys):
    last = last_error_line(
        monkeypatch, capsys, ["fit", f"--config={TINY}", "--model.class_path=modules.graph_mlp.Nope"]
    )
    assert last == "error: --model (modules.graph_mlp.Nope): module 'modules.graph_mlp' has no attribute 'Nope'"
    teacher = "--model.init_args.teacher.init_args.weights=zoo:no-such-entry"
    last = last_error_line(monkeypatch, capsys, ["fit", f"--config={TINY}", teacher])
    assert last.startswith("error: unknown zoo entry 'no-such-entry'")  # a KeyError's message, without its quotes
    last = last_error_line(monkeypatch, capsys, ["zoo", "show", "no-such-entry"])
    assert last.startswith("error: unknown zoo entry 'no-such-entry'")


def test_teacher_weights_with_a_bad_spec_end_with_the_file_class_and_argument(tmp_path, monkeypatch, capsys):
    path = weights_with_spec(
        tmp_path / "t.safetensors", {"class_path": MLP, "init_args": {**MLP_ARGS, "in_channels": 1.5}}
    )
    args = ["fit", f"--config={TINY}", f"--model.init_args.teacher.init_args.weights={path}"]
    last = last_error_line(monkeypatch, capsys, args)
    assert last.startswith(f"error: spec '{MLP}' (from {path}): MLP argument 'in_channels' must be int, got float 1.5")


@pytest.mark.parametrize("what", ["text", "list", "folder", "missing"])
def test_a_file_that_is_no_lightning_checkpoint_is_named(scratch_zoo, tmp_path, monkeypatch, capsys, what):
    path = tmp_path / "x.ckpt"
    if what == "text":
        path.write_text("model: not a checkpoint\n")
    elif what == "list":
        torch.save([1, 2], path)
    elif what == "folder":
        path.mkdir()
    expected = {
        "text": r"is not a Lightning checkpoint that opens with torch\.load\(weights_only=True\)",
        "list": r"is not a Lightning checkpoint: it holds a list",
        "folder": r"checkpoint .* is a folder",
        "missing": r"checkpoint .* does not exist",
    }[what]
    for args in (["zoo", "export", str(path), "--name", "x-y"], ["test", f"--config={TINY}", f"--ckpt_path={path}"]):
        last = last_error_line(monkeypatch, capsys, args)
        assert str(path) in last and re.search(expected, last), last


@pytest.mark.parametrize(
    ("text", "message"),
    [("a: [\n", r"is not valid YAML at line 2"), ("- method\n", r"must hold a YAML mapping of keys, but it is a list")],
)
def test_a_bad_meta_file_for_export_is_named(scratch_zoo, tmp_path, monkeypatch, capsys, text, message):
    torch.save({"state_dict": {}, "distillzoo": {"student_spec": {"class_path": MLP, "init_args": MLP_ARGS}}},
               tmp_path / "x.ckpt")  # fmt: skip
    (tmp_path / "meta.yaml").write_text(text)
    args = ["zoo", "export", str(tmp_path / "x.ckpt"), "--name", "x-y", "--meta", str(tmp_path / "meta.yaml")]
    last = last_error_line(monkeypatch, capsys, args)
    assert last.startswith(f"error: --meta file {tmp_path / 'meta.yaml'}") and re.search(message, last)


# ---------------------------------------------------------------------- audio


def wav(path, samples, subtype="PCM_16"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, 16000, subtype=subtype)


def tone(n=8000):
    return (0.1 * np.sin(np.arange(n) / 5)).astype(np.float32)


def test_audio_with_nan_is_refused_naming_the_file(tmp_path):
    from datamodules.audio import SpeechDataModule

    for speaker in (1, 2, 3):
        wav(tmp_path / f"train-clean/{speaker}-1-0000.wav", tone())
    wav(tmp_path / "test-other/9-1-0000.wav", tone())
    bad = tone()
    bad[100] = np.nan
    wav(tmp_path / "train-clean/4-1-0000.wav", bad, subtype="FLOAT")  # a float WAV can hold NaN
    dm = SpeechDataModule(str(tmp_path), val_speakers=1)
    with pytest.warns(UserWarning, match=r"4-1-0000\.wav \(has 1 non-finite samples \(NaN/inf\) of 8000\)"):
        dm.setup()
    assert dm.skipped_paths == [str(tmp_path / "train-clean/4-1-0000.wav")]
    assert all(torch.isfinite(u.audio).all() for u in dm.train_set + dm.val_set + dm.test_set)

    for speaker in (1, 2, 3):  # nothing usable left: the error says why, not only that
        wav(tmp_path / f"train-clean/{speaker}-1-0000.wav", bad, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"none of its 4 audio files is usable .*non-finite"):
        SpeechDataModule(str(tmp_path), val_speakers=1).setup()
    with pytest.raises(ValueError, match=r"cannot read predict file .*1-1-0000\.wav: .* 1 non-finite samples"):
        list(SpeechDataModule(predict_files=[str(tmp_path / "train-clean/1-1-0000.wav")]).predict_dataloader())


def test_an_audio_folder_of_other_formats_says_what_it_found(tmp_path):
    from datamodules.audio import SpeechDataModule

    (tmp_path / "train-clean").mkdir()
    (tmp_path / "train-clean/1-1-0000.mp3").write_bytes(b"ID3 not decoded")
    (tmp_path / "test-other").mkdir()
    with pytest.raises(
        ValueError, match=r"no usable audio in .*train-clean: no \*\.flac or \*\.wav \(only \.mp3 files\)"
    ):
        SpeechDataModule(str(tmp_path)).setup()


# ---------------------------------------------------------------------- graphs


def write_planetoid(raw, name="toy", train=20, val=500, test=30, features=5, classes=3):
    """A tiny Planetoid raw set in PyG's format: pickled CSR features, one-hot labels, adjacency dict."""
    import scipy.sparse as sp

    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = {"x": train, "allx": train + val, "tx": test}
    n = train + val + test

    def dump(suffix, obj):
        (raw / f"ind.{name}.{suffix}").write_bytes(pickle.dumps(obj, protocol=4))

    for key, count in rows.items():
        dump(key, sp.csr_matrix(rng.integers(0, 2, (count, features)).astype(np.float32)))
        dump(key.replace("x", "y"), np.eye(classes, dtype=np.int64)[rng.integers(0, classes, count)])
    dump("graph", {i: [(i + 1) % n] for i in range(n)})
    (raw / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in range(train + val, n)))


@pytest.mark.parametrize("damage", ["truncated-x", "text-index", "index-past-nodes"])
def test_a_damaged_planetoid_raw_file_is_named(tmp_path, monkeypatch, damage):
    from datamodules.graphs import PlanetoidDataModule

    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "root" / "Toy" / "raw"
    write_planetoid(raw)
    if damage == "truncated-x":
        (raw / "ind.toy.x").write_bytes((raw / "ind.toy.x").read_bytes()[:40])
        message = r"ind\.toy\.x is not a complete pickle \(UnpicklingError: pickle data was truncated\)"
    elif damage == "text-index":
        (raw / "ind.toy.test.index").write_text("520\nfive hundred\n")
        message = r"ind\.toy\.test\.index must hold one integer node index per line"
    else:
        (raw / "ind.toy.test.index").write_text("520\n99999\n")
        message = r"ind\.toy\.test\.index holds node index 99999, but allx and tx have 550 rows"
    with pytest.raises(ValueError, match=rf"dataset 'Toy': cannot process the raw files in .*root/Toy/raw: {message}"):
        PlanetoidDataModule(root=str(tmp_path / "root"), name="Toy").setup()


def test_the_tiny_planetoid_set_of_these_tests_is_valid(tmp_path, monkeypatch):
    from datamodules.graphs import PlanetoidDataModule

    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    write_planetoid(tmp_path / "root" / "Toy" / "raw")
    dm = PlanetoidDataModule(root=str(tmp_path / "root"), name="Toy")
    assert (dm.num_features, dm.num_classes) == (5, 3) and dm.full_graph.num_nodes == 550


def write_tu(raw, name="TOY"):
    """Six graphs of 2 or 3 nodes (a path), labels alternating."""
    raw.mkdir(parents=True)
    edges, indicator, labels, offset = [], [], [], 0
    for g in range(6):
        n = 2 + g % 2
        edges += [(offset + i + 1, offset + i + 2) for i in range(n - 1)] + [
            (offset + i + 2, offset + i + 1) for i in range(n - 1)
        ]
        indicator += [g + 1] * n
        labels.append(g % 2)
        offset += n
    (raw / f"{name}_A.txt").write_text("".join(f"{u}, {v}\n" for u, v in edges))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{y}\n" for y in labels))
    (raw / f"{name}_node_labels.txt").write_text("".join(f"{i % 2}\n" for i in range(len(indicator))))


@pytest.mark.parametrize("damage", ["text-in-A", "node-past-indicator", "labels-short"])
def test_a_damaged_tu_raw_file_is_named(tmp_path, monkeypatch, damage):
    from datamodules.graphs import TUDataModule

    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "TOY" / "raw"
    write_tu(raw)
    if damage == "text-in-A":
        (raw / "TOY_A.txt").write_text("1, 2\ntwo, one\n")
        message = r"TOY_A\.txt line 2 is 'two, one': expected comma-separated numbers"
    elif damage == "node-past-indicator":
        (raw / "TOY_A.txt").write_text((raw / "TOY_A.txt").read_text() + "1, 40\n40, 1\n")
        message = r"TOY_A\.txt has node ids in \[1, 40\], but TOY_graph_indicator\.txt has 15 nodes"
    else:
        (raw / "TOY_graph_labels.txt").write_text("0\n1\n")
        message = r"TOY_graph_labels\.txt has 2 rows, but TOY_graph_indicator\.txt names 6 graphs"
    with pytest.raises(ValueError, match=rf"'TOY'.* raw files in .*TOY/raw.*{message}"):
        TUDataModule(root=str(tmp_path), name="TOY", val_fraction=0.34, test_fraction=0.34).setup()


# ---------------------------------------------------------------------- multi-view


def test_multiview_list_files_and_inputs_name_the_bad_row_and_file(tmp_path):
    from datamodules.multiview import MultiViewDataModule

    np.save(tmp_path / "ok.npy", np.zeros(3, np.float32))
    listing = tmp_path / "list.csv"
    listing.write_text("id,path,label,split\na,ok.npy,1,train\nb,ok.npy,cat,val\nc,ok.npy,0,test\n")
    with pytest.raises(ValueError, match=r"list\.csv: id 'b' has label 'cat', expected an integer class"):
        MultiViewDataModule(list_file=str(listing)).setup()
    listing.write_text("id,path,label,split\na,ok.npy,1,train\nb,clip.txt,0,val\nc,ok.npy,0,test\n")
    with pytest.raises(ValueError, match=r"id 'b' has path 'clip\.txt', whose suffix the reader cannot read"):
        MultiViewDataModule(list_file=str(listing)).setup()
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan], np.float32))
    listing.write_text("id,path,label,split\na,nan.npy,1,train\nb,ok.npy,0,val\nc,ok.npy,0,test\n")
    with pytest.raises(ValueError, match=r"cannot read student input .*nan\.npy: it has 1 non-finite values"):
        MultiViewDataModule(list_file=str(listing)).setup()
    (tmp_path / "bad.png").write_bytes(b"\x89PNG truncated")
    listing.write_text("id,path,label,split\na,bad.png,1,train\nb,ok.npy,0,val\nc,ok.npy,0,test\n")
    with pytest.raises(ValueError, match=r"cannot read student input .*bad\.png"):
        MultiViewDataModule(list_file=str(listing)).setup()


def test_teacher_features_with_nan_or_odd_ids_are_refused_naming_the_file(tmp_path):
    from datamodules.multiview import read_teacher_features

    path = tmp_path / "t.safetensors"
    save_file({"features": torch.zeros(2, 3)}, path, metadata={"ids": "5"})
    with pytest.raises(ValueError, match=r"t\.safetensors: metadata 'ids' must be a JSON list of sample id strings"):
        read_teacher_features(path, ["a", "b"])
    features = torch.zeros(2, 3)
    features[1, 0] = float("nan")
    save_file({"features": features}, path, metadata={"ids": json.dumps(["a", "b"])})
    with pytest.raises(ValueError, match=r"t\.safetensors has 1 non-finite values .* first row 1 \(id 'b'\)"):
        read_teacher_features(path, ["a", "b"])


def test_a_uci_view_file_that_is_no_table_of_numbers_is_named(tmp_path):
    from datamodules.multiview.mfeat import read_uci_mfeat

    (tmp_path / "mfeat-fou").write_text("0.1 0.2\n0.3 oops\n")
    with pytest.raises(ValueError, match=r"mfeat-fou is not a table of numbers \(view 'fou'\)"):
        read_uci_mfeat(tmp_path)
    (tmp_path / "mfeat-fou").write_text("0.1 nan\n")
    with pytest.raises(ValueError, match=r"mfeat-fou has 1 non-finite values"):
        read_uci_mfeat(tmp_path)


# ---------------------------------------------------------------------- non-finite model output at evaluation


def test_a_non_finite_output_stops_evaluation_naming_the_metric():
    """A torchmetrics metric given NaN predictions, and a per-batch metric that is NaN, both stop the
    evaluation naming the metric and that the model output was non-finite."""
    from torchmetrics import MetricCollection
    from torchmetrics.regression import MeanSquaredError

    class Diverged(ToyDistill):
        def configure_metrics(self):
            return MetricCollection({"mse": MeanSquaredError()})

        def evaluate(self, batch, stage):
            out = self.student(batch[0])
            self.stage_metrics[stage].update(out[:, 0], batch[1].float())
            return {"loss": out.mean()}

    module = Diverged(student=ToyNet()).eval()
    module.setup("validate")
    with torch.no_grad():
        module.student.head.bias[0] = float("nan")
    batch = (torch.randn(4, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(
        FloatingPointError,
        match=r"Diverged: val metric 'mse' was given 4 non-finite values \(NaN/inf\) of 4 as its prediction "
        r"\(the model output\): the model output was non-finite",
    ):
        module.validation_step(batch, 0)

    class Returned(ToyDistill):
        def evaluate(self, batch, stage):
            return {"acc": torch.tensor(0.5), "loss": self.student(batch[0]).mean()}

    module = Returned(student=ToyNet()).eval()
    with torch.no_grad():
        module.student.head.bias[0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"Returned: test metric 'loss' is inf at batch 3.*model output"):
        module.test_step(batch, 3)


def test_a_codec_whose_output_is_nan_stops_before_pesq():
    """The DistilCodec case of the issue: NaN audio reached PESQ, which failed with an unrelated error."""
    from test_codec import TINY_D, student

    from modules.codec import Discriminators, DistilCodec

    module = DistilCodec(student(), None, discriminator=Discriminators(**TINY_D)).eval()
    module.setup("validate")
    with torch.no_grad():
        next(module.student.generator.parameters()).fill_(float("nan"))
    audio = torch.from_numpy(tone(4096)).view(1, 1, -1)
    with pytest.raises(FloatingPointError, match=r"DistilCodec: val metric '(stoi|pesq)' was given .* model output"):
        with torch.no_grad():
            module.validation_step(audio, 0)
