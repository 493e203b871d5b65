"""Image datamodules: ImageFolder classification (embedded shapes, user folders, CIFAR-10 when present) and
CamVid-layout segmentation (embedded scenes, user folders, CamVid when present): splits, tensors, transforms and
bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image

from datamodules.images import CAMVID_CLASSES, ImageFolderDataModule, SegmentationDataModule, read_image
from datamodules.synthetic.scenes import SPLIT_SIZES, random_scenes, write_scenes_folder
from datamodules.synthetic.shapes import SHAPE_CLASSES, random_shapes, write_shapes_folder

CIFAR10 = SHARED_DATA / "cifar10"
CAMVID = SHARED_DATA / "camvid" / "CamVid"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def make_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (10, 12), seed: int = 0) -> Path:
    """``root/<class>/NNNN.png``: random RGB images of ``size`` (H, W)."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            save(root / name / f"{i:04d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def shapes_dm() -> ImageFolderDataModule:
    dm = ImageFolderDataModule(batch_size=16, train_transform="flip_crop")
    dm.setup()
    return dm


# ---------------------------------------------------------------------------- ImageFolderDataModule


def test_embedded_shapes_batches_and_sizes(shapes_dm):
    dm = shapes_dm
    assert dm.classes == list(SHAPE_CLASSES) and dm.num_classes == 10
    assert [len(dm.sample_ids(s)) for s in ("train", "val", "test")] == [1800, 200, 500]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"image", "label", "index"}
        assert batch["image"].dtype == torch.float32 and batch["image"].shape == (16, 3, 32, 32)
        assert batch["label"].dtype == torch.long and batch["index"].dtype == torch.long
        assert 0 <= batch["image"].min() and batch["image"].max() <= 1 and batch["image"].std() > 0.05
        assert 0 <= batch["label"].min() and batch["label"].max() < 10
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(val["index"], torch.arange(16))  # position in the split, in order
    ids = dm.sample_ids("val")
    assert all(ids[i].split("/")[1] == SHAPE_CLASSES[int(c)] for i, c in zip(val["index"], val["label"]))


def test_splits_are_disjoint_stratified_and_follow_the_split_seed(shapes_dm):
    train, val, test = (set(shapes_dm.sample_ids(s)) for s in ("train", "val", "test"))
    assert not train & val and not (train | val) & test
    assert all(i.startswith("train/") for i in train | val) and all(i.startswith("test/") for i in test)
    per_class = {c: sum(i.split("/")[1] == c for i in val) for c in SHAPE_CLASSES}
    assert set(per_class.values()) == {20}  # 10% of 200 per class
    again = ImageFolderDataModule(train_transform="flip_crop")
    other = ImageFolderDataModule(split_seed=1)
    assert again.sample_ids("val") == shapes_dm.sample_ids("val")
    assert set(other.sample_ids("val")) != val and other.sample_ids("test") == shapes_dm.sample_ids("test")


def test_generators_are_seeded_and_the_written_folder_reads_back_as_the_embedded_default(tmp_path, shapes_dm):
    a, labels = random_shapes(3, seed=0)
    b, _ = random_shapes(5, seed=0)
    assert a.dtype == np.uint8 and a.shape == (30, 32, 32, 3) and labels.tolist() == np.repeat(range(10), 3).tolist()
    assert np.array_equal(a[:3], b[:3]) and not np.array_equal(a[:3], random_shapes(3, seed=1)[0][:3])
    dm = ImageFolderDataModule(str(write_shapes_folder(tmp_path, train_per_class=3, test_per_class=2)), val_fraction=0)
    assert dm.classes == list(SHAPE_CLASSES)
    embedded, written = shapes_dm.dataset("test"), dm.dataset("test")
    for i, name in enumerate(dm.sample_ids("test")):
        j = shapes_dm.sample_ids("test").index(name)  # the same file name holds the same picture
        assert torch.equal(written[i]["image"], embedded[j]["image"]) and written[i]["label"] == embedded[j]["label"]


@pytest.mark.parametrize("transform", ["mae", "flip_crop"])
def test_transforms_change_train_batches_but_never_eval_ones(transform):
    dm = ImageFolderDataModule(train_transform=transform, batch_size=32)
    torch.manual_seed(0)
    train, plain = dm.dataset("train"), dm.dataset("train", augment=False)
    views = torch.stack([train[0]["image"] for _ in range(6)])
    assert views.shape == (6, 3, 32, 32) and 0 <= views.min() and views.max() <= 1
    assert sum(not torch.equal(v, plain[0]["image"]) for v in views) >= 4
    first, second = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert torch.equal(first["image"], second["image"])
    stored = torch.from_numpy(random_shapes(1, seed=0)[0][0]).permute(2, 0, 1).float() / 255
    assert torch.equal(ImageFolderDataModule().dataset("train", augment=False).source(0).float() / 255, stored)
    none = ImageFolderDataModule(train_transform="none").dataset("train")
    assert torch.equal(none[3]["image"], plain[3]["image"])


def test_unlabelled_mode_keeps_the_split_and_drops_labels(shapes_dm, tmp_path):
    dm = ImageFolderDataModule(labels=False, batch_size=8)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "index"} and batch["image"].shape == (8, 3, 32, 32)
    assert dm.sample_ids("val") == shapes_dm.sample_ids("val")  # pre-training never sees fine-tuning val images
    plain = tmp_path / "plain"
    for split, n in (("train", 10), ("test", 3)):
        for i in range(n):
            save(plain / split / f"{i}.jpg", np.full((8, 8, 3), 40 * i % 255, np.uint8))
    dm = ImageFolderDataModule(str(plain), labels=False, val_fraction=0.2)
    assert dm.classes == [] and [len(dm.sample_ids(s)) for s in ("train", "val", "test")] == [8, 2, 3]
    assert set(next(iter(dm.test_dataloader()))) == {"image", "index"}
    with pytest.raises(ValueError, match=r"plain/train has no class folders but 10 images directly inside"):
        ImageFolderDataModule(str(plain)).setup()


def test_class_folders_in_root_carve_a_seeded_stratified_test_share(tmp_path):
    root = make_folder(tmp_path / "flat", {"cat": 10, "dog": 20, ".ipynb_checkpoints": 0})
    dm = ImageFolderDataModule(str(root), image_size=8, val_fraction=0.1, test_fraction=0.3, batch_size=64)
    assert dm.classes == ["cat", "dog"]  # a hidden folder is not a class
    ids = {s: dm.sample_ids(s) for s in ("train", "val", "test")}
    assert [len(v) for v in ids.values()] == [18, 3, 9]
    assert sum(i.startswith("cat/") for i in ids["test"]) == 3 and sum(i.startswith("dog/") for i in ids["val"]) == 2
    assert len(set().union(*ids.values())) == 30
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (9, 3, 8, 8)  # 10x12 fitted: shorter side to 8, centre crop
    assert ImageFolderDataModule(str(root), test_fraction=0.3, split_seed=4).sample_ids("test") != ids["test"]


def test_bad_folders_raise_naming_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nowhere")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is empty: no class folders and no image files"):
        ImageFolderDataModule(str(tmp_path / "empty")).setup()
    root = make_folder(tmp_path / "a", {"train/cat": 2, "test/cat": 1, "test/dog": 1})
    (root / "train" / "dog").mkdir()
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"class folder .*a/train/dog has no images"):
        ImageFolderDataModule(str(root)).setup()
    make_folder(root, {"train/dog": 1, "test/bird": 1})
    with pytest.raises(ValueError, match=r"\['bird'\] only in test/"):
        ImageFolderDataModule(str(root)).setup()
    make_folder(tmp_path / "b", {"train/cat": 2})
    with pytest.raises(FileNotFoundError, match="has train/ but no test/ folder"):
        ImageFolderDataModule(str(tmp_path / "b")).setup()
    with pytest.raises(ValueError, match="train_transform must be one of"):
        ImageFolderDataModule(train_transform="randaug")


def test_truncated_and_non_rgb_images(tmp_path):
    root = make_folder(tmp_path / "f", {"train/a": 2, "test/a": 1}, size=(16, 16))
    rng = np.random.default_rng(1)
    grey = save(root / "train" / "a" / "grey.png", rng.integers(0, 256, (16, 16), dtype=np.uint8), "L")
    rgba = save(root / "train" / "a" / "rgba.png", rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), "RGBA")
    for path in (grey, rgba):
        image = read_image(path)
        expected = np.array(Image.open(path).convert("RGB"))
        assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
        assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
    jpeg = root / "train" / "a" / "cut.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    dm = ImageFolderDataModule(str(root), val_fraction=0)
    ids = dm.sample_ids("train")
    items = dm.dataset("train")
    for i, name in enumerate(ids):
        if name.endswith("cut.jpg"):
            with pytest.raises(ValueError, match=r"image .*train/a/cut.jpg cannot be decoded \(truncated"):
                items[i]
        else:
            assert items[i]["image"].shape == (3, 32, 32)
    (root / "train" / "a" / "text.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"text.png cannot be decoded"):
        read_image(root / "train" / "a" / "text.png")


@pytest.mark.skipif(not CIFAR10.is_dir(), reason="CIFAR-10 folder not present (../shared/data/cifar10)")
def test_cifar10_folder_matches_torchvision_imagefolder():
    from torchvision.datasets import ImageFolder

    dm = ImageFolderDataModule(str(CIFAR10), batch_size=50)
    assert dm.classes == CIFAR_CLASSES
    train, val, test = (dm.sample_ids(s) for s in ("train", "val", "test"))
    assert (len(train) + len(val), len(test), len(val)) == (15000, 5000, 1500)
    reference = ImageFolder(str(CIFAR10 / "train"))
    assert sorted(train + val) == sorted(Path(p).relative_to(CIFAR10).as_posix() for p, _ in reference.samples)
    assert {CIFAR_CLASSES.index(i.split("/")[1]) for i in val[::150]} == set(range(10))  # 150 per class, in order
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (50, 3, 32, 32) and batch["label"].tolist() == [0] * 50
    stored = np.array(Image.open(CIFAR10 / test[7]).convert("RGB"))
    assert torch.equal(batch["image"][7], torch.from_numpy(stored).permute(2, 0, 1).float() / 255)


# ---------------------------------------------------------------------------- SegmentationDataModule


def make_seg_folder(root: Path, sizes: dict[str, int], shape: tuple[int, int] = (32, 48)) -> Path:
    """SegNet layout whose image colours are a function of the label: blocks of 8x8 pixels of random classes."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    for split, n in sizes.items():
        for i in range(n):
            label = rng.integers(0, 12, (shape[0] // 8, shape[1] // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
            save(root / split / f"{i:03d}.png", palette[label])
            save(root / f"{split}annot" / f"{i:03d}.png", label)
    return root


@pytest.fixture(scope="module")
def scenes_dm() -> SegmentationDataModule:
    dm = SegmentationDataModule(train_size=(48, 64), batch_size=4)
    dm.setup()
    return dm


def test_embedded_scenes_batches_and_classes(scenes_dm):
    dm = scenes_dm
    assert [len(dm.sample_ids(s)) for s in ("train", "val", "test")] == list(SPLIT_SIZES.values())
    assert dm.classes == list(CAMVID_CLASSES) and dm.num_classes == 11 and dm.ignore_index == 11
    train, test = next(iter(dm.train_dataloader())), next(iter(dm.test_dataloader()))
    assert set(train) == {"image", "mask", "index"}
    assert train["image"].shape == (4, 3, 48, 64) and train["mask"].shape == (4, 48, 64)
    assert test["image"].shape == (4, 3, 96, 128) and test["mask"].shape == (4, 96, 128)  # eval at full size
    for batch in (train, test):
        assert batch["image"].dtype == torch.float32 and 0 <= batch["image"].min() and batch["image"].max() <= 1
        assert batch["mask"].dtype == torch.long and 0 <= batch["mask"].min() and batch["mask"].max() <= 11
    _, masks = random_scenes(24, seed=0)
    assert set(np.unique(masks).tolist()) == set(range(12))  # every class and void
    assert 0.001 < (masks == 11).mean() < 0.05
    again, _ = random_scenes(2, seed=0)
    assert np.array_equal(again, random_scenes(3, seed=0)[0][:2]) and not np.array_equal(
        again, random_scenes(2, seed=1)[0]
    )


def test_scene_augmentation_keeps_image_and_label_aligned(tmp_path):
    root = make_seg_folder(tmp_path / "seg", {"train": 2, "val": 1, "test": 1})
    palette = {}
    for img, lab in zip(sorted((root / "train").iterdir()), sorted((root / "trainannot").iterdir())):
        for colour, c in zip(np.array(Image.open(img)).reshape(-1, 3), np.array(Image.open(lab)).reshape(-1)):
            palette[int(c)] = torch.from_numpy(colour.astype(np.float32) / 255)
    dm = SegmentationDataModule(str(root), train_size=(24, 40), scale_range=(0.5, 2.0))
    torch.manual_seed(0)
    train, plain = dm.dataset("train"), dm.dataset("train", augment=False)
    seen_pad, masks = False, []
    for _ in range(12):
        item = train[0]
        masks.append(item["mask"])
        image, mask = item["image"], item["mask"]
        assert image.shape == (3, 24, 40) and mask.shape == (24, 40)
        # away from region edges, a pixel's colour is its label's colour (bilinear never mixes inside a region)
        inner = torch.zeros_like(mask, dtype=torch.bool)
        inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] == mask[:-2, 1:-1]) & (mask[1:-1, 1:-1] == mask[2:, 1:-1])
        inner[1:-1, 1:-1] &= (mask[1:-1, 1:-1] == mask[1:-1, :-2]) & (mask[1:-1, 1:-1] == mask[1:-1, 2:])
        padded = (image.sum(0) == 0) & (mask == 11)
        seen_pad |= bool(padded.any())
        for y, x in inner.nonzero()[::7].tolist():
            if not padded[y, x]:
                assert torch.allclose(image[:, y, x], palette[int(mask[y, x])], atol=2 / 255)
    assert seen_pad  # a scale below 1 pads the image with 0 and the label with the ignore index
    assert len({tuple(m.flatten().tolist()) for m in masks}) >= 10  # a new scale, crop and flip each time
    first, second = dm.dataset("val")[0], dm.dataset("val")[0]
    assert torch.equal(first["image"], second["image"]) and first["image"].shape == (3, 32, 48)
    assert torch.equal(plain[0]["mask"], torch.from_numpy(np.array(Image.open(root / "trainannot" / "000.png"))))
    none = SegmentationDataModule(str(root), train_size=(16, 24), train_transform="none").dataset("train")
    assert torch.equal(none[1]["mask"], none[1]["mask"]) and torch.equal(none[1]["mask"], plain[1]["mask"][::2, ::2])


def test_written_scenes_read_back_as_generated(tmp_path):
    root = write_scenes_folder(tmp_path / "scenes", sizes={"train": 2, "val": 1, "test": 1})
    dm = SegmentationDataModule(str(root), batch_size=2)
    images, masks = random_scenes(2, seed=0)
    batch = next(iter(dm.loader(dm.dataset("train", augment=False))))
    assert dm.sample_ids("train") == ["train/0000.png", "train/0001.png"]
    assert torch.equal(batch["mask"], torch.from_numpy(masks).long())
    assert torch.equal(batch["image"], torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)


def test_decoded_frames_and_their_label_noise_are_read_once_and_handed_back_unchanged(tmp_path, monkeypatch):
    """The second pass over a split decodes no file and gives the very items of the first (and of no cache:
    cache_mb=0), the labels int64 as read; with cache_mb=0 every pass decodes again."""
    import datamodules.images.segmentation as seg

    root = write_scenes_folder(tmp_path / "scenes", sizes={"train": 3, "val": 1, "test": 1})
    reads = []
    real = seg.read_image
    monkeypatch.setattr(seg, "read_image", lambda path: reads.append(path) or real(path))
    uncached = SegmentationDataModule(str(root), label_noise=0.2, cache_mb=0).dataset("train", augment=False)
    expected = [uncached[i] for i in range(3)]
    for budget, decodes in ((1024, 3), (0, 6)):
        reads.clear()
        items = SegmentationDataModule(str(root), label_noise=0.2, cache_mb=budget).dataset("train", augment=False)
        for _ in range(2):
            for i in range(3):
                item = items[i]
                assert item["mask"].dtype == torch.int64 and torch.equal(item["mask"], expected[i]["mask"])
                assert torch.equal(item["image"], expected[i]["image"])
        assert len(reads) == decodes, budget


def test_bad_segmentation_folders_raise_naming_the_files(tmp_path):
    root = make_seg_folder(tmp_path / "seg", {"train": 2, "val": 1, "test": 1})
    label = root / "trainannot" / "001.png"
    values = np.array(Image.open(label)).copy()
    values[0, :3] = [12, 200, 11]
    save(label, values)
    items = SegmentationDataModule(str(root)).dataset("train", augment=False)
    assert items[0]["mask"].max() <= 11
    with pytest.raises(ValueError, match=r"label .*trainannot/001.png has values 12, 200 outside the classes 0..10"):
        items[1]
    save(label, values[:, :-8] % 11)
    with pytest.raises(ValueError, match=r"label .*001.png is 40x32 but its image .*train/001.png is 48x32"):
        items[1]
    save(label, np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match=r"001.png is a RGB image; expected single-channel class ids"):
        items[1]
    (root / "valannot" / "000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"image .*val/000.png has no label: expected .*valannot/000.png"):
        SegmentationDataModule(str(root)).setup()
    for f in (root / "valannot").iterdir():
        f.unlink()
    (root / "valannot").rmdir()
    with pytest.raises(FileNotFoundError, match=r"valannot \(val labels\) is missing"):
        SegmentationDataModule(str(root)).setup()
    with pytest.raises(ValueError, match="ignore_index outside"):
        SegmentationDataModule(num_classes=11, ignore_index=3)


def test_images_of_different_sizes_in_one_batch_are_named(tmp_path):
    root = make_seg_folder(tmp_path / "seg", {"train": 1, "val": 1, "test": 1})
    make_seg_folder(tmp_path / "other", {"val": 1}, shape=(16, 24))
    for sub in ("val", "valannot"):
        (tmp_path / "other" / sub / "000.png").rename(root / sub / "001.png")
    with pytest.raises(ValueError, match=r"images of different sizes in one batch \(val/000.png \(32, 48\)"):
        next(iter(SegmentationDataModule(str(root), batch_size=2).val_dataloader()))
    batch = next(iter(SegmentationDataModule(str(root), batch_size=2, eval_size=(16, 24)).val_dataloader()))
    assert batch["mask"].shape == (2, 16, 24)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid folder not present (../shared/data/camvid/CamVid)")
def test_camvid_folder():
    dm = SegmentationDataModule(str(CAMVID), train_size=(96, 128), batch_size=2)
    assert [len(dm.sample_ids(s)) for s in ("train", "val", "test")] == [184, 51, 78]
    assert dm.sample_ids("test")[0] == "test/0001TP_008550.png"
    test = next(iter(dm.test_dataloader()))
    assert test["image"].shape == (2, 3, 360, 480) and test["mask"].shape == (2, 360, 480)
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (2, 3, 96, 128) and train["mask"].dtype == torch.long
    values = set(torch.unique(dm.dataset("train", augment=False)[0]["mask"]).tolist())
    assert 11 in values and values <= set(range(12))
