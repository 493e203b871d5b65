"""The shared base of the project's LightningDataModules: ``root`` (``None`` = the embedded generated default),
the split seed, the batch size and workers, and the one loader builder every datamodule's loaders go through.
Splits themselves are in :mod:`datamodules.splits`."""

from __future__ import annotations

import os
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["DATA_ENV", "BaseDataModule", "resolve_root"]

DATA_ENV = "DISTILLZOO_DATA"  # the folder that ``data:NAME`` roots live in (``cli.py --data-root`` sets it)
DATA_SCHEME = "data:"


def resolve_root(root: str | None) -> str | None:
    """A datamodule root as a path: ``data:NAME`` is ``$DISTILLZOO_DATA/NAME``, so recipes and metafiles
    name a dataset folder without one machine's layout; any other string is a path as given."""
    if root is None or not str(root).startswith(DATA_SCHEME):
        return root
    name = str(root)[len(DATA_SCHEME) :]
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"data root {root!r}: expected data:NAME with NAME a folder inside ${DATA_ENV}")
    base = os.environ.get(DATA_ENV)
    if not base:
        raise ValueError(
            f"data root {root!r} lies in the data folder, but ${DATA_ENV} is not set: set it to the folder that "
            f"holds {name}/ or pass --data-root DIR to cli.py (or give the dataset's path as root)"
        )
    return str(Path(base).expanduser() / name)


class BaseDataModule(L.LightningDataModule):
    """A LightningDataModule with the project's common parameters and one way to build loaders.

    ``root`` is where the real dataset lies on disk in its standard format (``data:NAME`` for a folder in
    ``$DISTILLZOO_DATA``, :func:`resolve_root`, resolved when it is read, so a recipe builds without it);
    ``None`` means the embedded
    default, generated on the fly by :mod:`datamodules.synthetic` (seeded, small, no download). ``split_seed``
    fixes the train/val/test split only, independently of the run's seed, so held-out data stay held out
    whatever ``seed_everything`` says. ``batch_size`` and ``num_workers`` are the loaders' defaults.
    Subclasses keep their own constructor signatures (some call the split seed ``seed``) and pass these on.
    The loader builder plays the part of TorchGeo's ``BaseDataModule._dataloader_factory``: one place that
    decides batching, workers and shuffling.
    """

    def __init__(self, root: str | None = None, split_seed: int = 0, batch_size: int = 1, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self._root = root
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.num_workers = num_workers

    @property
    def root(self) -> str | None:
        return resolve_root(self._root)

    def _shuffle_generator(self) -> torch.Generator:
        """A shuffled loader's generator, seeded by the run's seed, or set to the state a checkpoint holds for
        the loader built in the same order (a resumed fit builds its loaders in the order the first one did)."""
        generator = torch.Generator().manual_seed(torch.initial_seed())
        made = self.__dict__.setdefault("_shuffle_generators", [])
        resumed = self.__dict__.get("_resumed_generators", [])
        if len(made) < len(resumed):
            generator.set_state(resumed[len(made)])
        made.append(generator)
        return generator

    def state_dict(self) -> dict[str, Any]:
        """The states of the shuffled loaders' generators (Lightning keeps them in every checkpoint)."""
        return {"shuffle_generators": [g.get_state() for g in self.__dict__.get("_shuffle_generators", [])]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take a checkpoint's generator states, for the shuffled loaders this datamodule builds next."""
        self.__dict__["_resumed_generators"] = list(state_dict.get("shuffle_generators", []))
        self.__dict__["_shuffle_generators"] = []

    @root.setter
    def root(self, value: str | None) -> None:
        self._root = value

    def loader(
        self,
        dataset: Dataset | list[Any],
        *,
        shuffle: bool = False,
        batch_size: int | None | EllipsisType = ...,
        sampler: Sampler | None = None,
        collate_fn: Any = None,
        shuffle_rng: Literal["run", "global"] = "run",
        loader_class: type[DataLoader] = DataLoader,
    ) -> DataLoader:
        """The one loader builder: ``loader_class(dataset, ...)`` with this datamodule's workers.

        Args:
            dataset: a map-style dataset (or a list, e.g. of PyG ``Data``).
            shuffle: shuffle every epoch (training loaders).
            batch_size: ``...`` = ``self.batch_size``; an int; or ``None`` for no batching (each item a batch).
            sampler: a sampler yielding the indices (then ``shuffle`` must be False).
            collate_fn: how to make a batch; ``None`` = the loader class's own.
            shuffle_rng: where a shuffled order comes from. ``"run"``: a generator seeded by
                ``torch.initial_seed()``, i.e. the run's seed (``seed_everything``), so the order repeats
                for one seed and differs across seeds whatever else drew random numbers before. ``"global"``:
                torch's global RNG at the time the epoch starts (the loaders of the published graph
                entries were trained that way, so their evidence stays reproducible).
            loader_class: ``torch.utils.data.DataLoader`` or a subclass (``torch_geometric.loader.DataLoader``).

        Workers are ``self.num_workers``, persistent when there are any. A ``"run"`` generator advances every
        epoch; its state is part of the datamodule's checkpoint state (:meth:`state_dict`), so a fit resumed
        from a checkpoint shuffles its next epochs as the uninterrupted fit would. A ``"global"`` order comes
        from the global generator, which ``modules.core.callbacks.ResumableRandomState`` restores only when
        training starts, after a resumed fit has made its first iterator: such a fit does not resume exactly.
        """
        if shuffle_rng not in ("run", "global"):
            raise ValueError(f"shuffle_rng must be 'run' or 'global', got {shuffle_rng!r}")
        if sampler is not None and shuffle:
            raise ValueError("give either a sampler or shuffle=True, not both")
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size if batch_size is ... else batch_size,
            "shuffle": shuffle,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
        }
        if shuffle and shuffle_rng == "run":
            kwargs["generator"] = self._shuffle_generator()
        if sampler is not None:
            kwargs["sampler"] = sampler
        if collate_fn is not None:
            kwargs["collate_fn"] = collate_fn
        return loader_class(dataset, **kwargs)
