"""Ray-cast 3D scenes with metric depth and noisy depth sources, the training data and embedded default of the
MetricAnything reconstruction (arXiv 2601.22054: a metric depth teacher prompted with sparse metric depth,
distilled into a prompt-free student).

MetricAnything pretrains on depth from heterogeneous, noisy sources (sensors, reconstructions, renderings) taken
with many different cameras. This module makes that setting small and exact: every image is ray-cast from a
random scene sized in metres through a random pinhole camera, so its depth is known exactly, and one of four
simulated :data:`SOURCES` turns that truth into the measurement a real pipeline would have had:

* ``"lidar"``: 16-32 evenly spaced scanlines, sigma 0.02 m noise, nothing beyond 20 m;
* ``"tof"``: dense within 5 m, 1% multiplicative noise, holes at depth discontinuities;
* ``"mvs"``: dense but blurred, off by one unknown scale per image (0.9-1.1), with blob-shaped holes;
* ``"rendered"``: the exact depth.

A scene is a ground plane (y = 0), a back wall 6-30 m ahead (turned by up to 15 degrees, higher than the camera),
zero to two side walls, 2-6 boxes standing on the ground and 1-4 spheres resting on or floating above it, all in
front of the camera at 1.5-25 m. The camera stands 0.5-3 m above the ground, looks 5 degrees up to 30 degrees down
(mostly a little down) with up to 10 degrees of yaw, and has its principal point at the image centre and a focal
length of f/W times the image width. Because metric depth from one image hinges on the focal length, f/W can be
drawn from a union of bands: :data:`TRAIN_BANDS` for training and :data:`HELD_OUT_BANDS`, which sit between them,
to test on focal lengths never seen in training.

Depth is the z-depth (along the optical axis) of the first surface each pixel's ray hits, ``inf`` where it hits
nothing (sky, seen over the walls when the camera looks up). Colour comes from the same hit: each surface has two
colours mixed by a procedural texture evaluated in world coordinates (checker, stripes or value noise at a scale
in metres, so texture grows finer with distance, a monocular depth cue), Lambertian shading under one directional
light plus ambient, mild haze towards the horizon colour with distance, a sky gradient where nothing is hit, and
per-image colour jitter and pixel noise. Everything is vectorised over pixels and primitives; a 64x64 image takes a
few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "HELD_OUT_BANDS",
    "SOURCES",
    "TRAIN_BANDS",
    "Box",
    "Camera",
    "Plane",
    "Sphere",
    "camera_rays",
    "generate",
    "ray_cast",
    "render_scene",
    "simulate_source",
]

SOURCES = ("lidar", "tof", "mvs", "rendered")
# f/W bands: the held-out ones lie strictly inside [0.5, 2.0], so testing on them is interpolation between focal
# lengths seen in training, not only extrapolation; together the two sets tile [0.5, 2.0) without overlap
TRAIN_BANDS = ((0.50, 0.70), (0.80, 1.10), (1.25, 1.60), (1.75, 2.00))
HELD_OUT_BANDS = ((0.70, 0.80), (1.10, 1.25), (1.60, 1.75))
LIDAR_MAX_M, LIDAR_SIGMA_M, LIDAR_LINES = 20.0, 0.02, (16, 32)
TOF_MAX_M, TOF_REL_SIGMA, TOF_EDGE_JUMP = 5.0, 0.01, 0.05
MVS_SCALE, MVS_BLUR_PX, MVS_HOLES = (0.9, 1.1), (3, 5), (0.05, 0.20)
_EPS = 1e-6  # the smallest ray parameter counted as a hit, in metres of z-depth
_NOISE_TABLE = 1024  # lattice values of the value-noise texture (a power of two: hashes are masked into it)
_CHECKER, _STRIPES, _NOISE = range(3)


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at (0, ``height_m``, 0) in world coordinates (x right, y up, z ahead at zero yaw).

    ``f_px`` is the focal length in pixels (fx = fy) with the principal point at the image centre; ``pitch_rad``
    tilts the optical axis down (positive) or up (negative) and ``yaw_rad`` turns it towards +x (positive). There
    is no roll: image rows stay parallel to the ground.
    """

    f_px: float
    height_m: float
    pitch_rad: float
    yaw_rad: float = 0.0


@dataclass(frozen=True)
class Plane:
    """The plane through ``point`` with ``normal`` (any length), cut off above the height ``top`` (y, metres)."""

    point: tuple[float, float, float]
    normal: tuple[float, float, float]
    top: float = np.inf


@dataclass(frozen=True)
class Box:
    """An axis-aligned box between the corners ``lo`` and ``hi`` (metres)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]


@dataclass(frozen=True)
class Sphere:
    """A sphere of ``radius`` metres around ``centre``."""

    centre: tuple[float, float, float]
    radius: float


Primitive = Plane | Box | Sphere


def _axes(camera: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The camera's forward, right and down unit vectors (image x to the right, image y down) in world coordinates."""
    cp, sp = np.cos(camera.pitch_rad), np.sin(camera.pitch_rad)
    cy, sy = np.cos(camera.yaw_rad), np.sin(camera.yaw_rad)
    forward = np.array([sy * cp, -sp, cy * cp])
    right = np.array([cy, 0.0, -sy])
    down = np.array([-sy * sp, -cp, -cy * sp])
    return forward, right, down


def camera_rays(camera: Camera, size: tuple[int, int]) -> np.ndarray:
    """float64 [H, W, 3] world directions of the rays through the pixel centres of an image of ``size = (H, W)``.

    Each ray has unit component along the optical axis (it is not normalised), so a hit at ray parameter t has
    z-depth t. Pixel (r, c) sits at (c + 0.5 - W / 2, r + 0.5 - H / 2) pixels from the principal point.
    """
    height, width = size
    forward, right, down = _axes(camera)
    u = (np.arange(width) + 0.5 - width / 2) / camera.f_px
    v = (np.arange(height) + 0.5 - height / 2) / camera.f_px
    return forward + u[None, :, None] * right + v[:, None, None] * down


def ray_cast(
    camera: Camera, size: tuple[int, int], primitives: Sequence[Primitive]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cast every pixel's ray into ``primitives`` and keep the nearest hit in front of the camera.

    The camera must be outside every box and sphere (a surface seen from inside is not hit).

    Returns:
        (depth float64 [H, W]: z-depth in metres, ``inf`` where nothing is hit; index int64 [H, W]: the hit
        primitive's position in ``primitives``, -1 where nothing is hit; normal float64 [H, W, 3]: the unit surface
        normal at the hit, turned towards the camera, 0 where nothing is hit; point float64 [H, W, 3]: the hit in
        world coordinates, 0 where nothing is hit).
    """
    height, width = size
    rays = camera_rays(camera, size).reshape(-1, 3)
    origin = np.array([0.0, camera.height_m, 0.0])
    t = np.full((len(primitives), len(rays)), np.inf)
    kinds = {Plane: [], Box: [], Sphere: []}
    for k, p in enumerate(primitives):
        if type(p) not in kinds:
            raise ValueError(f"primitive {k} is a {type(p).__name__}; expected a Plane, Box or Sphere")
        kinds[type(p)].append(k)
    # per-primitive parameters for the normals: a plane's normal, a box's corners, a sphere's centre and radius
    first = np.zeros((len(primitives), 3))
    second = np.zeros((len(primitives), 3))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kinds[Plane]:
            idx = kinds[Plane]
            planes = [primitives[k] for k in idx]
            n = np.array([p.normal for p in planes], float)
            n /= np.linalg.norm(n, axis=1, keepdims=True)
            offset = ((np.array([p.point for p in planes], float) - origin) * n).sum(1)
            tt = offset[:, None] / (n @ rays.T)
            y = origin[1] + tt * rays[:, 1]
            top = np.array([p.top for p in planes], float)[:, None]
            t[idx] = np.where((tt > _EPS) & (y <= top), tt, np.inf)
            first[idx] = n
        if kinds[Box]:
            idx = kinds[Box]
            lo = np.array([primitives[k].lo for k in idx], float)
            hi = np.array([primitives[k].hi for k in idx], float)
            safe = np.where(np.abs(rays) < 1e-12, 1e-12, rays)
            t1 = (lo[:, None] - origin) / safe
            t2 = (hi[:, None] - origin) / safe
            near = np.minimum(t1, t2).max(-1)
            far = np.maximum(t1, t2).min(-1)
            t[idx] = np.where((far >= near) & (near > _EPS), near, np.inf)
            first[idx], second[idx] = lo, hi
        if kinds[Sphere]:
            idx = kinds[Sphere]
            centre = np.array([primitives[k].centre for k in idx], float)
            radius = np.array([primitives[k].radius for k in idx], float)
            oc = origin - centre
            a = (rays * rays).sum(1)
            b = 2 * oc @ rays.T
            disc = b * b - 4 * a * ((oc * oc).sum(1) - radius**2)[:, None]
            tt = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
            t[idx] = np.where((disc >= 0) & (tt > _EPS), tt, np.inf)
            first[idx], second[idx, 0] = centre, radius
    if len(primitives):
        winner = t.argmin(0)
        depth = t[winner, np.arange(len(rays))]
    else:
        winner, depth = np.zeros(len(rays), np.int64), np.full(len(rays), np.inf)
    hit = np.isfinite(depth)
    index = np.where(hit, winner, -1)
    point = np.where(hit[:, None], origin + np.where(hit, depth, 0)[:, None] * rays, 0.0)
    normal = np.zeros_like(point)
    kind_of = np.zeros(len(primitives), np.int64)
    kind_of[kinds[Box]], kind_of[kinds[Sphere]] = 1, 2
    w, p = winner[hit], point[hit]
    a, b, kind = first[w], second[w], kind_of[w]
    to_lo, to_hi = np.abs(p - a), np.abs(p - b)
    axis = np.minimum(to_lo, to_hi).argmin(1)
    rows = np.arange(len(w))
    box_normal = np.zeros_like(p)
    box_normal[rows, axis] = np.where(to_lo[rows, axis] < to_hi[rows, axis], -1.0, 1.0)
    sphere_normal = (p - a) / np.maximum(b[:, :1], 1e-12)
    n = np.where((kind == 0)[:, None], a, np.where((kind == 1)[:, None], box_normal, sphere_normal))
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    normal[hit] = n * -np.sign((n * rays[hit]).sum(1, keepdims=True) + 1e-300)
    shape = (height, width)
    return depth.reshape(shape), index.reshape(shape), normal.reshape(*shape, 3), point.reshape(*shape, 3)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or min(int(s) for s in size) < 8:
        raise ValueError(f"size must be (H, W) with both at least 8 pixels, got {tuple(size)}")
    return int(size[0]), int(size[1])


def _check_f_over_w(
    f_over_w: Sequence[float], bands: Sequence[tuple[float, float]] | None
) -> list[tuple[float, float]]:
    """The f/W intervals to draw from: ``bands`` if given (checked), else the one range ``f_over_w``."""
    if bands is None:
        lo, hi = (float(v) for v in f_over_w)
        if not (np.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"f_over_w must be (lo, hi) with 0 < lo <= hi, got {tuple(f_over_w)}")
        return [(lo, hi)]
    out = sorted((float(lo), float(hi)) for lo, hi in bands)
    if not out:
        raise ValueError("bands is empty; give at least one (lo, hi) f/W interval, or bands=None")
    for lo, hi in out:
        if not (np.isfinite(hi) and 0 < lo < hi):
            raise ValueError(f"invalid f/W band ({lo}, {hi}): need 0 < lo < hi")
    for (_, hi), (lo, _) in zip(out, out[1:]):
        if lo < hi:
            raise ValueError(f"f/W bands overlap around {lo}..{hi}; bands must be disjoint")
    return out


def _draw_f_over_w(rng: np.random.Generator, intervals: list[tuple[float, float]]) -> float:
    """f/W uniform over the union of ``intervals`` (a band is picked with probability proportional to its width)."""
    widths = np.array([hi - lo for lo, hi in intervals])
    k = rng.choice(len(intervals), p=widths / widths.sum()) if widths.sum() > 0 else 0
    return float(rng.uniform(*intervals[k]))


def _material(rng: np.random.Generator, scale: tuple[float, float]) -> dict[str, Any]:
    """One surface's two colours, texture kind, texture scale (log-uniform in ``scale``, metres) and placement."""
    colour = rng.uniform(0.1, 0.9, 3)
    other = colour * rng.uniform(0.35, 0.75) if rng.random() < 0.5 else rng.uniform(0.05, 0.95, 3)
    axis = rng.normal(size=3)
    return {
        "a": colour,
        "b": other,
        "texture": int(rng.integers(3)),
        "scale": float(np.exp(rng.uniform(*np.log(scale)))),
        "offset": rng.uniform(0, 64, 3),
        "axis": axis / np.linalg.norm(axis),
    }


def _sample_scene(
    rng: np.random.Generator, size: tuple[int, int], intervals: list[tuple[float, float]]
) -> tuple[Camera, list[Primitive], list[dict[str, Any]]]:
    """A random camera, the scene's primitives (ground first, then walls, boxes, spheres) and one material each."""
    height, width = size
    f_px = _draw_f_over_w(rng, intervals) * width
    camera = Camera(
        f_px=f_px,
        height_m=float(rng.uniform(0.5, 3.0)),
        pitch_rad=float(np.radians(-5 + 35 * rng.beta(2, 3))),
        yaw_rad=float(np.radians(rng.uniform(-10, 10))),
    )
    prims: list[Primitive] = [Plane((0.0, 0.0, 0.0), (0.0, 1.0, 0.0))]
    materials = [_material(rng, (0.25, 3.0))]
    wall_z, turn = rng.uniform(6, 30), np.radians(rng.uniform(-15, 15))
    top = camera.height_m + rng.uniform(1, 10)  # above the camera: no ray that falls passes over the back wall
    prims.append(Plane((0.0, 0.0, wall_z), (-np.sin(turn), 0.0, -np.cos(turn)), top))
    materials.append(_material(rng, (0.25, 3.0)))
    x_min, x_max = -np.inf, np.inf
    n_side = rng.choice(3, p=[0.4, 0.35, 0.25])
    for side in rng.permutation([-1.0, 1.0])[:n_side]:
        x = side * rng.uniform(2.5, 10)
        # no higher than the back wall, so nothing beyond the back wall shows over it
        prims.append(Plane((x, 0.0, 0.0), (-side, 0.0, 0.0), top * rng.uniform(0.5, 1.0)))
        materials.append(_material(rng, (0.25, 3.0)))
        x_min, x_max = (x, x_max) if side < 0 else (x_min, x)
    half_fov = np.arctan(width / 2 / f_px)

    def place(r: float, half_x: float, half_z: float) -> tuple[float, float] | None:
        """A footprint centre (x, z) at ground distance ``r`` within the view and inside the walls, moved nearer if
        it would cross the back wall; None if it cannot fit."""
        angle = camera.yaw_rad + rng.uniform(-0.9, 0.9) * half_fov
        x, z = r * np.sin(angle), r * np.cos(angle)
        if x_max - x_min < 2 * half_x + 0.2:
            return None
        x = float(np.clip(x, x_min + half_x + 0.1, x_max - half_x - 0.1))
        z_far = wall_z - max((x - half_x) * np.tan(turn), (x + half_x) * np.tan(turn)) - half_z - 0.05
        z_near = 0.8 + half_z
        return (x, float(min(max(z, z_near), z_far))) if z_far >= z_near else None

    far = min(25.0, wall_z - 0.5)
    for _ in range(rng.integers(2, 7)):
        r = rng.uniform(1.5, far)
        sx, sy, sz = rng.uniform(0.3, min(3.0, 0.3 + 0.4 * r), 3)
        centre = place(r, sx / 2, sz / 2)
        if centre is not None:
            x, z = centre
            prims.append(Box((x - sx / 2, 0.0, z - sz / 2), (x + sx / 2, sy, z + sz / 2)))
            materials.append(_material(rng, (0.08, 1.0)))
    for _ in range(rng.integers(1, 5)):
        r = rng.uniform(1.5, far)
        radius = rng.uniform(0.2, min(1.5, 0.2 + 0.2 * r))
        lift = 0.0 if rng.random() < 0.6 else rng.uniform(0.1, 2.0)
        centre = place(r, radius, radius)
        if centre is not None:
            x, z = centre
            prims.append(Sphere((x, radius + lift, z), radius))
            materials.append(_material(rng, (0.08, 1.0)))
    return camera, prims, materials


def _value_noise(q: np.ndarray, surface: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1] at points q [N, 3] (lattice units): trilinear over hashed lattice values, with each
    surface hashing to its own lattice."""
    cell = np.floor(q)
    f = q - cell
    s = f * f * (3 - 2 * f)
    i = cell.astype(np.int64)
    salt = surface.astype(np.int64) * 2654435761
    out = np.zeros(len(q))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = ((i[:, 0] + dx) * 73856093) ^ ((i[:, 1] + dy) * 19349663) ^ ((i[:, 2] + dz) * 83492791) ^ salt
                weight = (s[:, 0] if dx else 1 - s[:, 0]) * (s[:, 1] if dy else 1 - s[:, 1])
                out += weight * (s[:, 2] if dz else 1 - s[:, 2]) * table[h & (_NOISE_TABLE - 1)]
    return out


def _shade(
    rng: np.random.Generator,
    rays: np.ndarray,
    depth: np.ndarray,
    index: np.ndarray,
    normal: np.ndarray,
    point: np.ndarray,
    materials: list[dict[str, Any]],
) -> np.ndarray:
    """uint8 [H, W, 3]: textured, lit, hazed surfaces where hit, a sky gradient elsewhere, then colour jitter."""
    hit = index >= 0
    w, p, n = index[hit], point[hit], normal[hit]
    field = {k: np.array([m[k] for m in materials]) for k in materials[0]}
    q = p / field["scale"][w][:, None] + field["offset"][w]
    table = rng.random(_NOISE_TABLE)
    checker = np.floor(q).sum(1) % 2
    stripes = ((q * field["axis"][w]).sum(1) % 1.0 < 0.5).astype(float)
    noise = 0.65 * _value_noise(q, w, table) + 0.35 * _value_noise(2 * q + 17.0, w, table)
    texture = np.choose(field["texture"][w], [checker, stripes, noise])[:, None]
    albedo = field["a"][w] + (field["b"][w] - field["a"][w]) * texture
    azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(25, 70))
    light = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])
    ambient = rng.uniform(0.25, 0.5)
    lit = albedo * (ambient + (1 - ambient) * np.clip(n @ light, 0, 1))[:, None] * rng.uniform(0.95, 1.05, 3)
    horizon = rng.uniform(0.7, 0.95, 3) * np.array([0.9, 0.95, 1.0])
    zenith = np.array([0.25, 0.45, 0.85]) * rng.uniform(0.7, 1.1)
    haze = 1 - np.exp(-depth[hit] / rng.uniform(60, 300))
    elevation_of_ray = rays[..., 1] / np.linalg.norm(rays, axis=-1)
    up = np.clip(2 * elevation_of_ray, 0, 1)[..., None]
    image = horizon + (zenith - horizon) * up
    image[hit] = lit + (horizon - lit) * haze[:, None]
    image = image * rng.uniform(0.85, 1.15) * rng.uniform(0.93, 1.07, 3) + rng.normal(0, 0.015, image.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def render_scene(
    seed: int | Sequence[int],
    size: tuple[int, int] = (64, 64),
    f_over_w: tuple[float, float] = (0.5, 2.0),
    bands: Sequence[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """One random scene (see the module docstring) drawn from ``numpy.random.default_rng(seed)``.

    Args:
        seed: an int or a sequence of ints (as ``default_rng`` takes them).
        size: (H, W) in pixels, both >= 8.
        f_over_w: f/W is drawn uniformly from this (lo, hi) range...
        bands: ...or, when given, uniformly from the union of these disjoint (lo, hi) f/W intervals (e.g.
            :data:`TRAIN_BANDS` or :data:`HELD_OUT_BANDS`).

    Returns:
        {"rgb": uint8 [H, W, 3], "depth": float32 [H, W] z-depth in metres along the optical axis (not ray length),
        ``inf`` where the ray hits nothing, "f_px": the focal length in pixels, "camera": the :class:`Camera`}.
    """
    size = _check_size(size)
    intervals = _check_f_over_w(f_over_w, bands)
    rng = np.random.default_rng(seed)
    camera, prims, materials = _sample_scene(rng, size, intervals)
    depth, index, normal, point = ray_cast(camera, size, prims)
    rgb = _shade(rng, camera_rays(camera, size), depth, index, normal, point, materials)
    return {"rgb": rgb, "depth": depth.astype(np.float32), "f_px": float(camera.f_px), "camera": camera}


def _box_sum(a: np.ndarray, k: int) -> np.ndarray:
    """Sum over each pixel's k x k window (k odd), zeros outside the image."""
    c = np.pad(np.pad(a, k // 2).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def _depth_edges(z: np.ndarray, valid: np.ndarray, jump: float) -> np.ndarray:
    """bool [H, W]: pixels whose 3x3 neighbourhood holds a relative depth jump above ``jump`` that no plane explains.

    Inverse depth is affine in the pixel coordinates on any plane, so along each of the four lines through a pixel
    (row, column, two diagonals) the second difference of inverse depth, relative to the pixel's own, measures the
    jump: on a slanted ground it is ~0, across an edge from depth z to depth z' it is about |z / z' - 1|. Invalid
    neighbours count as inverse depth 0 (an edge); the image border is extended linearly (no edge).
    """
    inv = np.where(valid, 1 / np.where(valid, z, 1), 0.0)
    p = np.pad(inv, 1, mode="reflect", reflect_type="odd")
    h, w = inv.shape
    centre = p[1 : h + 1, 1 : w + 1]
    second = np.zeros_like(inv)
    for (r0, c0), (r1, c1) in (((1, 0), (1, 2)), ((0, 1), (2, 1)), ((0, 0), (2, 2)), ((0, 2), (2, 0))):
        second = np.maximum(second, np.abs(p[r0 : r0 + h, c0 : c0 + w] + p[r1 : r1 + h, c1 : c1 + w] - 2 * centre))
    return second * np.where(valid, z, 0) > jump


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] linear-interpolation weights from n_in knots spread over n_out pixels."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] = 1 - (pos - lo)
    m[np.arange(n_out), lo + 1] = pos - lo
    return m


def simulate_source(depth: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """What source ``kind`` (one of :data:`SOURCES`, see the module docstring) measures of the exact ``depth``.

    ``depth`` is a [H, W] z-depth map in metres; non-finite or non-positive values are invalid (never measured).
    The range limits apply to z-depth: lidar measures z <= 20 m, ToF z <= 5 m. ToF loses the pixels whose 3x3
    neighbourhood holds a relative depth jump above 5% that no plane explains (a slanted floor keeps its
    measurements; both sides of an occluding edge, and pixels next to invalid ones, lose theirs). MVS box-blurs
    the valid depth over 3 or 5 px, multiplies it by one scale drawn from U[0.9, 1.1] and loses 5-20% of the image
    (drawn per image) to blobs where a smooth random field is highest.

    Returns:
        float32 [H, W]: the measured depth in metres, finite and > 0 where measured, exactly 0 elsewhere.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown depth source {kind!r}; expected one of {SOURCES}")
    depth = np.asarray(depth, np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be a [H, W] map, got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    z = np.where(valid, depth, 0.0)
    height, width = z.shape
    if kind == "rendered":
        return z.astype(np.float32)
    if kind == "lidar":
        lines = int(rng.integers(LIDAR_LINES[0], LIDAR_LINES[1] + 1))
        spacing = height / lines
        rows = np.unique(np.minimum(np.floor(rng.uniform(0, spacing) + spacing * np.arange(lines)), height - 1))
        keep = np.zeros_like(valid)
        keep[rows.astype(int)] = True
        keep &= valid & (z <= LIDAR_MAX_M)
        measured = np.maximum(z + rng.normal(0, LIDAR_SIGMA_M, z.shape), 1e-3)
    elif kind == "tof":
        keep = valid & (z <= TOF_MAX_M) & ~_depth_edges(z, valid, TOF_EDGE_JUMP)
        measured = np.maximum(z * (1 + TOF_REL_SIGMA * rng.normal(size=z.shape)), 1e-3)
    else:
        k = int(rng.choice(MVS_BLUR_PX))
        weight = _box_sum(valid.astype(float), k)
        blurred = _box_sum(z, k) / np.maximum(weight, 1)
        grid = int(rng.integers(3, 7))
        smooth = _upsample_matrix(height, grid) @ rng.random((grid, grid)) @ _upsample_matrix(width, grid).T
        holes = smooth > np.quantile(smooth, 1 - rng.uniform(*MVS_HOLES))
        keep = valid & ~holes
        measured = blurred * rng.uniform(*MVS_SCALE)
    return np.where(keep, measured, 0.0).astype(np.float32)


def generate(
    n: int,
    seed: int,
    size: tuple[int, int] = (64, 64),
    f_over_w: tuple[float, float] = (0.5, 2.0),
    bands: Sequence[tuple[float, float]] | None = None,
    sources: Sequence[str] = SOURCES,
) -> dict[str, np.ndarray]:
    """``n`` scenes, each with the measurement of one source.

    Sample ``i`` is ``render_scene([seed, i], size, f_over_w, bands)``; its source kind is drawn uniformly from
    ``sources`` and simulated with ``numpy.random.default_rng([seed, i, 1])``, so a sample is the same whatever ``n``
    is, and restricting ``sources`` changes the measurement but not the scene.

    Returns:
        {"rgb": uint8 [n, H, W, 3], "depth": float32 [n, H, W] exact z-depth (0 = invalid, i.e. no hit),
        "source": float32 [n, H, W] (0 = no measurement), "kind": int64 [n] index into :data:`SOURCES`,
        "f_px": float32 [n]}.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    size = _check_size(size)
    _check_f_over_w(f_over_w, bands)
    if isinstance(sources, str):
        sources = (sources,)
    if not sources:
        raise ValueError(f"sources is empty; give at least one of {SOURCES}")
    for kind in sources:
        if kind not in SOURCES:
            raise ValueError(f"unknown depth source {kind!r}; expected one of {SOURCES}")
    out = {
        "rgb": np.empty((n, *size, 3), np.uint8),
        "depth": np.empty((n, *size), np.float32),
        "source": np.empty((n, *size), np.float32),
        "kind": np.empty(n, np.int64),
        "f_px": np.empty(n, np.float32),
    }
    for i in range(n):
        scene = render_scene([seed, i], size, f_over_w, bands)
        rng = np.random.default_rng([seed, i, 1])
        kind = sources[int(rng.integers(len(sources)))]
        out["rgb"][i] = scene["rgb"]
        out["depth"][i] = np.where(np.isfinite(scene["depth"]), scene["depth"], 0)
        out["source"][i] = simulate_source(scene["depth"], kind, rng)
        out["kind"][i] = SOURCES.index(kind)
        out["f_px"][i] = scene["f_px"]
    return out
