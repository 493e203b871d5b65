"""Random Shepp-Logan-like head phantoms in Hounsfield units, the embedded default of
:class:`datamodules.ct.CTDataModule`.

Each phantom is an air background (-1000 HU), a rotated elliptical skull rim of bone (800-1200 HU) around a
brain of soft tissue (0-40 HU), and 3-10 random interior ellipses whose HU offsets (+-20 to +-400) add up where
they overlap, as in the Shepp-Logan phantom. Everything lies inside the image's inscribed circle (the field of
view of a parallel-beam scan), so a projection sees the whole head.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AIR_HU", "HU_RANGE", "random_ellipse_phantoms"]

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
