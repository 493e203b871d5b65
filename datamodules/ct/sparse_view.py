"""Sparse-view CT datamodule for distillation from a teacher that sees more views (GloReDi): each slice comes as
filtered back-projections (FBP) from ``views`` (the student's input), ``teacher_views`` (the teacher's input)
and ``full_views`` projections (the target). Sources: DICOM series (one patient per folder), DeepLesion's 16-bit
PNGs, or an embedded default of random head phantoms (:mod:`datamodules.synthetic.phantoms`). Slices are
simulated once per slice in ``setup()`` (:mod:`datamodules.ct.simulation`) and the result is cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.base import BaseDataModule
from datamodules.ct.readers import read_deeplesion_png, read_dicom_series
from datamodules.ct.simulation import check_slice, check_views, default_pixel_size, simulate
from datamodules.splits import SPLITS, grouped_split
from zoo.files import atomic_write_bytes, cache_root
from zoo.units import hu_to_mu

__all__ = ["CTDataModule", "group_split"]

CACHE_VERSION = 1  # bump when the simulation changes: old cache files then no longer match
IMAGE_KEYS = ("image", "sparse", "teacher", "full")


def group_split(groups: Tensor, fractions: Sequence[float], seed: int) -> dict[str, Tensor]:
    """Split slices by group (patient): :func:`datamodules.splits.grouped_split` with the default order.

    The distinct groups are shuffled by ``seed``; ``max(1, floor(f G + 1/2))`` of the G groups go to val and
    to test, the rest to train (taken in the order train, val, test), so no group is in two splits.

    Returns:
        split -> sorted int64 indices into ``groups``.

    Raises:
        ValueError: fewer than 3 groups are left for the three splits (naming the count).
    """
    return grouped_split(groups, fractions, seed, what="patients")


class _Slices(Dataset):
    """Slice ``indices[i]``: ``{"sparse", "teacher", "full", "image"}`` float32 [1, S, S] and ``"index"``; slices
    of the out-of-family test set also carry ``"ood"`` (True)."""

    def __init__(self, images: dict[str, Tensor], indices: Tensor, ood: bool = False) -> None:
        self.images, self.indices, self.ood = images, indices.tolist(), ood

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = self.indices[i]
        item = {k: self.images[k][j].unsqueeze(0) for k in ("sparse", "teacher", "full", "image")}
        item["index"] = torch.tensor(j)
        if self.ood:
            item["ood"] = torch.tensor(True)
        return item


class CTDataModule(BaseDataModule):
    """Sparse-view CT slices as FBP images of three view counts, in attenuation ``mu`` (1/cm, water 0.192).

    Sources: ``root=None`` is ``num_phantoms`` random head phantoms
    (:func:`~datamodules.synthetic.phantoms.random_ellipse_phantoms`, seeded by ``seed``). With ``root`` and
    ``format="dicom"``, every folder under ``root`` holding ``*.dcm`` files is one patient's series
    (:func:`~datamodules.ct.readers.read_dicom_folder`); with ``format="png"``, every ``*.png`` under ``root``
    is a DeepLesion slice (:func:`~datamodules.ct.readers.read_deeplesion_png`) and its parent folder
    (``patient_study_series``) is its patient.

    Each slice is converted to ``mu`` (:func:`hu_to_mu`, clipped at 0), resized to ``image_size`` squared by
    ``skimage.transform.resize`` (anti-aliased, bilinear) when needed, and passed to
    :func:`~datamodules.ct.simulation.simulate` with ``views``, ``teacher_views`` (``None`` = ``2 * views``),
    ``full_views``, ``photons``, ``pixel_size`` (``None`` = :func:`default_pixel_size`) and the noise seed
    ``(seed, slice index)``. Slices must be square (ValueError naming the file and shape). The target is the
    full-view FBP, as in the official code.

    ``setup()`` simulates every slice once and caches the result as ``zoo.files.cache_root()/ct/<key>.safetensors``
    (written atomically), where ``key`` is the sha256 of the source (``"phantoms"``, n and seed; or every file's
    path, size and mtime), the geometry (image_size, the three view counts, photons, pixel_size), the noise
    seed when ``photons`` is set, and a code version. A cache file whose key, tensors or shapes do not match is
    recomputed with a warning. ``cache=False`` neither reads nor writes it.

    Splits are by patient (a phantom is its own patient) with ``split`` fractions drawn by ``seed``
    (:func:`group_split`). Batches are ``{"sparse", "teacher", "full", "image"}``: float32 [B, 1, S, S] and
    ``"index"``: int64 [B] (slice indices; ``names[index]`` is the file or phantom). ``predict_dataloader``
    serves the test split. After ``setup()``: ``split_index`` (split -> int64 indices), ``stats`` (slice and
    patient counts per split), ``names``, ``patients``, ``cache_path`` and ``from_cache``.

    ``ood_phantoms > 0`` adds an out-of-family test set: that many abdomen-like body phantoms
    (:func:`~datamodules.synthetic.phantoms.random_body_phantoms`, other shapes and another HU structure than
    the training heads or slices), simulated with the same geometry, cached on their own and served as a
    second test loader whose batches carry ``"ood"`` (so a model scores them apart); ``ood_images`` after setup.
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
        ood_phantoms: int = 0,
    ) -> None:
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
        if ood_phantoms < 0:
            raise ValueError(f"ood_phantoms must be >= 0, got {ood_phantoms}")
        if batch_size < 1 or num_workers < 0 or seed < 0:
            raise ValueError(
                f"need batch_size >= 1, num_workers >= 0, seed >= 0; got {batch_size}, {num_workers}, {seed}"
            )
        # ``seed`` is the split seed, and also seeds the phantoms and the noise
        super().__init__(root=root, split_seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.format, self.image_size = format, image_size
        self.views, self.teacher_views, self.full_views = views, teacher_views, full_views
        self.photons = None if photons is None else float(photons)
        self.pixel_size = default_pixel_size(image_size) if pixel_size is None else float(pixel_size)
        self.num_phantoms, self.split, self.seed, self.cache = num_phantoms, tuple(split), seed, cache
        self.ood_phantoms = ood_phantoms
        self.images: dict[str, Tensor] = {}
        self.ood_images: dict[str, Tensor] = {}
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

    def cache_key(self, groups: list[tuple[str, list[Path]]] | None = None, ood: bool = False) -> str:
        """The sha256 naming this data's cache file (see the class docstring); ``groups`` as from the file scan;
        ``ood``: the out-of-family test set's."""
        if ood:
            source: dict[str, Any] = {"source": "body-phantoms", "n": self.ood_phantoms, "seed": self.seed}
        elif self.root is None:
            source = {"source": "phantoms", "n": self.num_phantoms, "seed": self.seed}
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

    def _simulate_all(self, groups: list[tuple[str, list[Path]]] | None, ood: bool = False) -> dict[str, Any]:
        """Every slice simulated: {"images": key -> float32 [N, S, S], "patient_of", "names", "patients"}; ``ood``:
        the out-of-family body phantoms (``groups`` is then None)."""
        out: dict[str, list[np.ndarray]] = {k: [] for k in IMAGE_KEYS}
        names, patient_of, patients = [], [], []

        def add(sim: dict[str, np.ndarray], name: str, patient: int) -> None:
            for k in IMAGE_KEYS:
                out[k].append(sim[k])
            names.append(name)
            patient_of.append(patient)

        if groups is None:
            from datamodules.synthetic.phantoms import random_body_phantoms, random_ellipse_phantoms

            make, n = (random_body_phantoms, self.ood_phantoms) if ood else (random_ellipse_phantoms, self.num_phantoms)
            phantoms = make(n, self.image_size, self.seed)
            patients = [f"{'body-' if ood else ''}phantom-{i:05d}" for i in range(len(phantoms))]
            for i, hu in enumerate(phantoms):
                add(self._simulate(hu_to_mu(hu.astype(np.float64)), i), patients[i], i)
        else:
            root = Path(self.root).expanduser()  # type: ignore[arg-type]
            for g, (patient, files) in enumerate(groups):
                patients.append(patient)
                if self.format == "dicom":
                    slices = read_dicom_series(files[0].parent)
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

    def _cached_or_simulated(
        self, groups: list[tuple[str, list[Path]]] | None, ood: bool = False
    ) -> tuple[dict[str, Any], Path, bool]:
        """(data, its cache path, whether it came from the cache): the cache file if valid, else simulated."""
        key = self.cache_key(groups, ood)
        path = cache_root() / "ct" / f"{key}.safetensors"
        data = self._load_cache(path, key) if self.cache else None
        if data is not None:
            return data, path, True
        count = (self.ood_phantoms if ood else self.num_phantoms) if groups is None else sum(len(f) for _, f in groups)
        rank_zero_info(
            f"CTDataModule: simulating {count} {'out-of-family ' if ood else ''}slices ({self.views}/"
            f"{self.teacher_views}/{self.full_views} views at {self.image_size}x{self.image_size})..."
        )
        start = time.perf_counter()
        data = self._simulate_all(groups, ood)
        self.simulate_seconds = time.perf_counter() - start
        if self.cache:
            self._save_cache(path, key, data)
        return data, path, False

    def setup(self, stage: str | None = None) -> None:
        """Load the slices from the cache or simulate them (and cache them), then split; later calls return."""
        if self.images:
            return
        groups = None if self.root is None else self._file_groups()
        data, self.cache_path, self.from_cache = self._cached_or_simulated(groups)
        if self.ood_phantoms:
            self.ood_images = self._cached_or_simulated(None, ood=True)[0]["images"]
        self.images, self.patient_of = data["images"], data["patient_of"]
        self.names, self.patients = data["names"], data["patients"]
        self.split_index = group_split(self.patient_of, self.split, self.seed)
        self.stats = {"slices": len(self.names), "patients": len(self.patients)}
        for s in SPLITS:
            idx = self.split_index[s]
            self.stats[f"{s}_slices"] = int(idx.numel())
            self.stats[f"{s}_patients"] = int(torch.unique(self.patient_of[idx]).numel())
        if self.ood_phantoms:
            self.stats["ood_slices"] = self.ood_phantoms
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
        return self.loader(_Slices(self.images, self.split_index[stage]), shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        """Shuffled train batches (see the class docstring for their keys)."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test split; with ``ood_phantoms``, also the out-of-family set (batches with ``"ood"``)."""
        test = self._loader("test", shuffle=False)
        if not self.ood_phantoms:
            return test
        everything = torch.arange(next(iter(self.ood_images.values())).shape[0])
        return [test, self.loader(_Slices(self.ood_images, everything, ood=True), shuffle=False)]

    def predict_dataloader(self) -> DataLoader:
        """The test split, in index order."""
        return self._loader("test", shuffle=False)


def _size_mtime(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
