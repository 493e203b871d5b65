"""A TU dataset whose training set is a distilled graph set (Mirage), handed in as data: loaded from the zoo,
or made by a miner the recipe builds (the datamodule never imports a method)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch_geometric.data import Data

from datamodules.graphs.tu import TUDataModule
from zoo.datasets import tensor_bytes

__all__ = ["GraphDistiller", "MirageDataModule", "random_subset"]

# A graph-set distiller: the training graphs in, the distilled samples out (e.g. modules.mirage_mining.MirageMiner).
GraphDistiller = Callable[[list[Data]], list[Data]]

MINING_PARAMETERS = ("depth", "support", "drop_shared", "min_tree_count", "max_len")
MINER_HOWTO = (
    "give the recipe a miner: data.init_args.miner: {class_path: modules.mirage_mining.MirageMiner, "
    "init_args: {depth: 2, support: 0.1}} (on the command line: --data.init_args.miner="
    "modules.mirage_mining.MirageMiner --data.init_args.miner.init_args.support=0.1)"
)


class MirageDataModule(TUDataModule):
    """A TU dataset whose training set is Mirage's distilled set; val and test stay the original graphs.

    ``train_on="mirage"``: the distilled samples, loaded from the zoo (``distilled="zoo:NAME"``) or made from
    the training split by ``miner``, any callable ``list[Data] -> list[Data]`` (the recipe builds it, e.g.
    ``modules.mirage_mining.MirageMiner`` with ``depth``/``support``/... as its ``init_args``; it runs once).
    ``"full"``: every training graph. ``"random"``: training graphs drawn at random (``subset_seed``, by
    default the run's seed) until their tensors reach the distilled set's bytes (or ``budget_bytes``), the
    equal-budget baseline. ``stats`` reports the bytes used, the full training set's bytes and the miner's own
    ``stats`` (Mirage's mining times) when it has any. Follows idea-iitd/Mirage ``ogbg-molhiv/mine_trees.py``
    and ``NCI1/graph-nci-finalize-reduce-curr.py``.

    The mining parameters ``depth``, ``support``, ``drop_shared``, ``min_tree_count`` and ``max_len`` of
    earlier versions now belong to the miner; giving one here raises ValueError saying how to pass the miner.
    """

    def __init__(
        self,
        root: str | None = None,
        name: str = "MUTAG",
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 32,
        max_degree: int | None = None,
        synthetic: dict[str, Any] | None = None,
        train_on: Literal["mirage", "full", "random"] = "mirage",
        distilled: str | None = None,
        depth: int | None = None,
        support: float | dict[int, int] | None = None,
        drop_shared: bool | None = None,
        min_tree_count: int | None = None,
        max_len: int | None = None,
        subset_seed: int | None = None,
        budget_bytes: int | None = None,
        miner: Callable[[list[Data]], list[Data]] | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            root, name, split_seed, val_fraction, test_fraction, batch_size, max_degree, synthetic, num_workers
        )
        self.save_hyperparameters(ignore=["miner"])  # a miner is an object, not plain data
        if train_on not in ("mirage", "full", "random"):
            raise ValueError(f"train_on must be 'mirage', 'full' or 'random', got {train_on!r}")
        mining = zip(MINING_PARAMETERS, (depth, support, drop_shared, min_tree_count, max_len))
        given = ", ".join(f"{k}={v!r}" for k, v in mining if v is not None)
        if given:
            raise ValueError(
                f"MirageDataModule takes no mining parameters ({given} given): they are the miner's, since a "
                f"datamodule never imports a method; {MINER_HOWTO}"
            )
        if miner is not None and not callable(miner):
            raise TypeError(f"miner must be a callable list[Data] -> list[Data], got {type(miner).__name__}")
        needs_distilled = train_on == "mirage" or (train_on == "random" and budget_bytes is None)
        if needs_distilled and distilled is None and miner is None:
            raise ValueError(
                f"train_on={train_on!r} needs the distilled set: pass distilled='zoo:NAME', or {MINER_HOWTO}"
            )
        self.train_on = train_on
        self.distilled = distilled
        self.miner = miner
        self.subset_seed = subset_seed
        self.budget_bytes = budget_bytes
        self.mined: list[Data] | None = None
        self.mining_seconds: float | None = None
        self.stats: dict[str, Any] = {}

    def distilled_graphs(self) -> list[Data]:
        """The distilled samples: from the zoo entry, else made by ``miner`` from the training split (once)."""
        if self.distilled is not None:
            import zoo

            graphs = list(zoo.load(self.distilled))
            width = int(graphs[0].x.size(-1))
            if width != self.num_features:
                raise ValueError(
                    f"distilled set {self.distilled} has {width} node labels but {self.name} has {self.num_features}"
                )
            return graphs
        if self.mined is None:
            assert self.miner is not None and self.train_set is not None
            tic = time.perf_counter()
            self.mined = list(self.miner(list(self.train_set)))
            self.mining_seconds = time.perf_counter() - tic
            if not self.mined:
                raise ValueError(f"the miner {type(self.miner).__name__} returned no samples")
            rank_zero_info(
                f"{type(self.miner).__name__} distilled {len(self.train_set)} training graphs into "
                f"{len(self.mined)} samples in {self.mining_seconds:.2f} s"
            )
        return list(self.mined)

    def setup(self, stage: str | None = None) -> None:
        if self.stats:
            return
        super().setup(stage)
        full = list(self.train_set)
        if self.train_on == "mirage":
            self.train_set = self.distilled_graphs()
        elif self.train_on == "random":
            budget = self.budget_bytes or tensor_bytes(self.distilled_graphs())
            # Without an explicit subset_seed each run draws its own subset (seed_everything's seed).
            seed = torch.initial_seed() if self.subset_seed is None else self.subset_seed
            self.train_set = random_subset(full, budget, seed)
        self.stats = {
            "train_graphs": len(self.train_set),
            "train_bytes": tensor_bytes(self.train_set),
            "full_train_bytes": tensor_bytes(full),
        }
        self.stats["compression"] = self.stats["train_bytes"] / self.stats["full_train_bytes"]
        miner_stats = getattr(self.miner, "stats", None) if self.mined is not None else None
        if isinstance(miner_stats, Mapping):
            self.stats.update(miner_stats)


def random_subset(graphs: list[Data], budget_bytes: int, seed: int) -> list[Data]:
    """Graphs in a seeded random order until their tensor bytes reach ``budget_bytes``, with at least one
    graph per class (the equal-budget random baseline)."""
    order = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, used, classes = [], 0, set()
    all_classes = {int(g.y.view(-1)[0]) for g in graphs}
    for i in order:
        if used >= budget_bytes and classes == all_classes:
            break
        label = int(graphs[i].y.view(-1)[0])
        if used >= budget_bytes and label in classes:
            continue
        chosen.append(graphs[i])
        used += tensor_bytes([graphs[i]])
        classes.add(label)
    return chosen
