"""Readers of real metric depth with intrinsics, in the datasets' own formats: Middlebury 2014 (``MiddEval3``
scene folders: ``im0.png``, ``disp0GT.pfm``, ``calib.txt``) and the Metric3D demo layout (``rgb/`` + 16-bit
``depth/`` PNGs listed with their intrinsics and depth scale in ``test_annotations.json``), for NYU Depth V2 and
KITTI frames. Any folder of either layout reads.

Every reader returns :class:`DepthFrame`: uint8 RGB [3, H, W], metric depth float32 [H, W] in metres with 0 where
there is no measurement, the focal length in pixels and where the frame comes from. Negative, NaN and infinite
depth is masked as invalid (0) and counted (``DepthFrame.masked``), never passed on.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import BaseDataModule, resolve_root
from datamodules.images.folder import read_image
from datamodules.images.segmentation import resize_pair

__all__ = [
    "DepthFrame",
    "MetricDepthDataModule",
    "read_metric3d_frames",
    "read_middlebury_calib",
    "read_middlebury_scene",
    "read_pfm",
    "scan_depth_frames",
]


@dataclass(frozen=True)
class DepthFrame:
    """One real frame: ``image`` uint8 [3, H, W], ``depth`` float32 [H, W] metres (0 = no measurement), ``f_px``
    the focal length in pixels (fx), ``dataset`` (``middlebury``, ``nyu``, ``kitti``, or the folder name), ``name``
    the frame's path relative to its root, ``masked`` the pixels whose stored depth was negative, NaN or inf."""

    image: Tensor
    depth: Tensor
    f_px: float
    dataset: str
    name: str
    masked: int = 0


def _checked_depth(depth: np.ndarray, image: Tensor, depth_file: Path, image_file: Path) -> tuple[Tensor, int]:
    """float32 depth with invalid values (negative, NaN, inf) set to 0 and counted; the size must be the image's."""
    if tuple(depth.shape) != tuple(image.shape[-2:]):
        raise ValueError(
            f"depth {depth_file} is {depth.shape[1]}x{depth.shape[0]} but its image {image_file} is "
            f"{image.shape[2]}x{image.shape[1]} (width x height); they must match pixel for pixel"
        )
    depth = depth.astype(np.float32, copy=True)
    bad = ~np.isfinite(depth) | (depth < 0)
    depth[bad] = 0
    return torch.from_numpy(depth), int(bad.sum())


def _focal(value: float, where: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: the focal length must be a positive number of pixels, got {value}")
    return float(value)


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM image (``Pf`` grey or ``PF`` colour) as float32 [H, W] (or [H, W, 3]), rows top to bottom (the file
    stores them bottom to top; a negative scale means little-endian).

    Raises:
        ValueError: naming the file, for a header that is not PFM or data shorter than the header says.
    """
    with open(path, "rb") as handle:
        header = handle.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise ValueError(f"{path} is not a PFM file (its first line is {header[:20]!r}, expected Pf or PF)")
        dims = handle.readline().split()
        scale_line = handle.readline().strip()
        try:
            width, height = int(dims[0]), int(dims[1])
            scale = float(scale_line)
        except (IndexError, ValueError) as err:
            raise ValueError(
                f"{path}: a PFM header needs 'width height' then a scale, got {dims!r}, {scale_line!r}"
            ) from err
        channels = 3 if header == b"PF" else 1
        count = width * height * channels
        data = np.fromfile(handle, dtype="<f4" if scale < 0 else ">f4", count=count)
    if data.size != count or width < 1 or height < 1:
        raise ValueError(
            f"{path}: the PFM header says {width}x{height}x{channels} floats but the file holds {data.size}"
        )
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.flipud(data.reshape(shape)).astype(np.float32)


_CALIB_LINE = re.compile(r"^\s*(\w+)\s*=\s*(.*?)\s*$")


def read_middlebury_calib(path: str | Path) -> dict[str, float | np.ndarray]:
    """Middlebury 2014's ``calib.txt``: ``cam0`` / ``cam1`` as 3x3 arrays, every other key a float (leading and
    trailing spaces around keys and values are common and ignored).

    Raises:
        ValueError: naming the file and the key, when ``cam0``, ``baseline`` or ``doffs`` is missing or unreadable.
    """
    values: dict[str, float | np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        match = _CALIB_LINE.match(line)
        if not match:
            continue
        key, raw = match.groups()
        try:
            if raw.startswith("["):
                rows = [r.split() for r in raw.strip("[] ").split(";")]
                values[key] = np.array(rows, dtype=np.float64)
            else:
                values[key] = float(raw)
        except ValueError as err:
            raise ValueError(f"calibration {path}: key {key!r} has an unreadable value {raw!r}") from err
    for key in ("cam0", "baseline", "doffs"):
        if key not in values:
            raise ValueError(f"calibration {path} has no {key!r} (Middlebury's calib.txt gives cam0, baseline, doffs)")
    if np.shape(values["cam0"]) != (3, 3):
        raise ValueError(f"calibration {path}: 'cam0' must be a 3x3 matrix, got shape {np.shape(values['cam0'])}")
    return values


def read_middlebury_scene(folder: str | Path, root: str | Path | None = None) -> DepthFrame:
    """A Middlebury 2014 scene folder as metric depth: ``baseline * fx / (disparity + doffs) / 1000`` metres (the
    baseline is in mm), with ``fx = cam0[0, 0]``; unknown disparities (inf in the PFM) are 0."""
    folder = Path(folder)
    image_file, disp_file, calib_file = folder / "im0.png", folder / "disp0GT.pfm", folder / "calib.txt"
    for path in (image_file, disp_file, calib_file):
        if not path.is_file():
            raise FileNotFoundError(
                f"Middlebury scene {folder} has no {path.name} (expected im0.png, disp0GT.pfm, calib.txt)"
            )
    calib = read_middlebury_calib(calib_file)
    f_px = _focal(float(calib["cam0"][0, 0]), f"calibration {calib_file} cam0[0, 0]")
    image = read_image(image_file)
    disparity = read_pfm(disp_file)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = float(calib["baseline"]) * f_px / (disparity + float(calib["doffs"])) / 1000.0
    depth[~np.isfinite(disparity)] = 0  # unknown disparity: no measurement (not an invalid value to count)
    depth, masked = _checked_depth(depth, image, disp_file, image_file)
    name = folder.relative_to(root).as_posix() if root is not None else folder.name
    return DepthFrame(image, depth, f_px, "middlebury", name, masked)


def read_metric3d_frames(annotations: str | Path, root: str | Path | None = None) -> list[Callable[[], DepthFrame]]:
    """The frames of a Metric3D-style ``test_annotations.json`` (``{"files": [{"rgb", "depth", "cam_in": [fx, fy,
    cx, cy], "depth_scale"}]}``), as loaders read on call. The listed paths are relative to the nearest folder
    above the listing, up to ``root`` (default: the listing's own folder's grandparent), where they exist (the
    Metric3D demo's ``data/nyu_demo/...`` are relative to the repository); none may lead outside ``root``. Depth is
    ``png / depth_scale`` metres, 0 = no measurement. The dataset is named from the listing's folder
    (``nyu_demo`` -> ``nyu``).

    Raises:
        ValueError: naming the file, for a malformed listing, a path that leaves ``root`` or exists nowhere, a
            missing focal length or depth scale, or one that is not positive.
    """
    annotations = Path(annotations)
    base = Path(root if root is not None else annotations.parent.parent.parent).resolve()
    try:
        listing = json.loads(annotations.read_text())
        files = listing["files"]
        if not isinstance(files, list):
            raise TypeError("'files' is not a list")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{annotations} is not a Metric3D annotation listing ({{'files': [...]}}): {err}") from err
    dataset = annotations.parent.name.removesuffix("_demo")
    folder = annotations.resolve().parent
    ancestors = [folder, *(p for p in folder.parents if p.is_relative_to(base))]
    frames = []
    for i, item in enumerate(files):
        where = f"{annotations} entry {i}"
        if not isinstance(item, dict):
            raise ValueError(f"{where} is not a mapping")
        for key in ("rgb", "depth", "cam_in", "depth_scale"):
            if key not in item:
                raise ValueError(
                    f"{where} has no {key!r} (expected rgb, depth, cam_in = [fx, fy, cx, cy], depth_scale)"
                )
        paths = []
        for key in ("rgb", "depth"):
            found = [(a / str(item[key])).resolve() for a in ancestors]
            inside = [p for p in found if p.is_relative_to(base)]
            if not inside:
                raise ValueError(f"{where}: {key} path {item[key]!r} leads outside {base}")
            path = next((p for p in inside if p.is_file()), None)
            if path is None:
                raise ValueError(f"{where}: {key} file {item[key]!r} exists in no folder from {folder} up to {base}")
            paths.append(path)
        try:
            f_px = _focal(float(item["cam_in"][0]), f"{where} cam_in[0]")
            scale = _focal(float(item["depth_scale"]), f"{where} depth_scale")
        except (TypeError, IndexError) as err:
            raise ValueError(f"{where}: cam_in must be [fx, fy, cx, cy] and depth_scale a number: {err}") from err
        name = paths[0].relative_to(base).as_posix()
        frames.append(
            lambda rgb=paths[0], dep=paths[1], f=f_px, s=scale, n=name: _metric3d_frame(rgb, dep, f, s, dataset, n)
        )
    return frames


def _metric3d_frame(rgb: Path, depth_file: Path, f_px: float, scale: float, dataset: str, name: str) -> DepthFrame:
    image = read_image(rgb)
    try:
        with Image.open(depth_file) as handle:
            raw = np.asarray(handle).astype(np.float64)
    except (OSError, SyntaxError) as err:
        raise ValueError(f"depth {depth_file} is unreadable: {err}") from err
    if raw.ndim != 2:
        raise ValueError(f"depth {depth_file} has {raw.shape[-1]} channels; expected a single-channel (16-bit) PNG")
    depth, masked = _checked_depth(raw / scale, image, depth_file, rgb)
    return DepthFrame(image, depth, f_px, dataset, name, masked)


def scan_depth_frames(root: str | Path) -> list[Callable[[], DepthFrame]]:
    """Every frame under ``root``, sorted by path: each Middlebury scene folder (one holding ``calib.txt`` and
    ``disp0GT.pfm``) and each Metric3D ``test_annotations.json`` listing, at any depth below ``root``.

    Raises:
        FileNotFoundError: when ``root`` is not a folder, or holds neither layout.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"depth root {root} is not a folder")
    frames: list[Callable[[], DepthFrame]] = []
    for calib in sorted(root.rglob("calib.txt")):
        if (calib.parent / "disp0GT.pfm").is_file():
            frames.append(lambda folder=calib.parent: read_middlebury_scene(folder, root))
    for listing in sorted(root.rglob("test_annotations.json")):
        frames += read_metric3d_frames(listing, root)
    if not frames:
        raise FileNotFoundError(
            f"{root} holds no Middlebury scene (a folder with im0.png, disp0GT.pfm, calib.txt) and no Metric3D "
            "test_annotations.json"
        )
    return frames


# ----- the datamodule ---------------------------------------------------------------------------------------------
def _resize_frame(frame: DepthFrame, long_side: int | None) -> DepthFrame:
    """``frame`` with its long side scaled to ``long_side`` (image bilinear antialiased, depth nearest so no depth is
    invented, the focal length scaled with the width)."""
    h, w = frame.image.shape[-2:]
    if long_side is None or max(h, w) == long_side:
        return frame
    scale = long_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    image, depth = resize_pair(frame.image, frame.depth, size)
    return DepthFrame(image, depth, frame.f_px * size[1] / w, frame.dataset, frame.name, frame.masked)


class _Generated(Dataset):
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    def __len__(self) -> int:
        return len(self.arrays["rgb"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        a = self.arrays
        return {
            "image": a["rgb"][i].permute(2, 0, 1).float().div(255),
            "depth": a["depth"][i].float(),
            "source": a["source"][i].float(),
            "kind": a["kind"][i].long(),
            "f_px": a["f_px"][i].float(),
            "dataset": "generated",
            "index": torch.tensor(i),
        }


class _RealFrames(Dataset):
    """Real frames, read once: the ground truth stands as each frame's own source (the teacher's real-frame prompts
    are drawn from it)."""

    def __init__(self, frames: list[DepthFrame]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.frames[i]
        depth = f.depth.float()
        f_px = torch.tensor(f.f_px, dtype=torch.float32)
        return {"image": f.image.float().div(255), "depth": depth, "source": depth, "kind": torch.tensor(-1),
                "f_px": f_px, "dataset": f.dataset, "index": torch.tensor(i)}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _generated(
    n: int, seed: int, size: tuple[int, int], bands: tuple, sources: tuple[str, ...]
) -> dict[str, np.ndarray]:
    from datamodules.synthetic.scenes3d import generate

    return generate(n, seed, size=size, bands=list(bands), sources=sources)


class MetricDepthDataModule(BaseDataModule):
    """Metric depth with the camera's focal length: generated ray-cast scenes for training, validation and the
    generated test (:mod:`datamodules.synthetic.scenes3d`; each image carries one noisy source of the four, the
    exact depth and its ``f_px``), plus, with ``real_roots``, the real frames under them as a second test loader
    (folders :func:`scan_depth_frames` reads: Middlebury 2014 scenes, Metric3D listings; ``data:NAME`` for a folder
    in ``$DISTILLZOO_DATA``).

    Training and validation images have focal lengths in ``TRAIN_BANDS`` (f / W), the generated test only focal
    lengths in ``HELD_OUT_BANDS``, never seen in training. ``sources``: the source types training images are drawn
    from (the scaling study's 1, 2 or 4); validation and test always use all four. ``train_samples`` sets the
    training set's size (the study's 1x / 4x); every sample is fixed by ``scene_seed`` and its index. Real frames
    are resized to ``real_long_side`` on their long side (the focal length scaled with them; ``None`` keeps the
    native size) and batched one at a time. Batches: ``image`` float [B, 3, H, W] in [0, 1], ``depth`` (exact,
    0 = invalid), ``source`` (the noisy measurement, 0 = none; the ground truth for real frames), ``kind`` (index
    into ``SOURCES``, -1 real), ``f_px`` [B], ``dataset`` (``generated`` or the real dataset), ``index``.
    """

    def __init__(
        self,
        real_roots: list[str] | None = None,
        size: tuple[int, int] = (64, 64),
        train_samples: int = 2000,
        val_samples: int = 256,
        test_samples: int = 512,
        sources: list[str] | None = None,
        scene_seed: int = 0,
        real_long_side: int | None = 128,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        from datamodules.synthetic.scenes3d import SOURCES

        sources = list(SOURCES if sources is None else sources)
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown or not sources:
            raise ValueError(f"sources must be a non-empty subset of {list(SOURCES)}, got {sources}")
        if min(train_samples, val_samples, test_samples) < 1:
            raise ValueError("train_samples, val_samples and test_samples must each be >= 1")
        super().__init__(root=None, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.real_roots = list(real_roots or [])
        self.size, self.sources, self.scene_seed = (int(size[0]), int(size[1])), tuple(sources), int(scene_seed)
        self.samples = {"train": train_samples, "val": val_samples, "test": test_samples}
        self.real_long_side = real_long_side
        self._sets: dict[str, Dataset] = {}
        self._real: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        from datamodules.synthetic.scenes3d import HELD_OUT_BANDS, SOURCES, TRAIN_BANDS

        plan = {
            "train": (TRAIN_BANDS, self.sources, 0),
            "val": (TRAIN_BANDS, SOURCES, 1),
            "test": (HELD_OUT_BANDS, SOURCES, 2),
        }
        for split, (bands, sources, offset) in plan.items():
            seed = self.scene_seed * 10 + offset  # disjoint scenes per split
            arrays = _generated(self.samples[split], seed, self.size, tuple(map(tuple, bands)), tuple(sources))
            self._sets[split] = _Generated(arrays)
        if self.real_roots:
            roots = [resolve_root(r) for r in self.real_roots]
            frames = [_resize_frame(load(), self.real_long_side) for root in roots for load in scan_depth_frames(root)]
            masked = sum(f.masked for f in frames)
            self._real = _RealFrames(frames)
            counts = {d: sum(f.dataset == d for f in frames) for d in dict.fromkeys(f.dataset for f in frames)}
            rank_zero_info(
                f"MetricDepthDataModule: {len(frames)} real frames from {', '.join(roots)} ({counts})"
                + (f"; {masked} negative, NaN or infinite depth pixels masked as invalid" if masked else "")
            )

    def dataset(self, split: str) -> Dataset:
        """The generated ``split`` ("train", "val" or "test") in its fixed order, as the loaders batch it."""
        if split not in self.samples:
            raise ValueError(f"split must be one of {list(self.samples)}, got {split!r}")
        self.setup()
        return self._sets[split]

    def train_dataloader(self) -> DataLoader:
        return self.loader(self._sets["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader(self._sets["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        generated = self.loader(self._sets["test"], shuffle=False)
        if self._real is None:
            return generated
        return [generated, self.loader(self._real, shuffle=False, batch_size=1)]

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.test_dataloader()
