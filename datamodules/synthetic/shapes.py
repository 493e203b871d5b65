"""Rendered shapes on textured backgrounds, the embedded default of
:class:`datamodules.images.ImageFolderDataModule`: a small 10-class image classification set shaped like CIFAR-10
(32x32 RGB, a train and a test split, balanced classes), seeded and generated in well under a second.

Each image is one shape of its class (:data:`SHAPE_CLASSES`) in a random colour, rotation, scale and position over
a background of smooth random colour variation plus pixel noise, so neither the mean colour nor the position tells
the class; only the outline does. Shapes are rendered at twice the resolution and averaged down 2x2, which gives
soft, anti-aliased edges like a downsampled photograph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SHAPE_CLASSES", "random_shapes", "write_shapes_folder"]

SHAPE_CLASSES = (
    "checker",
    "circle",
    "crescent",
    "cross",
    "diamond",
    "ring",
    "square",
    "star",
    "stripes",
    "triangle",
)  # sorted, as torchvision's ImageFolder orders class folders, so a written folder reads back in this order
SPLIT_SEEDS = {"train": 0, "test": 1}  # different generator streams: no test image repeats a training one
_COARSE = 5  # background colour variation: a 5x5 grid of random colours, bilinearly upsampled


def _inside(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """bool mask of ``name`` in shape-local coordinates (u, v); every shape fits within radius ~0.9."""
    r = np.hypot(u, v)
    if name == "circle":
        return r < 0.8
    if name == "ring":
        return (r > 0.5) & (r < 0.85)
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) < 0.65
    if name == "diamond":  # a rhombus twice as long as wide (a square at 45 degrees would be a rotated square)
        return np.abs(u) / 0.95 + np.abs(v) / 0.5 < 1
    if name == "cross":
        return ((np.abs(u) < 0.22) & (np.abs(v) < 0.8)) | ((np.abs(v) < 0.22) & (np.abs(u) < 0.8))
    if name == "triangle":  # equilateral, circumradius 0.9: three half-planes at inradius 0.45
        return (v < 0.45) & (np.sqrt(3) * u - v < 0.9) & (-np.sqrt(3) * u - v < 0.9)
    if name == "star":  # five points: the radius swings between 0.35 and 0.9 with the polar angle
        phi = np.arctan2(v, u)
        return r < 0.35 + 0.55 * ((0.5 + 0.5 * np.cos(5 * phi)) ** 2)
    if name == "crescent":
        return (r < 0.8) & (np.hypot(u - 0.4, v) > 0.6)
    if name == "stripes":  # a square patch of three bars
        return (np.maximum(np.abs(u), np.abs(v)) < 0.7) & (np.cos(2 * np.pi * u / (1.4 / 3)) > 0)
    if name == "checker":  # a 3x3 chequerboard patch (finer cells blur away at 32 px)
        board = (np.floor((u + 0.7) / (1.4 / 3)) + np.floor((v + 0.7) / (1.4 / 3))) % 2 == 0
        return (np.maximum(np.abs(u), np.abs(v)) < 0.7) & board
    raise ValueError(f"unknown shape {name!r}; expected one of {SHAPE_CLASSES}")


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] linear-interpolation weights from n_in knots spread over n_out pixels."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def _colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background and a foreground RGB colour in [0, 1] at least 0.45 apart (Euclidean), so every shape shows."""
    background = rng.uniform(0.05, 0.95, 3)
    while True:
        foreground = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(foreground - background) > 0.45:
            return background, foreground


def random_shapes(per_class: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each of the 10 :data:`SHAPE_CLASSES`, grouped by class in class order.

    Image ``k`` of class ``c`` is drawn from ``numpy.random.default_rng([seed, c, k])``, so it is the same whatever
    ``per_class`` is. Its background is a 5x5 grid of colours jittered by +-0.15 around a base colour, bilinearly
    upsampled, plus Gaussian pixel noise (std 0.04); the shape has a colour at least 0.45 from the base colour
    (with the same noise), a rotation in [0, 2 pi), a radius of 0.28-0.45 of the image side and a centre within
    the middle 40% of the image, so it stays (nearly) whole inside the frame.

    Args:
        per_class: images per class, >= 1.
        size: image side in pixels, >= 8.
        seed: the stream of draws (the datamodule uses 0 for train, 1 for test).

    Returns:
        (images uint8 [N, size, size, 3], labels int64 [N]) with N = 10 * per_class.
    """
    if per_class < 1 or size < 8:
        raise ValueError(f"need per_class >= 1 and size >= 8, got per_class={per_class}, size={size}")
    fine = 2 * size  # rendered at 2x and averaged down 2x2 for anti-aliased edges
    grid = ((np.arange(fine) + 0.5) / fine).astype(np.float32)  # pixel centres in [0, 1]; float32 halves the time
    y, x = np.meshgrid(grid, grid, indexing="ij")
    up = _upsample_matrix(size, _COARSE)
    images = np.empty((len(SHAPE_CLASSES) * per_class, size, size, 3), np.uint8)
    for c, name in enumerate(SHAPE_CLASSES):
        # per-image draws from per-image generators (cheap), then one vectorised render per class (the costly part)
        coarse, foreground, pose, noise = [], [], [], []
        for k in range(per_class):
            rng = np.random.default_rng([seed, c, k])
            background, colour = _colour_pair(rng)
            coarse.append(background + rng.uniform(-0.15, 0.15, (_COARSE, _COARSE, 3)))
            foreground.append(colour)
            pose.append((*rng.uniform(0.3, 0.7, 2), rng.uniform(0, 2 * np.pi), rng.uniform(0.28, 0.45)))
            noise.append(rng.normal(0, 0.04, (size, size, 3)))
        cx, cy, angle, radius = (np.array(p, np.float32)[:, None, None] for p in zip(*pose))  # each [n, 1, 1]
        dx, dy = (x - cx) / radius, (y - cy) / radius  # [n, fine, fine]
        u, v = dx * np.cos(angle) + dy * np.sin(angle), dy * np.cos(angle) - dx * np.sin(angle)
        cover = _inside(name, u, v).reshape(per_class, size, 2, size, 2).mean(axis=(2, 4))[..., None]
        smooth = up @ np.stack(coarse).transpose(0, 3, 1, 2) @ up.T  # [n, 3, size, size]: the upsampled grid
        canvas = smooth.transpose(0, 2, 3, 1)
        canvas = (1 - cover) * canvas + cover * np.stack(foreground)[:, None, None] + np.stack(noise)
        images[c * per_class : (c + 1) * per_class] = np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)
    labels = np.repeat(np.arange(len(SHAPE_CLASSES), dtype=np.int64), per_class)
    return images, labels


def write_shapes_folder(root: str | Path, train_per_class: int = 200, test_per_class: int = 50, size: int = 32) -> Path:
    """Write the shapes as a torchvision ImageFolder tree, ``root/{train,test}/<class>/NNNN.png`` (lossless), the
    same images :class:`~datamodules.images.ImageFolderDataModule` serves with ``root=None``; returns ``root``."""
    from PIL import Image

    root = Path(root)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = random_shapes(per_class, size, SPLIT_SEEDS[split])
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / SHAPE_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i % per_class:04d}.png")
    return root
