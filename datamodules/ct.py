"""Sparse-view CT datamodule for distillation from a teacher that sees more views (GloReDi): each slice comes as
filtered back-projections (FBP) from ``views`` (the student's input), ``teacher_views`` (the teacher's input)
and ``full_views`` projections (the target). Sources: DICOM series (one patient per folder), DeepLesion's 16-bit
PNGs, or an embedded default of random head phantoms (:mod:`datamodules.synthetic.phantoms`).

The official code simulates a fan beam with torch-radon on the GPU; here scikit-image's parallel-beam
``radon``/``iradon`` run on the CPU once per slice in ``setup()`` and the result is cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.graphs import distillzoo_cache_dir
from zoo.files import atomic_write_bytes
from zoo.units import MU_WATER, hu_to_mu, hu_window, mu_to_hu  # noqa: F401  (re-exported)

__all__ = [
    "CTDataModule",
    "MU_WATER",
    "circle_mask",
    "default_pixel_size",
    "group_split",
    "hu_to_mu",
    "hu_window",
    "mu_to_hu",
    "read_deeplesion_png",
    "read_dicom_folder",
    "simulate",
    "view_angles",
]

PIXEL_SIZE_64 = 0.08  # default pixel size at 64 x 64, see default_pixel_size
DEEPLESION_OFFSET = 32768  # DeepLesion PNGs store HU + 32768 as uint16
CACHE_VERSION = 1  # bump when the simulation changes: old cache files then no longer match
IMAGE_KEYS = ("image", "sparse", "teacher", "full")
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------- simulation


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


# ---------------------------------------------------------------------- readers


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())


def _number(ds: Any, keyword: str, index: int | None = None) -> float | None:
    """A numeric tag value (an element of a multi-valued one with ``index``), or None if absent or empty."""
    value = ds.get(keyword)
    try:
        return float(value[index] if index is not None else value)
    except (TypeError, ValueError, IndexError):
        return None


def _read_dicom_slice(path: Path) -> tuple[np.ndarray, float | None, float | None]:
    """(HU float32 [H, W], InstanceNumber, ImagePositionPatient z) of one DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=False)
    except (InvalidDicomError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable DICOM file: {err}") from err
    if "PixelData" not in ds:
        raise ValueError(f"{path} has no pixel data (no PixelData element); is it an image?")
    missing = [tag for tag in ("RescaleSlope", "RescaleIntercept") if _number(ds, tag) is None]
    if missing:
        raise ValueError(f"{path} lacks {' and '.join(missing)}: its pixel values cannot be converted to HU")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many kinds here (missing codec, bad length, ...)
        syntax = getattr(ds.get("file_meta"), "TransferSyntaxUID", "unknown")
        raise ValueError(f"{path}: cannot decode its pixel data (transfer syntax {syntax}): {err}") from err
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D slice, pixel data has shape {pixels.shape}")
    hu = pixels.astype(np.float64) * _number(ds, "RescaleSlope") + _number(ds, "RescaleIntercept")
    return hu.astype(np.float32), _number(ds, "InstanceNumber"), _number(ds, "ImagePositionPatient", 2)


def _read_dicom_series(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """(file, HU) of every ``*.dcm`` directly in ``folder``, ordered as in :func:`read_dicom_folder`."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder {folder} does not exist")
    files = _dicom_files(folder)
    if not files:
        raise FileNotFoundError(f"no *.dcm files in {folder}")
    read = [(path, *_read_dicom_slice(path)) for path in files]
    if all(r[2] is not None for r in read):
        read.sort(key=lambda r: (r[2], r[0].name))
    elif all(r[3] is not None for r in read):
        read.sort(key=lambda r: (r[3], r[0].name))
    return [(path, hu) for path, hu, _, _ in read]


def read_dicom_folder(path: str | Path) -> list[np.ndarray]:
    """The slices (float32 [H, W] in HU) of the ``*.dcm`` files directly in ``path`` (one series).

    Each file is read with ``pydicom.dcmread(force=False)``; HU = ``pixel_array * RescaleSlope +
    RescaleIntercept``. Slices are ordered by InstanceNumber when every file has one, else by the z of
    ImagePositionPatient when every file has it, else by file name.

    Raises:
        FileNotFoundError: ``path`` is not a folder or holds no ``*.dcm`` file.
        ValueError (naming the file): not DICOM, no PixelData, no RescaleSlope/RescaleIntercept, undecodable
        or not a single 2-D frame.
    """
    return [hu for _, hu in _read_dicom_series(Path(path))]


def read_deeplesion_png(path: str | Path) -> np.ndarray:
    """One DeepLesion slice: a 16-bit grayscale PNG storing HU + 32768. Returns float32 [H, W] HU.

    Raises:
        FileNotFoundError: no such file. ValueError (naming the file): unreadable, not uint16 (e.g. an 8-bit
        PNG, which cannot hold HU) or not single-channel.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PNG file {path} does not exist")
    try:
        pixels = iio.imread(path)
    except Exception as err:  # imageio's plugins raise many kinds
        raise ValueError(f"cannot read {path} as a PNG: {err}") from err
    if pixels.dtype != np.uint16:
        raise ValueError(
            f"{path} has {pixels.dtype} pixels; DeepLesion slices are 16-bit PNGs storing HU + {DEEPLESION_OFFSET}"
        )
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 2-D image, got shape {pixels.shape}")
    return (pixels.astype(np.float32) - DEEPLESION_OFFSET).astype(np.float32)


# ---------------------------------------------------------------------- splits


def group_split(groups: Tensor, fractions: Sequence[float], seed: int) -> dict[str, Tensor]:
    """Split slices by group (patient): the distinct groups are shuffled by ``seed``, then ``max(1, round(f G))``
    of the G groups go to test and to val, the rest to train, so no group is in two splits.

    Returns:
        split -> sorted int64 indices into ``groups``.

    Raises:
        ValueError: fewer than 3 groups are left for the three splits (naming the count).
    """
    ids = torch.unique(groups)
    n = ids.numel()
    n_val, n_test = max(1, round(fractions[1] * n)), max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} patients cannot fill train/val/test with split {tuple(fractions)}; need at least 3")
    order = ids[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    chunks = order.split([n_train, n_val, n_test])
    return {s: torch.isin(groups, chunk).nonzero().view(-1) for s, chunk in zip(SPLITS, chunks)}


# ---------------------------------------------------------------------- datamodule


class _Slices(Dataset):
    """Slice ``indices[i]``: ``{"sparse", "teacher", "full", "image"}`` float32 [1, S, S] and ``"index"``."""

    def __init__(self, images: dict[str, Tensor], indices: Tensor) -> None:
        self.images, self.indices = images, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = self.indices[i]
        item = {k: self.images[k][j].unsqueeze(0) for k in ("sparse", "teacher", "full", "image")}
        item["index"] = torch.tensor(j)
        return item


class CTDataModule(L.LightningDataModule):
    """Sparse-view CT slices as FBP images of three view counts, in attenuation ``mu`` (1/cm, water 0.192).

    Sources: ``root=None`` is ``num_phantoms`` random head phantoms
    (:func:`~datamodules.synthetic.phantoms.random_ellipse_phantoms`, seeded by ``seed``). With ``root`` and
    ``format="dicom"``, every folder under ``root`` holding ``*.dcm`` files is one patient's series
    (:func:`read_dicom_folder`); with ``format="png"``, every ``*.png`` under ``root`` is a DeepLesion slice
    (:func:`read_deeplesion_png`) and its parent folder (``patient_study_series``) is its patient.

    Each slice is converted to ``mu`` (:func:`hu_to_mu`, clipped at 0), resized to ``image_size`` squared by
    ``skimage.transform.resize`` (anti-aliased, bilinear) when needed, and passed to :func:`simulate` with
    ``views``, ``teacher_views`` (``None`` = ``2 * views``), ``full_views``, ``photons``, ``pixel_size``
    (``None`` = :func:`default_pixel_size`) and the noise seed ``(seed, slice index)``. Slices must be square
    (ValueError naming the file and shape). The target is the full-view FBP, as in the official code.

    ``setup()`` simulates every slice once and caches the result as ``$DISTILLZOO_CACHE/ct/<key>.safetensors``
    (written atomically), where ``key`` is the sha256 of the source (``"phantoms"``, n and seed; or every file's
    path, size and mtime), the geometry (image_size, the three view counts, photons, pixel_size), the noise
    seed when ``photons`` is set, and a code version. A cache file whose key, tensors or shapes do not match is
    recomputed with a warning. ``cache=False`` neither reads nor writes it.

    Splits are by patient (a phantom is its own patient) with ``split`` fractions drawn by ``seed``
    (:func:`group_split`). Batches are ``{"sparse", "teacher", "full", "image"}``: float32 [B, 1, S, S] and
    ``"index"``: int64 [B] (slice indices; ``names[index]`` is the file or phantom). ``predict_dataloader``
    serves the test split. After ``setup()``: ``split_index`` (split -> int64 indices), ``stats`` (slice and
    patient counts per split), ``names``, ``patients``, ``cache_path`` and ``from_cache``.
    """

    def __init__(
        self,
        root: str | None = None,
        format: Literal["dicom", "png"] = "dicom",  # noqa: A002 - the dataset's file format
        image_size: int = 64,
        views: int = 18,
        teacher_views: int | None = None,
        full_views: int = 180,
        photons: float | None = None,
        num_phantoms: int = 3000,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        cache: bool = True,
        pixel_size: float | None = None,
    ) -> None:
        super().__init__()
        if format not in ("dicom", "png"):
            raise ValueError(f"format must be 'dicom' or 'png', got {format!r}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        teacher_views = 2 * views if teacher_views is None else teacher_views
        check_views(views, teacher_views, full_views)
        if (photons is not None and not photons > 0) or (pixel_size is not None and not pixel_size > 0):
            raise ValueError(f"photons and pixel_size must be > 0 or None, got {photons}, {pixel_size}")
        if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
            raise ValueError(f"split must be 3 positive fractions summing to 1, got {split}")
        if root is None and num_phantoms < 3:
            raise ValueError(f"num_phantoms must be >= 3 (one per split), got {num_phantoms}")
        if batch_size < 1 or num_workers < 0 or seed < 0:
            raise ValueError(
                f"need batch_size >= 1, num_workers >= 0, seed >= 0; got {batch_size}, {num_workers}, {seed}"
            )
        self.save_hyperparameters()
        self.root, self.format, self.image_size = root, format, image_size
        self.views, self.teacher_views, self.full_views = views, teacher_views, full_views
        self.photons = None if photons is None else float(photons)
        self.pixel_size = default_pixel_size(image_size) if pixel_size is None else float(pixel_size)
        self.num_phantoms, self.split, self.batch_size = num_phantoms, tuple(split), batch_size
        self.seed, self.num_workers, self.cache = seed, num_workers, cache
        self.images: dict[str, Tensor] = {}
        self.patient_of: Tensor | None = None  # int64 [N]: each slice's patient, an index into ``patients``
        self.names: list[str] = []
        self.patients: list[str] = []
        self.split_index: dict[str, Tensor] = {}
        self.stats: dict[str, Any] = {}
        self.cache_path: Path | None = None
        self.from_cache = False
        self.simulate_seconds: float | None = None  # wall time of the last simulation (None when cached)

    # ------------------------------------------------------------------ sources and cache key

    def _file_groups(self) -> list[tuple[str, list[Path]]]:
        """(patient name, files) for ``root``, patients and files sorted by path."""
        assert self.root is not None
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"CT root {root} is not a folder")
        suffix = ".dcm" if self.format == "dicom" else ".png"
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() == suffix and p.is_file())
        if not found:
            raise FileNotFoundError(f"no *{suffix} files under {root} (format={self.format!r})")
        groups: dict[Path, list[Path]] = {}
        for path in found:
            groups.setdefault(path.parent, []).append(path)
        return [(str(folder.relative_to(root)), files) for folder, files in sorted(groups.items())]

    def cache_key(self, groups: list[tuple[str, list[Path]]] | None = None) -> str:
        """The sha256 naming this data's cache file (see the class docstring); ``groups`` as from the file scan."""
        if self.root is None:
            source: dict[str, Any] = {"source": "phantoms", "n": self.num_phantoms, "seed": self.seed}
        else:
            groups = self._file_groups() if groups is None else groups
            files = sorted(str(p.resolve()) for _, paths in groups for p in paths)
            source = {"source": self.format, "files": [[f, *_size_mtime(f)] for f in files]}
        geometry = {
            "image_size": self.image_size,
            "views": self.views,
            "teacher_views": self.teacher_views,
            "full_views": self.full_views,
            "photons": self.photons,
            "pixel_size": self.pixel_size,
            "noise_seed": self.seed if self.photons is not None else None,
            "version": CACHE_VERSION,
        }
        text = json.dumps({"source": source, "geometry": geometry}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    # ------------------------------------------------------------------ simulation

    def _simulate(self, mu: np.ndarray, index: int) -> dict[str, np.ndarray]:
        return simulate(
            mu, self.views, self.teacher_views, self.full_views, self.photons, self.pixel_size, (self.seed, index)
        )

    def _prepare(self, hu: np.ndarray, source: Path) -> np.ndarray:
        """HU slice -> mu at ``image_size``; ValueError naming ``source`` for a non-square or non-2-D slice."""
        from skimage.transform import resize

        mu = hu_to_mu(check_slice(hu, source))
        if mu.shape[0] != self.image_size:
            shape = (self.image_size, self.image_size)
            mu = np.maximum(resize(mu, shape, order=1, anti_aliasing=mu.shape[0] > self.image_size), 0)
        return mu

    def _simulate_all(self, groups: list[tuple[str, list[Path]]] | None) -> dict[str, Any]:
        """Every slice simulated: {"images": key -> float32 [N, S, S], "patient_of", "names", "patients"}."""
        out: dict[str, list[np.ndarray]] = {k: [] for k in IMAGE_KEYS}
        names, patient_of, patients = [], [], []

        def add(sim: dict[str, np.ndarray], name: str, patient: int) -> None:
            for k in IMAGE_KEYS:
                out[k].append(sim[k])
            names.append(name)
            patient_of.append(patient)

        if groups is None:
            from datamodules.synthetic.phantoms import random_ellipse_phantoms

            phantoms = random_ellipse_phantoms(self.num_phantoms, self.image_size, self.seed)
            patients = [f"phantom-{i:05d}" for i in range(len(phantoms))]
            for i, hu in enumerate(phantoms):
                add(self._simulate(hu_to_mu(hu.astype(np.float64)), i), patients[i], i)
        else:
            root = Path(self.root).expanduser()  # type: ignore[arg-type]
            for g, (patient, files) in enumerate(groups):
                patients.append(patient)
                if self.format == "dicom":
                    slices = _read_dicom_series(files[0].parent)
                else:
                    slices = [(path, read_deeplesion_png(path)) for path in files]
                for path, hu in slices:
                    add(self._simulate(self._prepare(hu, path), len(names)), str(path.relative_to(root)), g)
        return {
            "images": {k: torch.from_numpy(np.stack(v)) for k, v in out.items()},
            "patient_of": torch.tensor(patient_of, dtype=torch.long),
            "names": names,
            "patients": patients,
        }

    # ------------------------------------------------------------------ cache

    def _load_cache(self, path: Path, key: str) -> dict[str, Any] | None:
        """The cached data if ``path`` holds a valid file for ``key``; else None (with a warning if it exists)."""
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
                images = {k: f.get_tensor(k) for k in IMAGE_KEYS}
                patient_of = f.get_tensor("patient_of")
            names, patients = json.loads(meta["names"]), json.loads(meta["patients"])
            problems = self._cache_problems(meta.get("key") == key, images, patient_of, len(names), len(patients))
        except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as err:
            problems = [f"unreadable ({err})"]
        if problems:
            rank_zero_warn(f"CTDataModule: ignoring cache file {path}: {'; '.join(problems)}; recomputing")
            return None
        return {"images": images, "patient_of": patient_of, "names": names, "patients": patients}

    def _cache_problems(
        self, key_ok: bool, images: dict[str, Tensor], patient_of: Tensor, n: int, patients: int
    ) -> list[str]:
        """What is wrong with loaded cache contents (empty when they fit this datamodule)."""
        s = self.image_size
        problems = [] if key_ok else ["its key differs"]
        if n == 0:
            problems.append("it holds no slices")
        if any(t.dtype != torch.float32 or tuple(t.shape) != (n, s, s) for t in images.values()):
            problems.append(f"its images are not float32 [{n}, {s}, {s}]")
        elif not all(torch.isfinite(t).all() for t in images.values()):
            problems.append("its images have non-finite pixels")
        if patient_of.dtype != torch.long or tuple(patient_of.shape) != (n,):
            problems.append(f"its patient_of is not int64 [{n}]")
        elif n and (int(patient_of.min()) < 0 or int(patient_of.max()) >= patients):
            problems.append(f"its patient_of is outside [0, {patients})")
        return problems

    def _save_cache(self, path: Path, key: str, data: dict[str, Any]) -> None:
        from safetensors.torch import save

        tensors = {k: v.contiguous() for k, v in data["images"].items()} | {"patient_of": data["patient_of"]}
        metadata = {
            "key": key,
            "version": str(CACHE_VERSION),
            "names": json.dumps(data["names"]),
            "patients": json.dumps(data["patients"]),
        }
        atomic_write_bytes(path, save(tensors, metadata=metadata))

    # ------------------------------------------------------------------ setup

    def setup(self, stage: str | None = None) -> None:
        """Load the slices from the cache or simulate them (and cache them), then split; later calls return."""
        if self.images:
            return
        groups = None if self.root is None else self._file_groups()
        key = self.cache_key(groups)
        self.cache_path = distillzoo_cache_dir() / "ct" / f"{key}.safetensors"
        data = self._load_cache(self.cache_path, key) if self.cache else None
        self.from_cache = data is not None
        if data is None:
            count = self.num_phantoms if groups is None else sum(len(files) for _, files in groups)
            rank_zero_info(
                f"CTDataModule: simulating {count} slices ({self.views}/{self.teacher_views}/"
                f"{self.full_views} views at {self.image_size}x{self.image_size})..."
            )
            start = time.perf_counter()
            data = self._simulate_all(groups)
            self.simulate_seconds = time.perf_counter() - start
            if self.cache:
                self._save_cache(self.cache_path, key, data)
        self.images, self.patient_of = data["images"], data["patient_of"]
        self.names, self.patients = data["names"], data["patients"]
        self.split_index = group_split(self.patient_of, self.split, self.seed)
        self.stats = {"slices": len(self.names), "patients": len(self.patients)}
        for s in SPLITS:
            idx = self.split_index[s]
            self.stats[f"{s}_slices"] = int(idx.numel())
            self.stats[f"{s}_patients"] = int(torch.unique(self.patient_of[idx]).numel())
        source = "phantoms" if self.root is None else f"{self.format} {self.root}"
        noise = f"photons={self.photons:g}" if self.photons is not None else "noise-free"
        rank_zero_info(
            f"CTDataModule ({source}, {self.image_size}x{self.image_size}, views {self.views}/"
            f"{self.teacher_views}/{self.full_views}, {noise}, {'cached' if self.from_cache else 'simulated'}): "
            f"{self.stats}"
        )

    # ------------------------------------------------------------------ loaders

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        self.setup()
        # the shuffle follows the run's seed (seed_everything); ``seed`` only fixes the split and the phantoms
        generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
        dataset = _Slices(self.images, self.split_index[stage])
        return DataLoader(dataset, self.batch_size, shuffle=shuffle, generator=generator, **workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled train batches (see the class docstring for their keys)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test split, in index order."""
        return self._loader("test", shuffle=False)


def _size_mtime(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
