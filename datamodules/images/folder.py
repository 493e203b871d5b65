"""Image classification from a torchvision ImageFolder tree (``train/<class>/*.jpg``, ``test/<class>/*.jpg``, or
the class folders directly), with a labelled mode for fine-tuning and an unlabelled mode for pre-training, and
rendered shapes (:mod:`datamodules.synthetic.shapes`) as the embedded default."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from datamodules.base import BaseDataModule
from datamodules.splits import SPLITS, random_split, stratified_split

__all__ = ["ImageFolderDataModule", "TRAIN_TRANSFORMS", "read_image", "scan_image_folder"]

TRAIN_TRANSFORMS = ("mae", "flip_crop", "none")
SYNTHETIC_PER_CLASS = {"train": 200, "test": 50}  # the embedded default: 10 classes x (200 train, 50 test)
SYNTHETIC_SIZE = 32  # generated at CIFAR's size; other image sizes are resized from it like any folder
DEFAULT_TEST_FRACTION = 0.2  # the test share carved out of a folder without its own train/ and test/
FAST_DECODE = (".jpg", ".jpeg", ".png", ".webp")  # torchvision.io decodes these 2-3x faster than PIL


def _read_pil(path: str | Path) -> Tensor:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated file fails here, not later inside a transform
        rgb = image.convert("RGB")
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | Path) -> Tensor:
    """Decode an image file as uint8 RGB [3, H, W]: grey, palette, CMYK and RGBA images become RGB as in
    torchvision's ``ImageFolder`` loader (``PIL.Image.convert("RGB")``, which drops alpha).

    JPEG, PNG and WebP go through ``torchvision.io.decode_image(..., ImageReadMode.RGB)`` (same pixels as PIL,
    faster, and strict about truncated files); other formats, and any file it refuses or decodes to more than
    8 bits, go through PIL.

    Raises:
        ValueError: naming the file, when neither decoder can read it (not an image, truncated, corrupt).
    """
    fast_error = None
    if str(path).lower().endswith(FAST_DECODE):
        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
            if image.dtype == torch.uint8 and image.ndim == 3:
                return image
        except RuntimeError as err:
            fast_error = err
    try:
        return _read_pil(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # torchvision's message leads with its source file ("decode_jpeg, .../decode_jpeg.cpp:171, Image is ...")
        fast = str(fast_error).strip().splitlines()[-1].rsplit(", ", 1)[-1] if fast_error else None
        raise ValueError(
            f"image {path} cannot be decoded (truncated, corrupt or not an image): {err}"
            + (f"; torchvision.io: {fast}" if fast else "")
        ) from err


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _images_under(folder: Path) -> list[str]:
    """Every image file under ``folder``, at any depth, in the order torchvision's ``make_dataset`` walks
    (sorted folders, sorted files, following links)."""
    found = []
    for dirpath, _, filenames in sorted(os.walk(folder, followlinks=True)):
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
    return found


def scan_image_folder(folder: str | Path, labelled: bool = True) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes and samples of an ImageFolder tree, as ``torchvision.datasets.ImageFolder(folder)`` finds them.

    Classes are the sub-folders of ``folder`` in sorted order (hidden ones, like ``.ipynb_checkpoints``, are
    skipped: torchvision would make them a class); samples are the image files under each class folder, found by
    torchvision's ``make_dataset`` (extensions ``IMG_EXTENSIONS``, any depth, sorted). With ``labelled=False`` a
    folder without class folders is accepted too: then every image under it is a sample of class -1 and the
    class list is empty.

    Returns:
        (classes, [(path, class index)]).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: it holds no images, or no class folders (``labelled=True``), or a class folder holds no image
            (naming the folders).
    """
    folder = Path(folder)
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"image folder {folder} {state}")
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = _images_under(folder)
        if not loose:
            raise ValueError(f"image folder {folder} is empty: no class folders and no image files")
        if labelled:
            raise ValueError(
                f"image folder {folder} has no class folders but {len(loose)} images directly inside; the "
                "ImageFolder layout is one folder per class (folder/<class>/*.jpg); with labels=False a plain "
                "folder of images works"
            )
        return [], [(path, -1) for path in loose]
    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS, allow_empty=True)
    counts = np.bincount([label for _, label in samples], minlength=len(classes))
    empty = [str(folder / c) for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise ValueError(
            f"class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} {'have' if len(empty) > 1 else 'has'} "
            f"no images (expected files ending in {', '.join(IMG_EXTENSIONS)}); remove "
            f"{'them' if len(empty) > 1 else 'it'} or add images"
        )
    return classes, samples


@functools.lru_cache(maxsize=1)
def _embedded_shapes() -> dict[str, tuple[Tensor, Tensor]]:
    """split -> (uint8 [N, 3, 32, 32], int64 [N]): the rendered shapes, generated once per process."""
    from datamodules.synthetic.shapes import SPLIT_SEEDS, random_shapes

    out = {}
    for split, per_class in SYNTHETIC_PER_CLASS.items():
        images, labels = random_shapes(per_class, SYNTHETIC_SIZE, SPLIT_SEEDS[split])
        out[split] = (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels))
    return out


class _FileSource:
    """``source(j)`` -> uint8 [3, H, W] of file ``paths[j]`` (picklable, for loader workers)."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __call__(self, j: int) -> Tensor:
        return read_image(self.paths[j])


class _ArraySource:
    """``source(j)`` -> uint8 [3, H, W] from images held in memory."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __call__(self, j: int) -> Tensor:
        return self.images[j]


class _Fit(nn.Module):
    """Resize the shorter side to ``size`` (bilinear, antialiased) and centre-crop ``size`` x ``size``; an image
    already that size passes unchanged, so CIFAR's 32 px pixels reach the network exactly as stored."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Tensor) -> Tensor:
        if tuple(image.shape[-2:]) == (self.size, self.size):
            return image
        image = TF.resize(image, [self.size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return TF.center_crop(image, [self.size, self.size])


class _PadCropFlip(nn.Module):
    """The usual CIFAR augmentation, ``RandomCrop(size, padding=pad)`` (zero fill) then ``RandomHorizontalFlip()``,
    written out with plain tensor ops: torchvision's v2 dispatch costs several times the work on 32 px images."""

    def __init__(self, size: int, pad: int = 4) -> None:
        super().__init__()
        self.size, self.pad = size, pad

    def forward(self, image: Tensor) -> Tensor:
        padded = torch.nn.functional.pad(image, (self.pad,) * 4)
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        crop = padded[:, top : top + self.size, left : left + self.size]
        return crop.flip(-1) if torch.rand(()) < 0.5 else crop


def build_transform(name: str, size: int) -> Callable[[Tensor], Tensor]:
    """The uint8 [3, H, W] -> uint8 [3, size, size] transform ``name`` (a :data:`TRAIN_TRANSFORMS` entry or
    ``"eval"``); working on uint8 keeps bicubic overshoot clipped to [0, 255]."""
    if name in ("eval", "none"):
        return _Fit(size)
    if name == "flip_crop":  # the usual CIFAR recipe: RandomCrop(32, padding=4) + horizontal flip
        return v2.Compose([_Fit(size), _PadCropFlip(size, pad=4)])
    if name == "mae":  # MAE main_pretrain.py: RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=3) + flip
        crop = v2.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=InterpolationMode.BICUBIC, antialias=True)
        return v2.Compose([crop, v2.RandomHorizontalFlip()])
    raise ValueError(f"train_transform must be one of {TRAIN_TRANSFORMS}, got {name!r}")


class _ImageSplit(Dataset):
    """Item ``i`` of a split: ``{"image": float32 [3, S, S] in [0, 1], "index": i}`` and, when labelled, ``"label"``."""

    def __init__(
        self, source: Callable[[int], Tensor], positions: Tensor, labels: Tensor | None, transform: Callable
    ) -> None:
        self.source, self.positions, self.labels, self.transform = source, positions.tolist(), labels, transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = self.positions[i]
        image = self.transform(self.source(j))
        item = {"image": image.float().div_(255), "index": torch.tensor(i)}
        if self.labels is not None:
            item["label"] = self.labels[j]
        return item


class ImageFolderDataModule(BaseDataModule):
    """Image classification from a torchvision ``ImageFolder`` tree; images in [0, 1], never normalised.

    Layouts: ``root/train/<class>/*`` with ``root/test/<class>/*`` (``train_dir``/``test_dir``; the test folder
    must hold the same classes), or the class folders directly in ``root`` (then a stratified ``test_fraction``,
    default 0.2, is carved out too). Classes and files are found as ``torchvision.datasets.ImageFolder`` finds
    them (:func:`scan_image_folder`: sorted class folders, so CIFAR-10 is airplane ... truck) and decoded with PIL
    (:func:`read_image`: grey, palette and RGBA converted to RGB; an unreadable or truncated file raises ValueError
    naming it when it is read). ``root=None`` is the embedded default, :func:`~datamodules.synthetic.shapes.
    random_shapes`: 10 classes of rendered shapes, 200 train and 50 test images per class at 32x32, generated
    once per process (``write_shapes_folder`` writes the same tree to disk).

    Splits: validation is a stratified ``val_fraction`` of the training images, drawn by ``split_seed``
    (:func:`~datamodules.splits.stratified_split`, or a plain random split for unlabelled folders); test images
    come only from the test folder (or the carved test share), so none is ever trained on. The split is the same
    with ``labels=False`` as with ``labels=True`` for the same folder and seed, so a pre-training run never sees
    the validation images of the fine-tuning run that follows it.

    Images are fitted to ``image_size`` squared (shorter side resized bilinearly with antialiasing, centre crop;
    unchanged when already that size). ``train_transform`` augments training batches only: ``"mae"`` is MAE's
    official pre-training augmentation (``main_pretrain.py``: RandomResizedCrop(image_size, scale=(0.2, 1.0),
    bicubic) + horizontal flip, on the image as stored), ``"flip_crop"`` the usual CIFAR fine-tuning one
    (RandomCrop with 4-pixel zero padding + flip), ``"none"`` the eval fit; val, test and predict never augment.
    Augmentations draw from torch's global RNG (seeded per worker by Lightning's ``seed_everything``).

    Batches: ``{"image": float32 [B, 3, S, S] in [0, 1], "label": int64 [B], "index": int64 [B]}``, ``index``
    being the position in its split (``sample_ids(split)[index]`` is the file, relative to ``root``, a stable key
    for teacher-output caches; note that an augmented view is not the stored image). ``labels=False`` is the
    unlabelled pre-training mode: the same batches without ``"label"``, and a folder of images without class
    folders is accepted. ``num_classes`` and ``classes`` come from the train folder.
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: int = 32,
        labels: bool = True,
        train_transform: Literal["mae", "flip_crop", "none"] = "none",
        val_fraction: float = 0.1,
        test_fraction: float | None = None,
        train_dir: str = "train",
        test_dir: str = "test",
        batch_size: int = 64,
        num_workers: int = 0,
        split_seed: int = 0,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if train_transform not in TRAIN_TRANSFORMS:
            raise ValueError(f"train_transform must be one of {TRAIN_TRANSFORMS}, got {train_transform!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if test_fraction is not None and not (0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"test_fraction must be in (0, 1) and leave training images (val_fraction={val_fraction}), "
                f"got {test_fraction}"
            )
        super().__init__(root=root, split_seed=split_seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.image_size, self.labels, self.train_transform = image_size, labels, train_transform
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.train_dir, self.test_dir = train_dir, test_dir
        self._classes: list[str] | None = None
        self._splits: dict[str, tuple[Callable[[int], Tensor], Tensor, Tensor, list[str]]] = {}

    # ------------------------------------------------------------------ reading and splitting

    def _split_pool(self, labels: Tensor, fractions: tuple[float, float, float], what: str) -> dict[str, Tensor]:
        if labels.numel() and int(labels.min()) >= 0:
            return stratified_split(labels, fractions, self.split_seed, what=what)
        return random_split(labels.numel(), fractions, self.split_seed, what=what)

    def setup(self, stage: str | None = None) -> None:
        """Find (or generate) the images and draw the splits once; later calls return at once. Nothing is decoded
        here: files are read when a batch needs them."""
        if self._splits:
            return
        splits: dict[str, tuple[Callable[[int], Tensor], Tensor, Tensor, list[str]]] = {}
        if self.root is None:
            from datamodules.synthetic.shapes import SHAPE_CLASSES

            if self.test_fraction is not None:
                raise ValueError("test_fraction carves a test share out of a folder; the embedded default has one")
            classes, pools = list(SHAPE_CLASSES), {}
            for split, (images, labels) in _embedded_shapes().items():
                counter = {c: 0 for c in range(len(classes))}
                ids = []
                for c in labels.tolist():
                    ids.append(f"{split}/{classes[c]}/{counter[c]:04d}.png")  # as write_shapes_folder names them
                    counter[c] += 1
                pools[split] = (_ArraySource(images), labels, ids)
            layout = "train/test"
        else:
            root = Path(self.root).expanduser()
            if not root.is_dir():
                state = "is a file, not a folder" if root.exists() else "does not exist"
                raise FileNotFoundError(
                    f"image root {root} {state}; ImageFolderDataModule reads root/{self.train_dir}/<class>/*.jpg and "
                    f"root/{self.test_dir}/<class>/*.jpg, or root/<class>/*.jpg; use root=None for the embedded "
                    "default"
                )
            folders = {"train": root / self.train_dir, "test": root / self.test_dir}
            if folders["train"].is_dir():
                if not folders["test"].is_dir():
                    raise FileNotFoundError(
                        f"{root} has {self.train_dir}/ but no {self.test_dir}/ folder; give test_dir (e.g. 'val' for "
                        "ImageNet's layout) or put the class folders directly in root to carve a test share"
                    )
                if self.test_fraction is not None:
                    raise ValueError(f"test_fraction is for a root without its own test folder; {root} has one")
                layout, scanned = "train/test", {s: scan_image_folder(f, self.labels) for s, f in folders.items()}
                (classes, _), (test_classes, _) = scanned["train"], scanned["test"]
                if test_classes != classes:
                    extra, missing = sorted(set(test_classes) - set(classes)), sorted(set(classes) - set(test_classes))
                    raise ValueError(
                        f"the class folders of {folders['test']} differ from {folders['train']}'s: "
                        f"{extra} only in {self.test_dir}/, {missing} only in {self.train_dir}/"
                    )
            else:
                layout, scanned = "class folders", {"train": scan_image_folder(root, self.labels)}
                classes = scanned["train"][0]
            pools = {}
            for split, (_, samples) in scanned.items():
                paths = [p for p, _ in samples]
                labels = torch.tensor([c for _, c in samples], dtype=torch.long)
                pools[split] = (_FileSource(paths), labels, [Path(p).relative_to(root).as_posix() for p in paths])
        what = "images"
        if "test" in pools:  # the folder's own test split; val is carved out of train
            parts = self._split_pool(pools["train"][1], (1 - self.val_fraction, self.val_fraction, 0.0), what)
            parts["test"] = torch.arange(pools["test"][1].numel())
            pool_of = {"train": "train", "val": "train", "test": "test"}
        else:
            test = DEFAULT_TEST_FRACTION if self.test_fraction is None else self.test_fraction
            parts = self._split_pool(pools["train"][1], (1 - self.val_fraction - test, self.val_fraction, test), what)
            pool_of = dict.fromkeys(SPLITS, "train")
        for split in SPLITS:
            source, labels, ids = pools[pool_of[split]]
            positions = parts[split]
            splits[split] = (source, positions, labels, [ids[j] for j in positions.tolist()])
        self._classes, self._splits = classes, splits
        source = "embedded shapes" if self.root is None else str(self.root)
        rank_zero_info(
            f"ImageFolderDataModule ({source}, {layout}, {len(classes)} classes, "
            f"{'labelled' if self.labels else 'unlabelled'}): "
            + ", ".join(f"{s} {len(splits[s][1])}" for s in SPLITS)
            + f" images at {self.image_size}x{self.image_size}, train transform {self.train_transform!r}"
        )

    # ------------------------------------------------------------------ what the data are

    @property
    def classes(self) -> list[str]:
        """The class names in label order (the train folder's sorted class folders); [] for an unlabelled folder
        without class folders. Reading it finds the files if ``setup()`` has not run yet."""
        self.setup()
        assert self._classes is not None
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def sample_ids(self, split: str) -> list[str]:
        """The images of ``split`` in index order, as paths relative to ``root`` (``train/cat/0001.jpg``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        return list(self._splits[split][3])

    def dataset(self, split: str, augment: bool | None = None) -> Dataset:
        """The map-style dataset of ``split``; ``augment`` (default: only for train) applies ``train_transform``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        source, positions, labels, _ = self._splits[split]
        augment = split == "train" if augment is None else augment
        transform = build_transform(self.train_transform if augment else "eval", self.image_size)
        return _ImageSplit(source, positions, labels if self.labels else None, transform)

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches (the shuffle follows the run's seed, ``split_seed`` the split)."""
        return self.loader(self.dataset("train"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self.loader(self.dataset("test"))

    def predict_dataloader(self) -> DataLoader:
        """The test split, in index order."""
        return self.loader(self.dataset("test"))
