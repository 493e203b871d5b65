"""Random Shepp-Logan-like head phantoms in Hounsfield units, the embedded default of
:class:`datamodules.ct.CTDataModule`, and a second family of abdomen-like body phantoms for an out-of-family
test set (other shapes, other HU structure than the heads a model was trained on).

Each phantom is an air background (-1000 HU), a rotated elliptical skull rim of bone (800-1200 HU) around a
brain of soft tissue (0-40 HU), and 3-10 random interior ellipses whose HU offsets (+-20 to +-400) add up where
they overlap, as in the Shepp-Logan phantom. Everything lies inside the image's inscribed circle (the field of
view of a parallel-beam scan), so a projection sees the whole head.

A body phantom (:func:`random_body_phantoms`) shares none of that structure: a wide elliptical trunk with a
layer of fat (-120 to -80 HU) around muscle (30-60 HU), a bone vertebra, 2-5 convex polygonal organs whose HU
(20-200) replaces the tissue's instead of adding to it, and 1-4 pockets of gas (-1000 to -800 HU).
"""

from __future__ import annotations

import numpy as np

__all__ = ["AIR_HU", "HU_RANGE", "random_body_phantoms", "random_ellipse_phantoms"]

AIR_HU = -1000.0
HU_RANGE = (-1000.0, 2000.0)  # phantoms are clipped to this range (overlapping offsets could leave it)
MAX_ELLIPSES = 10
_HEAD_PARAMS = 8  # uniforms per phantom for the head: 2 axes, angle, 2 centre, skull thickness, skull and brain HU
_ELLIPSE_PARAMS = 7  # uniforms per interior ellipse: radius, polar angle, 2 axes, angle, magnitude, sign
_PARAMS = _HEAD_PARAMS + 1 + MAX_ELLIPSES * _ELLIPSE_PARAMS  # + 1 for the number of ellipses
_CHUNK = 256  # phantoms rasterised at once: a few [256, size, size] arrays stay small


def _inside(x: np.ndarray, y: np.ndarray, cx, cy, ax, ay, angle) -> np.ndarray:
    """bool [m, S, S]: pixels (x, y [S, S]) inside each of m ellipses (centre, semi-axes, rotation, each [m])."""
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = x[None] - cx[:, None, None], y[None] - cy[:, None, None]
    u, v = (dx * c + dy * s) / ax[:, None, None], (dy * c - dx * s) / ay[:, None, None]
    return u * u + v * v <= 1.0


def random_ellipse_phantoms(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random head phantoms of ``size`` x ``size`` pixels in HU, float32 [n, size, size].

    Coordinates are normalised so that the image's inscribed circle (centre pixel ``size // 2``, radius
    ``size // 2``, skimage's ``radon(circle=True)`` convention) is the unit circle. The head is an ellipse with
    semi-axes 0.60-0.72 (x) and 0.78-0.90 (y), rotated by up to +-0.25 rad and shifted by up to 0.04, so it
    stays within radius 0.96. Its outer 0.05-0.09 is the skull (one HU in 800-1200 per phantom); inside is
    brain (one HU in 0-40). 3-10 interior ellipses (centres within 75% of the brain ellipse, semi-axes
    0.03-0.25, any rotation) add an offset of random sign and magnitude 20-400 HU to the brain pixels they
    cover, never to the skull. The result is clipped to :data:`HU_RANGE`.

    All parameters come from one ``numpy`` Generator seeded by ``seed`` as a [n, 79] table of uniforms drawn
    row by row, so phantom ``i`` is the same whatever ``n`` is. Rasterisation is vectorised over phantoms
    (3,000 phantoms of 64 x 64 take a second or two).

    Raises:
        ValueError: ``n < 0`` or ``size < 8``.
    """
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 phantoms of size >= 8 pixels, got n={n}, size={size}")
    u = np.random.default_rng(seed).random((n, _PARAMS))
    head, count, ell = u[:, :_HEAD_PARAMS], u[:, _HEAD_PARAMS], u[:, _HEAD_PARAMS + 1 :]
    ell = ell.reshape(n, MAX_ELLIPSES, _ELLIPSE_PARAMS)

    ax, ay = 0.60 + 0.12 * head[:, 0], 0.78 + 0.12 * head[:, 1]
    angle = 0.25 * (2 * head[:, 2] - 1)
    cx, cy = 0.04 * (2 * head[:, 3] - 1), 0.04 * (2 * head[:, 4] - 1)
    skull = 0.05 + 0.04 * head[:, 5]
    skull_hu, brain_hu = 800 + 400 * head[:, 6], 40 * head[:, 7]
    num_ellipses = 3 + np.minimum((count * 8).astype(np.int64), 7)  # 3..10

    # interior ellipses: centres in polar coordinates of the brain ellipse's own frame, then rotated and shifted
    radius, phi = 0.75 * np.sqrt(ell[..., 0]), 2 * np.pi * ell[..., 1]
    bx, by = radius * (ax - skull)[:, None] * np.cos(phi), radius * (ay - skull)[:, None] * np.sin(phi)
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    ex, ey = cx[:, None] + bx * c - by * s, cy[:, None] + bx * s + by * c
    eax, eay = 0.03 + 0.22 * ell[..., 2], 0.03 + 0.22 * ell[..., 3]
    eangle = np.pi * ell[..., 4]
    offset = np.where(ell[..., 6] < 0.5, -1.0, 1.0) * (20 + 380 * ell[..., 5])
    offset = np.where(np.arange(MAX_ELLIPSES)[None] < num_ellipses[:, None], offset, 0.0)

    grid = (np.arange(size) - size // 2) / (size // 2)
    y, x = np.meshgrid(grid, grid, indexing="ij")  # row = y, column = x
    out = np.empty((n, size, size), np.float32)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        outer = _inside(x, y, cx[sl], cy[sl], ax[sl], ay[sl], angle[sl])
        brain = _inside(x, y, cx[sl], cy[sl], ax[sl] - skull[sl], ay[sl] - skull[sl], angle[sl])
        hu = np.where(brain, brain_hu[sl, None, None], np.where(outer, skull_hu[sl, None, None], AIR_HU))
        for k in range(MAX_ELLIPSES):
            inside = _inside(x, y, ex[sl, k], ey[sl, k], eax[sl, k], eay[sl, k], eangle[sl, k])
            hu += np.where(inside & brain, offset[sl, k, None, None], 0.0)
        out[sl] = np.clip(hu, *HU_RANGE)
    return out


_BODY_PARAMS = 8  # trunk: 2 axes, angle, fat thickness, fat and muscle HU, vertebra HU and radius
_MAX_ORGANS, _ORGAN_PARAMS = 5, 6  # centre radius and angle, size, vertex count, rotation, HU
_MAX_GAS, _GAS_PARAMS = 4, 4  # centre radius and angle, radius, HU
_BODY_TABLE = _BODY_PARAMS + 2 + _MAX_ORGANS * _ORGAN_PARAMS + _MAX_GAS * _GAS_PARAMS  # + organ and gas counts


def _inside_polygon(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """bool [m, S, S]: pixels inside each of m convex polygons whose vertices (vx, vy [m, k]) run anticlockwise."""
    inside = np.ones((vx.shape[0], *x.shape), bool)
    for i in range(vx.shape[1]):
        ax, ay = vx[:, i, None, None], vy[:, i, None, None]
        bx, by = vx[:, (i + 1) % vx.shape[1], None, None], vy[:, (i + 1) % vx.shape[1], None, None]
        inside &= (bx - ax) * (y[None] - ay) - (by - ay) * (x[None] - ax) >= 0
    return inside


def random_body_phantoms(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random abdomen-like body phantoms of ``size`` x ``size`` pixels in HU, float32 [n, size, size].

    The same coordinates as :func:`random_ellipse_phantoms` (the inscribed circle is the unit circle). The
    trunk is an ellipse with semi-axes 0.80-0.92 (x) and 0.52-0.66 (y), rotated by up to +-0.15 rad: its outer
    0.04-0.10 is fat (one HU in -120 to -80 per phantom), the inside muscle (30-60 HU). A vertebra (a disc of
    radius 0.08-0.12, 300-900 HU) sits below the centre. 2-5 organs are convex polygons of 3-6 vertices on a
    circle of radius 0.10-0.25 (any rotation) within the muscle, each of one HU in 20-200 that replaces the
    tissue's (later organs over earlier ones, the vertebra over all); 1-4 gas pockets (discs of radius
    0.02-0.06, -1000 to -800 HU) are drawn last. Parameters come from one seeded ``numpy`` Generator as a
    [n, 56] table of uniforms drawn row by row, so phantom ``i`` is the same whatever ``n`` is.

    Raises:
        ValueError: ``n < 0`` or ``size < 8``.
    """
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 phantoms of size >= 8 pixels, got n={n}, size={size}")
    u = np.random.default_rng(seed).random((n, _BODY_TABLE))
    body, counts = u[:, :_BODY_PARAMS], u[:, _BODY_PARAMS : _BODY_PARAMS + 2]
    rest = u[:, _BODY_PARAMS + 2 :]
    organ = rest[:, : _MAX_ORGANS * _ORGAN_PARAMS].reshape(n, _MAX_ORGANS, _ORGAN_PARAMS)
    gas = rest[:, _MAX_ORGANS * _ORGAN_PARAMS :].reshape(n, _MAX_GAS, _GAS_PARAMS)

    ax, ay = 0.80 + 0.12 * body[:, 0], 0.52 + 0.14 * body[:, 1]
    angle = 0.15 * (2 * body[:, 2] - 1)
    fat = 0.04 + 0.06 * body[:, 3]
    fat_hu, muscle_hu = -120 + 40 * body[:, 4], 30 + 30 * body[:, 5]
    bone_hu, bone_r = 300 + 600 * body[:, 6], 0.08 + 0.04 * body[:, 7]
    num_organs = 2 + np.minimum((counts[:, 0] * 4).astype(np.int64), 3)  # 2..5
    num_gas = 1 + np.minimum((counts[:, 1] * 4).astype(np.int64), 3)  # 1..4
    c, s = np.cos(angle), np.sin(angle)

    def place(radius: np.ndarray, phi: np.ndarray, margin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres at relative ``radius`` and angle ``phi`` of the muscle ellipse less ``margin`` (image frame)."""
        bx = radius * np.maximum(ax[:, None] - fat[:, None] - margin, 0) * np.cos(phi)
        by = radius * np.maximum(ay[:, None] - fat[:, None] - margin, 0) * np.sin(phi)
        return bx * c[:, None] - by * s[:, None], bx * s[:, None] + by * c[:, None]

    size_o = 0.10 + 0.15 * organ[..., 2]
    ox, oy = place(np.sqrt(organ[..., 0]), 2 * np.pi * organ[..., 1], size_o)
    vertices = 3 + np.minimum((organ[..., 3] * 4).astype(np.int64), 3)  # 3..6
    organ_hu = 20 + 180 * organ[..., 5]
    gas_r = 0.02 + 0.04 * gas[..., 2]
    gx, gy = place(0.8 * np.sqrt(gas[..., 0]), 2 * np.pi * gas[..., 1], gas_r)
    gas_hu = -1000 + 200 * gas[..., 3]
    # the vertebra: below the centre (rows grow downwards), in the trunk's own frame
    vx0, vy0 = -0.55 * (ay - fat) * s, 0.55 * (ay - fat) * c

    grid = (np.arange(size) - size // 2) / (size // 2)
    y, x = np.meshgrid(grid, grid, indexing="ij")  # row = y, column = x
    out = np.empty((n, size, size), np.float32)
    ones = np.ones(n)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        m = sl.stop - sl.start
        outer = _inside(x, y, np.zeros(m), np.zeros(m), ax[sl], ay[sl], angle[sl])
        muscle = _inside(x, y, np.zeros(m), np.zeros(m), ax[sl] - fat[sl], ay[sl] - fat[sl], angle[sl])
        hu = np.where(muscle, muscle_hu[sl, None, None], np.where(outer, fat_hu[sl, None, None], AIR_HU))
        for k in range(_MAX_ORGANS):
            turn = np.arange(6)[None] * 2 * np.pi / vertices[sl, k, None] + 2 * np.pi * organ[sl, k, 4, None]
            px = ox[sl, k, None] + size_o[sl, k, None] * np.cos(turn)
            py = oy[sl, k, None] + size_o[sl, k, None] * np.sin(turn)
            # a k-gon's unused vertex slots repeat its first vertex (a zero-length edge is no constraint)
            used = np.arange(6)[None] < vertices[sl, k, None]
            px, py = np.where(used, px, px[:, :1]), np.where(used, py, py[:, :1])
            drawn = _inside_polygon(x, y, px, py) & muscle & (k < num_organs[sl, None, None])
            hu = np.where(drawn, organ_hu[sl, k, None, None], hu)
        bone = _inside(x, y, vx0[sl], vy0[sl], bone_r[sl], bone_r[sl], ones[sl])
        hu = np.where(bone & muscle, bone_hu[sl, None, None], hu)
        for k in range(_MAX_GAS):
            pocket = _inside(x, y, gx[sl, k], gy[sl, k], gas_r[sl, k], gas_r[sl, k], ones[sl])
            hu = np.where(pocket & muscle & (k < num_gas[sl, None, None]), gas_hu[sl, k, None, None], hu)
        out[sl] = np.clip(hu, *HU_RANGE)
    return out
