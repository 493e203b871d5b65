"""Generated road scenes with per-pixel class maps, the embedded default of
:class:`datamodules.images.SegmentationDataModule`, in CamVid's 11 classes (SegNet order) plus void.

A scene is painted back to front, as a street photographed from a car: sky above a horizon, a skyline of
buildings (with window grids) that also fills the sides below the horizon, a road narrowing towards a vanishing
point with pavements on either side and dashed lane marks, a fence along one pavement, trees, poles (some with a
sign), cars on the road that grow with their distance below the horizon, pedestrians on the pavements and
bicyclists beside the cars. Every class has its own colour jittered per scene and its own texture, and the whole
image gets a brightness change and pixel noise. Void (11) is what CamVid leaves unlabelled: a band along
object outlines and an occasional patch of clutter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datamodules.images.camvid import CAMVID_CLASSES

__all__ = ["SCENE_CLASSES", "VOID", "random_scenes", "write_scenes_folder"]

SCENE_CLASSES = CAMVID_CLASSES  # CamVid's 11 classes in the SegNet label order (ids 0-10)
VOID = 11  # CamVid's "Unlabelled", the ignore index
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)
SPLIT_SIZES = {"train": 96, "val": 24, "test": 32}  # scenes per split of the embedded default
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}  # different generator streams: no scene is in two splits
_BASE_COLOURS = np.array(
    [
        [0.50, 0.65, 0.85],  # sky
        [0.55, 0.45, 0.40],  # building
        [0.60, 0.60, 0.55],  # pole
        [0.35, 0.35, 0.38],  # road
        [0.60, 0.55, 0.50],  # pavement
        [0.25, 0.50, 0.20],  # tree
        [0.85, 0.75, 0.15],  # sign
        [0.45, 0.35, 0.25],  # fence
        [0.60, 0.15, 0.15],  # car (each car also gets its own colour)
        [0.30, 0.25, 0.45],  # pedestrian
        [0.15, 0.45, 0.55],  # bicyclist
    ]
)


class _Canvas:
    """A label map and a colour image painted together: each stroke sets both where its shape covers a pixel.

    Shapes are evaluated only inside their bounding box (objects are small, so a scene costs about a millisecond);
    each stroke returns its full-size boolean mask. Pixel (row r, column c) is at y = r, x = c.
    """

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.label = np.full((height, width), VOID, np.uint8)
        self.colour = np.zeros((height, width, 3), np.float32)
        self.y = np.arange(height, dtype=np.float32)[:, None]  # [H, 1]
        self.x = np.arange(width, dtype=np.float32)[None, :]  # [1, W]

    def paint(self, mask: np.ndarray, cls: int, colour: np.ndarray | float) -> None:
        """Set ``cls`` and ``colour`` (RGB, or a field broadcastable to [H, W, 3]) where the [H, W] ``mask`` is true."""
        mask = np.broadcast_to(mask, self.label.shape)
        self.label[mask] = cls
        if np.ndim(colour) == 3:
            colour = np.broadcast_to(colour, self.colour.shape)[mask]
        self.colour[mask] = colour

    def _window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
        rows = slice(min(max(int(np.ceil(y0)), 0), self.height), min(max(int(np.ceil(y1)), 0), self.height))
        cols = slice(min(max(int(np.ceil(x0)), 0), self.width), min(max(int(np.ceil(x1)), 0), self.width))
        return rows, cols

    def box(self, x0: float, x1: float, y0: float, y1: float, cls: int, colour: np.ndarray | float) -> np.ndarray:
        """Paint the pixels with x0 <= x < x1 and y0 <= y < y1."""
        mask = np.zeros((self.height, self.width), bool)
        mask[self._window(x0, x1, y0, y1)] = True
        self.paint(mask, cls, colour)
        return mask

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, cls: int, colour: np.ndarray | float) -> np.ndarray:
        """Paint the pixels inside the axis-aligned ellipse of centre (cx, cy) and semi-axes (rx, ry)."""
        rows, cols = self._window(cx - rx, cx + rx + 1, cy - ry, cy + ry + 1)
        mask = np.zeros((self.height, self.width), bool)
        mask[rows, cols] = ((self.x[:, cols] - cx) / rx) ** 2 + ((self.y[rows] - cy) / ry) ** 2 <= 1
        self.paint(mask, cls, colour)
        return mask


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` with a 4-neighbour outside it."""
    p = np.pad(mask, 1)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (colour float32 [H, W, 3] in about [0, 1], label uint8 [H, W])."""
    c = _Canvas(height, width)
    H, W, y, x = height, width, c.y, c.x
    base = np.clip(_BASE_COLOURS + rng.uniform(-0.08, 0.08, _BASE_COLOURS.shape), 0, 1).astype(np.float32)
    noise = rng.standard_normal((H, W, 3), dtype=np.float32)  # one noise field, reused by every texture
    horizon, vanish = H * rng.uniform(0.38, 0.5), W * rng.uniform(0.35, 0.65)
    scale_px = H / 96  # object sizes below are in pixels of a 96-row image

    # sky, lighter towards the horizon
    c.paint(y < horizon, SKY, base[SKY] + 0.25 * (y / horizon)[..., None] * (1 - base[SKY]))
    # the skyline: blocks of random width and height standing on the horizon; windows are darkened below
    left = 0.0
    while left < W:
        right = left + W * rng.uniform(0.1, 0.3)
        tint = np.clip(base[BUILDING] + rng.uniform(-0.1, 0.1, 3), 0, 1)
        c.box(left, right, horizon - H * rng.uniform(0.08, 0.35), horizon + 1, BUILDING, tint)
        left = right
    period = rng.uniform(4, 7) * scale_px
    windows = ((x % period) < period / 2) & (((y - horizon) % period) < period / 2) & (y < horizon)
    # the ground: the road between two lines from the vanishing point, pavements beside it, facades beyond
    depth = np.clip((y - horizon) / (H - horizon), 0, 1)  # [H, 1]: 0 at the horizon, 1 at the bottom row
    bottom_l, bottom_r = W * rng.uniform(-0.05, 0.2), W * rng.uniform(0.8, 1.05)  # road edges at the bottom row
    road_l, road_r = vanish + (bottom_l - vanish) * depth, vanish + (bottom_r - vanish) * depth  # [H, 1]
    walk = W * rng.uniform(0.15, 0.3) * depth  # pavement width, growing towards the camera
    ground = y >= horizon
    c.paint(ground, BUILDING, base[BUILDING] * 0.9)
    c.paint(ground & (x >= road_l - walk) & (x < road_r + walk), PAVEMENT, base[PAVEMENT] + 0.03 * noise)
    lane = (np.abs(x - (road_l + road_r) / 2) < 0.6 + depth) & (np.sqrt(np.maximum(y - horizon, 0)) % 1.6 < 0.8)
    asphalt = np.where(lane[..., None], np.float32(0.9), base[ROAD] + 0.03 * noise[..., :1])  # dashed centre line
    c.paint(ground & (x >= road_l) & (x < road_r), ROAD, asphalt)
    # a fence along one pavement's outer edge, slats every 3 pixels
    on_left = rng.random() < 0.5
    edge = road_l - walk if on_left else road_r + walk
    fence = ground & (np.abs(x - edge) < 2 + 4 * depth) & (y < horizon + (H - horizon) * 0.6)
    fence |= (np.abs(y - horizon - 2) < 2) & ((x < road_l - walk) if on_left else (x > road_r + walk))
    c.paint(fence, FENCE, np.where(((x % 3) < 1.5)[..., None], base[FENCE] * 0.7, base[FENCE]))

    def column(at_depth: float, on: str) -> float:
        """A random column on the left or right pavement, or on the road's middle 80%, at a depth in [0, 1]."""
        row = min(int(horizon + at_depth * (H - horizon)), H - 1)
        lo, hi, w = road_l[row, 0], road_r[row, 0], walk[row, 0]
        if on == "road":
            return rng.uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo))
        return rng.uniform(lo - w, lo) if on == "left" else rng.uniform(hi, hi + w)

    # trees and poles stand on the pavements; far ones first so near ones cover them
    leaves = base[TREE] * (1 + 0.25 * noise)
    for d in np.sort(rng.uniform(0.05, 0.9, rng.integers(1, 4))):
        foot, cx = horizon + d * (H - horizon), column(d, rng.choice(["left", "right"]))
        size = (4 + 18 * d) * scale_px
        c.box(cx - size * 0.08, cx + size * 0.08, foot - size * 1.5, foot, TREE, base[TREE] * 0.6)
        c.ellipse(cx, foot - size * 1.6, size * 0.7, size * 0.6, TREE, leaves)
    for d in np.sort(rng.uniform(0.05, 0.9, rng.integers(1, 4))):
        foot, cx = horizon + d * (H - horizon), column(d, rng.choice(["left", "right"]))
        tall, half = (10 + 40 * d) * scale_px, (0.5 + d) * scale_px
        c.box(cx - half, cx + half, foot - tall, foot, POLE, base[POLE])
        if rng.random() < 0.6:
            s = (1.5 + 4 * d) * scale_px
            c.box(cx - s, cx + s, foot - tall - s, foot - tall + s, SIGN, base[SIGN])
    # cars on the road, bicyclists and pedestrians, far to near
    movers = [(CAR, d) for d in rng.uniform(0.1, 0.95, rng.integers(1, 4))]
    movers += [(PEDESTRIAN, d) for d in rng.uniform(0.1, 0.9, rng.integers(0, 4))]
    movers += [(BICYCLIST, d) for d in rng.uniform(0.1, 0.9, rng.integers(0, 2))]
    outlines = np.zeros((H, W), bool)
    for cls, d in sorted(movers, key=lambda m: m[1]):
        foot, scale = horizon + d * (H - horizon), (0.25 + 1.0 * d) * scale_px
        if cls == CAR:
            cx, w, h = column(d, "road"), 22 * scale, 12 * scale
            paint = rng.uniform(0, 1, 3).astype(np.float32)
            mask = c.box(cx - w / 3, cx + w / 3, foot - h, foot - h * 0.6, CAR, 0.2)  # the cabin's glass
            mask |= c.box(cx - w / 2, cx + w / 2, foot - h * 0.6, foot, CAR, paint)
        elif cls == PEDESTRIAN:
            cx, h = column(d, rng.choice(["left", "right"])), 18 * scale
            colour = np.clip(base[PEDESTRIAN] + rng.uniform(-0.15, 0.15, 3), 0, 1)
            mask = c.ellipse(cx, foot - h * 0.45, h * 0.14, h * 0.45, PEDESTRIAN, colour)
            mask |= c.ellipse(cx, foot - h * 0.95, h * 0.1, h * 0.1, PEDESTRIAN, colour)
        else:
            cx, h = column(d, "road"), 18 * scale
            mask = c.ellipse(cx, foot - h * 0.65, h * 0.13, h * 0.35, BICYCLIST, base[BICYCLIST])
            for dx in (-0.3, 0.3):
                mask |= c.ellipse(cx + dx * h, foot - h * 0.18, h * 0.18, h * 0.18, BICYCLIST, 0.1)
        if mask.sum() > 40:  # only outlines of objects big enough to keep an inside (a far one would vanish)
            outlines |= _outline(mask)
    c.colour[windows & (c.label == BUILDING)] *= 0.55
    # void: object outlines (annotators leave edges unlabelled), and now and then a patch of clutter
    c.label[outlines] = VOID
    if rng.random() < 0.5:
        cx, cy = rng.uniform(0, W), rng.uniform(horizon, H)
        c.ellipse(cx, cy, W * rng.uniform(0.02, 0.06), H * rng.uniform(0.02, 0.05), VOID, 0.5 + 0.25 * noise)
    return c.colour * np.float32(rng.uniform(0.8, 1.15)) + 0.02 * noise[::-1], c.label


def random_scenes(n: int, size: Sequence[int] = (96, 128), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` road scenes of ``size = (H, W)`` pixels, scene ``i`` drawn from ``numpy.random.default_rng([seed, i])``
    (so it is the same whatever ``n`` is); see the module docstring for what a scene holds.

    Returns:
        (images uint8 [n, H, W, 3], labels uint8 [n, H, W]) with ids 0-10 (:data:`SCENE_CLASSES`) and
        :data:`VOID` = 11.
    """
    height, width = (int(s) for s in size)
    if n < 0 or height < 16 or width < 16:
        raise ValueError(f"need n >= 0 scenes of at least 16x16 pixels, got n={n}, size={tuple(size)}")
    images = np.empty((n, height, width, 3), np.uint8)
    labels = np.empty((n, height, width), np.uint8)
    for i in range(n):
        colour, labels[i] = _scene(np.random.default_rng([seed, i]), height, width)
        images[i] = np.clip(np.rint(colour * 255), 0, 255).astype(np.uint8)
    return images, labels


def write_scenes_folder(root: str | Path, sizes: dict[str, int] | None = None, size: Sequence[int] = (96, 128)) -> Path:
    """Write scenes in SegNet's CamVid layout, ``root/<split>/NNNN.png`` with the label PNG (8-bit ids) at
    ``root/<split>annot/NNNN.png``: the same scenes :class:`~datamodules.images.SegmentationDataModule` serves with
    ``root=None`` (default ``sizes``); returns ``root``."""
    from PIL import Image

    root = Path(root)
    for split, n in (sizes or SPLIT_SIZES).items():
        images, labels = random_scenes(n, size, SPLIT_SEEDS[split])
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            Image.fromarray(image).save(root / split / f"{i:04d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"{i:04d}.png")
    return root
