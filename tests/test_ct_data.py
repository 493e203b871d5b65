"""Sparse-view CT data (GloReDi): phantoms, HU/mu units, FBP simulation, noise, cache, splits and readers."""

from __future__ import annotations

import os
import shutil

import imageio.v3 as iio
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from skimage.transform import iradon, radon

import datamodules.ct as ct
from datamodules.ct import (
    CTDataModule,
    group_split,
    hu_to_mu,
    hu_window,
    mu_to_hu,
    read_deeplesion_png,
    read_dicom_folder,
    simulate,
    view_angles,
)
from datamodules.synthetic.phantoms import random_body_phantoms, random_ellipse_phantoms

SIZE = 32


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def mus():
    return hu_to_mu(random_ellipse_phantoms(3, SIZE, seed=5).astype(np.float64))


def mse(a, b):
    return float(np.mean((np.asarray(a, np.float64) - b) ** 2))


# ---------------------------------------------------------------------- phantoms and units


def test_phantoms_are_seeded_prefix_stable_and_in_hu_range():
    a = random_ellipse_phantoms(6, SIZE, seed=1)
    assert a.shape == (6, SIZE, SIZE) and a.dtype == np.float32
    np.testing.assert_array_equal(a, random_ellipse_phantoms(6, SIZE, seed=1))
    np.testing.assert_array_equal(a[:3], random_ellipse_phantoms(3, SIZE, seed=1))  # phantom i ignores n
    assert not np.array_equal(a, random_ellipse_phantoms(6, SIZE, seed=2))
    assert a.min() >= -1000 and a.max() <= 2000
    assert (a[:, 0, 0] == -1000).all() and (a[:, SIZE // 2, 0] == -1000).all()  # air outside the head
    assert (a.reshape(6, -1).max(1) >= 800).all()  # every head has a bone rim
    brain = a[:, SIZE // 2 - 2 : SIZE // 2 + 2, SIZE // 2 - 2 : SIZE // 2 + 2]
    assert (brain > -1000).all()  # the centre is inside the head
    r = np.hypot(*np.meshgrid(np.arange(SIZE) - SIZE // 2, np.arange(SIZE) - SIZE // 2))
    assert (a[:, r > SIZE // 2 - 0.5] == -1000).all()  # nothing outside the scanner's circle
    with pytest.raises(ValueError, match="size=4"):
        random_ellipse_phantoms(2, 4)


def test_body_phantoms_are_another_family_seeded_and_in_the_field_of_view():
    a, heads = random_body_phantoms(6, SIZE, seed=1), random_ellipse_phantoms(6, SIZE, seed=1)
    assert a.shape == (6, SIZE, SIZE) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:3], random_body_phantoms(3, SIZE, seed=1))  # phantom i ignores n
    assert not np.array_equal(a, random_body_phantoms(6, SIZE, seed=2))
    r = np.hypot(*np.meshgrid(np.arange(SIZE) - SIZE // 2, np.arange(SIZE) - SIZE // 2))
    assert (a[:, r > SIZE // 2 - 0.5] == -1000).all()  # nothing outside the scanner's circle
    fat = ((a > -130) & (a < -70)).reshape(6, -1).sum(1)
    gas = ((a > -1000) & (a < -790)).reshape(6, -1).sum(1)
    assert (fat > 0).all() and (gas > 0).all()  # a fat layer and gas pockets in every body
    assert (a.reshape(6, -1).max(1) < 950).all() and (heads.reshape(6, -1).max(1) >= 800).all()  # no skull rim
    wide = (a > -1000).any(1).sum(1) > (a > -1000).any(2).sum(1)  # columns spanned > rows spanned: a trunk
    assert wide.all()
    with pytest.raises(ValueError, match="size=4"):
        random_body_phantoms(2, 4)


def test_hu_mu_round_trip_clip_and_window():
    hu = np.linspace(-1000, 3000, 41)
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu, atol=1e-9)
    np.testing.assert_allclose(hu_to_mu(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.192, 0.384])
    assert hu_to_mu(np.array([-3000.0, -32768.0])).tolist() == [0.0, 0.0]  # clipped at air
    assert hu_to_mu(-3000.0, clip=False) < 0
    t = hu_to_mu(torch.tensor([-2000.0, 0.0]))
    assert torch.is_tensor(t) and t.tolist() == pytest.approx([0.0, 0.192])
    w = hu_window(hu_to_mu(torch.tensor([-1500.0, -1000.0, 500.0, 2000.0, 2500.0]), clip=False))
    assert torch.is_tensor(w)
    torch.testing.assert_close(w, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(hu_window(hu_to_mu(torch.tensor([40.0])), 400, 40), torch.tensor([0.5]))


# ---------------------------------------------------------------------- simulation


def test_angles_are_nested():
    sparse, teacher, full = view_angles(18), view_angles(36), view_angles(180)
    assert np.isin(sparse, teacher).all() and np.isin(teacher, full).all()  # exact, bitwise
    assert np.isin(view_angles(7), view_angles(14)).all()
    assert full[0] == 0 and full[-1] < 180


def test_more_views_reconstruct_better(mus):
    for mu in mus:
        sim = simulate(mu, views=9)
        assert set(sim) == {"image", "sparse", "teacher", "full"}
        assert all(v.shape == (SIZE, SIZE) and v.dtype == np.float32 for v in sim.values())
        errors = [mse(sim[k], sim["image"]) for k in ("full", "teacher", "sparse")]
        assert errors[0] < errors[1] < errors[2], errors
    # each set is the FBP of its own angles (the union projection is sliced correctly)
    image = simulate(mus[0], views=9)["image"].astype(np.float64)
    theta = view_angles(18)
    direct = iradon(radon(image, theta, circle=True), theta, output_size=SIZE, filter_name="ramp", circle=True)
    np.testing.assert_allclose(simulate(mus[0], views=9)["teacher"], direct, atol=1e-5)


def test_noise_is_seeded_and_off_is_deterministic(mus):
    clean = simulate(mus[0], 9, full_views=90)
    again = simulate(mus[0], 9, full_views=90)
    for k in clean:
        np.testing.assert_array_equal(clean[k], again[k])
    noisy = simulate(mus[0], 9, full_views=90, photons=1e3, seed=3)
    for k in ("sparse", "teacher"):
        assert np.abs(noisy[k] - clean[k]).max() > 1e-3
        assert mse(noisy[k], clean["image"]) > mse(clean[k], clean["image"])
    np.testing.assert_array_equal(noisy["full"], clean["full"])  # the target stays noise-free
    same = simulate(mus[0], 9, full_views=90, photons=1e3, seed=3)
    other = simulate(mus[0], 9, full_views=90, photons=1e3, seed=4)
    np.testing.assert_array_equal(noisy["sparse"], same["sparse"])
    assert not np.array_equal(noisy["sparse"], other["sparse"])
    # more photons, less noise
    bright = simulate(mus[0], 9, full_views=90, photons=1e6, seed=3)
    assert mse(bright["sparse"], clean["sparse"]) < mse(noisy["sparse"], clean["sparse"])


def test_bad_inputs_raise_with_numbers():
    with pytest.raises(ValueError, match=r"\(32, 30\)"):
        simulate(np.zeros((32, 30)), 4)
    with pytest.raises(ValueError, match=r"\(2, 32, 32\)"):
        simulate(np.zeros((2, 32, 32)), 4)
    with pytest.raises(ValueError, match=r"full_views=36.*views=40"):
        simulate(np.zeros((32, 32)), 40, full_views=36)
    with pytest.raises(ValueError, match=r"full_views=36.*teacher_views=40"):
        simulate(np.zeros((32, 32)), 20, full_views=36)  # teacher = 2 * 20
    with pytest.raises(ValueError, match="views=0"):
        simulate(np.zeros((32, 32)), 0)
    with pytest.raises(ValueError, match="photons=0"):
        simulate(np.zeros((32, 32)), 4, photons=0)
    with pytest.raises(ValueError, match=r"full_views=180.*teacher_views=200"):
        CTDataModule(views=100)
    with pytest.raises(ValueError, match=r"full_views=180.*views=200"):
        CTDataModule(views=200, teacher_views=10)


# ---------------------------------------------------------------------- datamodule, cache and splits


def small(**kwargs):
    return CTDataModule(
        **{"image_size": SIZE, "num_phantoms": 6, "views": 4, "full_views": 36, "batch_size": 4} | kwargs
    )


def test_cache_reused_recomputed_and_keyed_by_geometry(cache, monkeypatch):
    calls = []
    real = ct.simulate
    monkeypatch.setattr(ct.sparse_view, "simulate", lambda *a, **k: calls.append(1) or real(*a, **k))
    dm = small()
    dm.setup()
    assert len(calls) == 6 and not dm.from_cache
    assert dm.cache_path.is_file() and dm.cache_path.parent == cache / "ct"
    assert dm.cache_path.stem == dm.cache_key() and len(dm.cache_key()) == 64

    again = small()
    again.setup()
    assert len(calls) == 6 and again.from_cache  # no simulation: read from the cache
    for k in dm.images:
        torch.testing.assert_close(again.images[k], dm.images[k], rtol=0, atol=0)
    assert again.names == dm.names and again.stats == dm.stats

    keys = {dm.cache_key()} | {
        small(**change).cache_key()
        for change in (
            {"views": 6},
            {"teacher_views": 6},
            {"full_views": 72},
            {"image_size": 16},
            {"photons": 1e5},
            {"pixel_size": 0.1},
            {"seed": 1},
            {"num_phantoms": 7},
        )
    }
    assert len(keys) == 9
    assert small(split=(0.6, 0.2, 0.2)).cache_key() == dm.cache_key()  # the split is not simulated

    # a cache file holding another geometry's data is not trusted
    other = small(views=6)
    shutil.copy(dm.cache_path, cache / "ct" / f"{other.cache_key()}.safetensors")
    with pytest.warns(UserWarning, match="key differs"):
        other.setup()
    assert len(calls) == 12 and not other.from_cache
    assert not torch.equal(other.images["sparse"], dm.images["sparse"])

    # a corrupt file is recomputed and rewritten
    dm.cache_path.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="ignoring cache"):
        small().setup()
    assert len(calls) == 18
    small().setup()
    assert len(calls) == 18

    small(cache=False).setup()
    assert len(calls) == 24


def test_splits_disjoint_cover_and_batches(cache):
    dm = small(split=(0.5, 0.25, 0.25), num_phantoms=8)
    dm.setup()
    idx = dm.split_index
    everything = torch.cat([idx[s] for s in ("train", "val", "test")])
    assert sorted(everything.tolist()) == list(range(8))  # disjoint and covering
    assert dm.stats == {
        "slices": 8, "patients": 8,
        "train_slices": 4, "train_patients": 4, "val_slices": 2, "val_patients": 2,
        "test_slices": 2, "test_patients": 2,
    }  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"sparse", "teacher", "full", "image", "index"}
    for k in ("sparse", "teacher", "full", "image"):
        assert batch[k].shape == (4, 1, SIZE, SIZE) and batch[k].dtype == torch.float32
    assert batch["index"].dtype == torch.long and set(batch["index"].tolist()) <= set(idx["train"].tolist())
    j = int(batch["index"][0])
    torch.testing.assert_close(batch["full"][0, 0], dm.images["full"][j])
    predicted = torch.cat([b["index"] for b in dm.predict_dataloader()])
    assert predicted.tolist() == idx["test"].tolist()
    # whole groups: slices of one patient never straddle splits
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 5, 6, 7, 8, 9])
    parts = group_split(groups, (0.8, 0.1, 0.1), seed=3)
    assert sorted(torch.cat(list(parts.values())).tolist()) == list(range(16))
    seen = [set(groups[p].tolist()) for p in parts.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert any(not torch.equal(parts["test"], group_split(groups, (0.8, 0.1, 0.1), s)["test"]) for s in range(5))
    with pytest.raises(ValueError, match="2 patients"):
        group_split(torch.tensor([0, 0, 1]), (0.8, 0.1, 0.1), 0)


def test_out_of_family_test_set_is_a_second_loader_of_body_phantoms(cache):
    dm = small(num_phantoms=8, ood_phantoms=3)
    dm.setup()
    assert dm.stats["ood_slices"] == 3 and dm.ood_images["full"].shape == (3, SIZE, SIZE)
    test, ood = dm.test_dataloader()
    assert "ood" not in next(iter(test))
    batch = next(iter(ood))
    assert batch["ood"].all() and batch["full"].shape[0] == 3
    expected = hu_to_mu(random_body_phantoms(3, SIZE, seed=dm.seed).astype(np.float64))
    torch.testing.assert_close(dm.ood_images["image"], torch.from_numpy(expected).float())
    # cached on its own: a second datamodule reads both sets back, the same tensors
    again = small(num_phantoms=8, ood_phantoms=3)
    again.setup()
    assert again.from_cache and torch.equal(again.ood_images["sparse"], dm.ood_images["sparse"])
    assert not isinstance(small(num_phantoms=8).test_dataloader(), list)
    with pytest.raises(ValueError, match="ood_phantoms must be >= 0"):
        small(ood_phantoms=-1)


# ---------------------------------------------------------------------- DICOM


@pytest.fixture
def ct_small():
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def test_dicom_reader_applies_rescale_and_orders_slices(tmp_path, ct_small):
    folder = tmp_path / "patient"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "b.dcm")  # InstanceNumber 1
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.RescaleSlope, ds.RescaleIntercept, ds.InstanceNumber = 2, -1000, 0
    ds.save_as(folder / "c.dcm")
    first, second = read_dicom_folder(folder)  # InstanceNumber 0 (c.dcm) comes first
    pixels = ct_small.pixel_array.astype(np.float64)
    slope, intercept = float(ct_small.RescaleSlope), float(ct_small.RescaleIntercept)
    assert intercept == -1024  # the file's own tags, read by hand
    np.testing.assert_array_equal(second, pixels * slope + intercept)
    np.testing.assert_array_equal(first, pixels * 2 - 1000)
    assert first.dtype == np.float32 and first.shape == (128, 128)


@pytest.mark.parametrize("tag", ["RescaleIntercept", "PixelData"])
def test_dicom_missing_tag_raises_naming_the_file(tmp_path, tag):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    delattr(ds, tag)
    ds.save_as(tmp_path / f"no-{tag}.dcm")
    with pytest.raises(ValueError, match=f"no-{tag}.dcm"):
        read_dicom_folder(tmp_path)


def test_dicom_non_dicom_file_raises(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(ValueError, match="junk.dcm"):
        read_dicom_folder(tmp_path)


def test_dicom_datamodule_splits_by_patient(tmp_path, cache):
    root = tmp_path / "dicom"
    for p in range(4):
        (root / f"patient{p}" / "series").mkdir(parents=True)
        for i in range(2):
            shutil.copy(get_testdata_file("CT_small.dcm"), root / f"patient{p}" / "series" / f"{i}.dcm")
    dm = CTDataModule(str(root), "dicom", image_size=SIZE, views=4, full_views=36, split=(0.5, 0.25, 0.25))
    dm.setup()
    assert dm.stats["slices"] == 8 and dm.stats["patients"] == 4
    assert dm.images["image"].shape == (8, SIZE, SIZE) and float(dm.images["image"].min()) >= 0
    for s in ("train", "val", "test"):
        assert dm.stats[f"{s}_slices"] == 2 * dm.stats[f"{s}_patients"]
    owners = {s: {dm.names[i].split("/")[0] for i in dm.split_index[s].tolist()} for s in dm.split_index}
    assert sum(len(o) for o in owners.values()) == 4  # each patient in exactly one split


# ---------------------------------------------------------------------- DeepLesion PNG


def test_png_reader_offsets_and_rejects_8_bit(tmp_path):
    values = (32768 + np.arange(-1024, 3072, 16)).astype(np.uint16).reshape(16, 16)
    iio.imwrite(tmp_path / "slice.png", values)
    hu = read_deeplesion_png(tmp_path / "slice.png")
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu, values.astype(np.float64) - 32768)
    iio.imwrite(tmp_path / "eight.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"eight\.png.*uint8"):
        read_deeplesion_png(tmp_path / "eight.png")


def test_png_datamodule_groups_by_folder_and_rejects_non_square(tmp_path, cache):
    root = tmp_path / "Images_png"
    rng = np.random.default_rng(0)
    for p in range(3):
        (root / f"00000{p}_01_01").mkdir(parents=True)
        for i in range(2):
            iio.imwrite(root / f"00000{p}_01_01" / f"{i:03d}.png", rng.integers(31000, 34000, (48, 48), np.uint16))
    dm = CTDataModule(str(root), "png", image_size=SIZE, views=4, full_views=36)
    dm.setup()
    assert dm.stats["patients"] == 3 and dm.stats["slices"] == 6
    assert dm.patients == ["000000_01_01", "000001_01_01", "000002_01_01"]
    key = dm.cache_key()
    os.utime(root / "000001_01_01" / "001.png", ns=(1, 1))  # a changed file (mtime) is another data set
    assert dm.cache_key() != key
    iio.imwrite(root / "000002_01_01" / "002.png", np.full((48, 40), 32768, np.uint16))
    with pytest.raises(ValueError, match=r"002\.png.*\(48, 40\)"):
        CTDataModule(str(root), "png", image_size=SIZE, views=4, full_views=36).setup()
