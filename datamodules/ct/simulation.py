"""Sparse-view CT simulation: parallel-beam projections of an attenuation slice and filtered back-projections
(FBP) from three view counts (student, teacher, full), with optional Poisson noise.

The official GloReDi code simulates a fan beam with torch-radon on the GPU; here scikit-image's parallel-beam
``radon``/``iradon`` run on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["check_slice", "check_views", "circle_mask", "default_pixel_size", "simulate", "view_angles"]

PIXEL_SIZE_64 = 0.08  # default pixel size at 64 x 64, see default_pixel_size


def view_angles(n: int) -> np.ndarray:
    """``n`` equally spaced projection angles in degrees over [0, 180): ``180 * i / n``. Computed as an exact
    integer ratio, so the angles of ``n`` views are exactly (bitwise) among those of ``k * n`` views."""
    return 180.0 * np.arange(n) / n


def circle_mask(size: int) -> np.ndarray:
    """bool [size, size], True inside the inscribed circle of skimage's ``radon(circle=True)``: centre pixel
    ``size // 2``, radius ``size // 2``. A parallel-beam scan over 180 degrees sees exactly this disc."""
    r = np.arange(size) - size // 2
    return r[:, None] ** 2 + r[None, :] ** 2 <= (size // 2) ** 2


def default_pixel_size(size: int) -> float:
    """The default pixel size (cm, the unit of 1/mu) of a ``size`` x ``size`` image: ``0.08 * 64 / size``.

    A 64 x 64 head (phantom or resized scan) has line integrals of ``mu`` up to about 12 in pixel units, so
    0.08 cm makes the longest ray's attenuation about 1 (transmission ~ 1/e). That matches GloReDi's noise
    model, which scales each sinogram by its maximum before ``I0 exp(-p)``, so ``photons`` means about what
    its ``poisson_rate`` does. The field of view (5.12 cm) is kept at every ``size``, so one object gets the
    same line integrals, hence the same noise, at any resolution.
    """
    return PIXEL_SIZE_64 * 64 / size


def check_views(views: int, teacher_views: int, full_views: int) -> None:
    """ValueError naming the counts unless ``1 <= views <= full_views`` and ``1 <= teacher_views <= full_views``."""
    if not 1 <= views <= full_views:
        raise ValueError(f"views must be in [1, full_views={full_views}], got views={views}")
    if not 1 <= teacher_views <= full_views:
        raise ValueError(f"teacher_views must be in [1, full_views={full_views}], got teacher_views={teacher_views}")


def check_slice(image: np.ndarray, source: str | Path | None = None) -> np.ndarray:
    """``image`` as a float64 array, or ValueError naming its shape (and ``source``) unless it is 2-D, square
    and finite."""
    image = np.asarray(image, dtype=np.float64)
    where = f"{source}: " if source is not None else ""
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] < 2:
        raise ValueError(f"{where}a CT slice must be a square 2-D image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError(f"{where}slice of shape {image.shape} has {(~np.isfinite(image)).sum()} non-finite pixels")
    return image


def _seed_words(seed: int | Sequence[int]) -> list[int]:
    words = [seed] if isinstance(seed, int | np.integer) else list(seed)
    if not words or any(int(w) < 0 for w in words):
        raise ValueError(f"seed must be a non-negative int or a non-empty sequence of them, got {seed!r}")
    return [int(w) for w in words]


def simulate(
    mu: np.ndarray,
    views: int,
    teacher_views: int | None = None,
    full_views: int = 180,
    photons: float | None = None,
    pixel_size: float | None = None,
    seed: int | Sequence[int] = 0,
) -> dict[str, np.ndarray]:
    """Parallel-beam sparse-, teacher- and full-view FBP images of one attenuation slice.

    ``mu`` (square [S, S], 1/cm) is zeroed outside its inscribed circle (:func:`circle_mask`), projected with
    ``skimage.transform.radon`` at the union of the three angle sets (:func:`view_angles`; when the counts
    divide, the sparse angles are a subset of the teacher's, which are a subset of the full set), and each
    set is reconstructed by ``iradon`` (ramp filter, linear interpolation).

    With ``photons`` (I0), the sparse and teacher sinograms each get independent Poisson noise: counts ~
    Poisson(I0 exp(-p * pixel_size)), clamped >= 1, and ``p = -log(counts / I0) / pixel_size``. The full-view
    sinogram stays noise-free, as in the official code, whose ground truth is a clean full-view FBP.
    ``pixel_size`` (cm) only matters for the noise; ``None`` takes :func:`default_pixel_size`. The noise is
    drawn from ``numpy.random.default_rng([*seed, 1])`` (sparse) and ``[*seed, 2]`` (teacher).

    Args:
        mu: the slice, 2-D square.
        views: number of sparse (student) views.
        teacher_views: number of teacher views; ``None`` = ``2 * views``.
        full_views: number of views of the target FBP.
        photons: incident photons per detector bin, or ``None`` for noise-free sinograms.
        pixel_size: pixel size in cm (the unit of 1/mu).
        seed: int or sequence of ints seeding the noise.

    Returns:
        ``{"image": masked mu, "sparse", "teacher", "full"}``, each float32 [S, S].

    Raises:
        ValueError: a non-2-D, non-square or non-finite slice (naming its shape), view counts out of range
        (naming them), ``photons <= 0`` or ``pixel_size <= 0``.
    """
    from skimage.transform import iradon, radon

    image = check_slice(mu)
    teacher_views = 2 * views if teacher_views is None else teacher_views
    check_views(views, teacher_views, full_views)
    side = image.shape[0]
    pixel_size = default_pixel_size(side) if pixel_size is None else float(pixel_size)
    if pixel_size <= 0 or (photons is not None and not photons > 0):
        raise ValueError(f"photons and pixel_size must be > 0, got photons={photons}, pixel_size={pixel_size}")
    words = _seed_words(seed)
    image = np.where(circle_mask(side), image, 0.0)

    sets = {"sparse": view_angles(views), "teacher": view_angles(teacher_views), "full": view_angles(full_views)}
    theta = np.unique(np.concatenate(list(sets.values())))
    sinogram = radon(image, theta, circle=True)  # [S detector bins, angles]
    out = {"image": image.astype(np.float32)}
    for k, (name, angles) in enumerate(sets.items(), start=1):
        p = sinogram[:, np.searchsorted(theta, angles)]
        if photons is not None and name != "full":
            counts = np.random.default_rng([*words, k]).poisson(photons * np.exp(-p * pixel_size))
            p = -np.log(np.maximum(counts, 1) / photons) / pixel_size
        fbp = iradon(p, angles, output_size=side, filter_name="ramp", interpolation="linear", circle=True)
        out[name] = fbp.astype(np.float32)
    return out
