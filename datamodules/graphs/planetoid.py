"""Planetoid node classification (Cora, CiteSeer, PubMed), transductive or inductive, with its embedded
contextual-SBM default; the public split and the inductive split of FF-G2M/GLNN."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.utils import remove_self_loops, subgraph, to_undirected

from datamodules.base import BaseDataModule
from datamodules.graphs.raw import RefusedPickle, open_raw_dataset, restricted_pickle_load, restricted_pyg_pickles
from datamodules.synthetic.csbm import contextual_sbm
from zoo.datasets import check_graphs

__all__ = [
    "PlanetoidDataModule",
    "check_node_splits",
    "inductive_split",
    "planetoid_public_split",
    "planetoid_raw_file_names",
]

PLANETOID_RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def planetoid_raw_file_names(name: str) -> list[str]:
    """The raw files ``torch_geometric.datasets.Planetoid`` reads for ``name`` (``ind.cora.x``, ...)."""
    return [f"ind.{name.lower()}.{suffix}" for suffix in PLANETOID_RAW_SUFFIXES]


def planetoid_raw_problem(raw_dir: Path, name: str) -> str | None:
    """The first raw file of ``name`` in ``raw_dir`` that is not what PyG's Planetoid reader expects, and why
    (a truncated pickle, another type, row counts that disagree, a test index past the nodes); None if each
    looks right. Only run after processing failed, to name the file PyG's own error leaves out."""
    import numpy as np
    import scipy.sparse as sp

    prefix, rows, widths = f"ind.{name.lower()}", {}, {}
    for suffix in PLANETOID_RAW_SUFFIXES:
        path = raw_dir / f"{prefix}.{suffix}"
        if suffix == "test.index":
            try:
                index = [int(v) for v in path.read_text().split()]
            except (ValueError, UnicodeDecodeError) as err:
                return f"{path.name} must hold one integer node index per line ({err})"
            if index and min(index) < 0:
                return f"{path.name} holds the negative node index {min(index)}"
            continue
        try:
            with open(path, "rb") as handle:
                obj = restricted_pickle_load(handle, encoding="latin1")
        except RefusedPickle:
            raise
        except Exception as err:  # truncated or not a pickle: the unpickler raises many kinds
            return f"{path.name} is not a complete pickle ({type(err).__name__}: {err or 'no data'})"
        if suffix == "graph":
            if not isinstance(obj, dict):
                return f"{path.name} holds a {type(obj).__name__}, expected a dict of adjacency lists"
            continue
        if not (isinstance(obj, np.ndarray) or sp.issparse(obj)) or len(obj.shape) != 2:
            return f"{path.name} holds a {type(obj).__name__}, expected a 2-D array or sparse matrix"
        rows[suffix], widths[suffix] = obj.shape
    for features, labels in (("x", "y"), ("tx", "ty"), ("allx", "ally")):
        if rows[features] != rows[labels]:
            return f"{prefix}.{features} has {rows[features]} rows but {prefix}.{labels} has {rows[labels]}"
    for a, b in (("x", "tx"), ("x", "allx"), ("y", "ty"), ("y", "ally")):
        if widths[a] != widths[b]:
            return f"{prefix}.{a} has {widths[a]} columns but {prefix}.{b} has {widths[b]}"
    nodes = rows["allx"] + rows["tx"]
    if index and max(index) >= nodes and name.lower() not in ("citeseer", "nell.0.001"):  # PyG pads these two
        return f"{prefix}.test.index holds node index {max(index)}, but allx and tx have {nodes} rows"
    return None


def check_node_splits(masks: Mapping[str, Tensor], num_nodes: int) -> None:
    """Raise ValueError unless every mask is bool [num_nodes], non-empty, and the masks are disjoint.

    Args:
        masks: name -> bool mask [num_nodes], e.g. ``{"train_mask": ..., "val_mask": ..., "test_mask": ...}``.
        num_nodes: N, the number of nodes of the graph the masks index.
    """
    for name, mask in masks.items():
        if mask.dtype != torch.bool or tuple(mask.shape) != (num_nodes,):
            raise ValueError(
                f"{name} must be a bool tensor of shape ({num_nodes},), got {mask.dtype} {tuple(mask.shape)}"
            )
        if not bool(mask.any()):
            counts = ", ".join(f"{n}={int(m.sum())}" for n, m in masks.items())
            raise ValueError(f"{name} is empty (0 of {num_nodes} nodes); split counts: {counts}")
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            overlap = int((masks[a] & masks[b]).sum())
            if overlap:
                raise ValueError(
                    f"{a} and {b} overlap on {overlap} nodes "
                    f"({a}={int(masks[a].sum())}, {b}={int(masks[b].sum())}); splits must be disjoint"
                )


def planetoid_public_split(
    y: Tensor,
    num_classes: int,
    seed: int,
    per_class: int = 20,
    num_val: int = 500,
    num_test: int = 1000,
) -> tuple[Tensor, Tensor, Tensor]:
    """Planetoid "public"-style masks: per class the first ``per_class`` nodes train, then val, then test.

    Nodes are visited in a random order drawn from a generator seeded by ``seed``. When fewer than
    ``num_val + num_test`` nodes remain after the train nodes, val and test are scaled down in proportion.

    Args:
        y: int64 [N] labels in [0, num_classes).
        num_classes: C.
        seed: seed of the node order.

    Returns:
        (train_mask, val_mask, test_mask), bool [N] each; disjoint, and checked by :func:`check_node_splits`.
    """
    n = y.numel()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    y_ordered = y[order]
    # Position of each node among the nodes of its class, in the shuffled order.
    one_hot = torch.nn.functional.one_hot(y_ordered, num_classes)
    rank_in_class = (one_hot.cumsum(0) * one_hot).sum(1) - 1
    is_train = rank_in_class < per_class
    rest = order[~is_train]
    if rest.numel() < num_val + num_test:
        scale = rest.numel() / (num_val + num_test)
        num_val, num_test = int(num_val * scale), int(num_test * scale)
    masks = []
    for idx in (order[is_train], rest[:num_val], rest[num_val : num_val + num_test]):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[idx] = True
        masks.append(mask)
    train_mask, val_mask, test_mask = masks
    check_node_splits({"train_mask": train_mask, "val_mask": val_mask, "test_mask": test_mask}, n)
    return train_mask, val_mask, test_mask


def inductive_split(graph: Data, split_rate: float, seed: int) -> tuple[Data, Data]:
    """Split ``graph`` for the inductive setting, as FF-G2M/GLNN's ``graph_split``.

    A fraction ``split_rate`` of the test nodes (drawn with a generator seeded by ``seed``) becomes
    ``test_ind`` and is removed from the graph seen in training; the other test nodes are ``test_tran``.

    Args:
        graph: the full graph with ``x``, ``y``, ``edge_index`` and bool [N] train/val/test masks.
        split_rate: fraction of the test nodes held out of the observed graph, in (0, 1).
        seed: seed of the test-node shuffle.

    Returns:
        (observed, test_graph). ``observed`` is the subgraph induced by train + val + test_tran, relabelled,
        with masks relative to it (``test_mask`` = test_tran) and ``node_ids`` [N_obs] its original node
        ids (sorted; the official code orders them train, val, test_tran instead). ``test_graph`` is a
        shallow copy of the full graph whose ``test_mask`` is test_ind only.
    """
    if not 0.0 < split_rate < 1.0:
        raise ValueError(f"split_rate must be in (0, 1), got {split_rate}")
    n = graph.num_nodes
    test_idx = graph.test_mask.nonzero().view(-1)
    perm = torch.randperm(test_idx.numel(), generator=torch.Generator().manual_seed(seed))
    num_ind = int(test_idx.numel() * split_rate)
    test_ind_mask = torch.zeros(n, dtype=torch.bool)
    test_ind_mask[test_idx[perm[:num_ind]]] = True
    test_tran_mask = graph.test_mask & ~test_ind_mask

    observed_mask = graph.train_mask | graph.val_mask | test_tran_mask
    node_ids = observed_mask.nonzero().view(-1)
    edge_index, _ = subgraph(node_ids, graph.edge_index, relabel_nodes=True, num_nodes=n)
    observed = Data(
        x=graph.x[node_ids],
        y=graph.y[node_ids],
        edge_index=edge_index,
        train_mask=graph.train_mask[node_ids],
        val_mask=graph.val_mask[node_ids],
        test_mask=test_tran_mask[node_ids],
        node_ids=node_ids,
        num_nodes=node_ids.numel(),
    )
    check_node_splits(
        {"train_mask": observed.train_mask, "val_mask": observed.val_mask, "test_mask": observed.test_mask},
        observed.num_nodes,
    )

    test_graph = copy.copy(graph)  # shares tensors with ``graph``; only test_mask is replaced
    test_graph.test_mask = test_ind_mask
    check_node_splits(
        {"train_mask": test_graph.train_mask, "val_mask": test_graph.val_mask, "test_mask": test_ind_mask}, n
    )
    return observed, test_graph


def _single_graph(batch: Data) -> Data:
    return batch


class PlanetoidDataModule(BaseDataModule):
    """Planetoid node classification (Cora, CiteSeer, PubMed) in the transductive or inductive setting.

    Follows the official FF-G2M code (LirongWu/FF-G2M, ``src/utils.py::graph_split``) and GLNN
    (snap-research/graphless-neural-networks, ``utils.py::graph_split``): self loops are removed and edges
    made undirected; ``setting="tran"`` trains and evaluates on the full graph with the
    public split; ``setting="ind"`` holds a seeded ``split_rate`` fraction of the test nodes (test_ind) out
    of the graph seen in training, so train and val batches are the subgraph induced by train + val +
    test_tran and the test batch is the full graph with ``test_mask`` = test_ind. With ``root=None`` the
    graph is a seeded contextual SBM (:func:`datamodules.synthetic.contextual_sbm`, keyword arguments from
    ``synthetic``) with a Planetoid-public-style split (20 per class train, 500 val, 1000 test, drawn in a
    ``split_seed`` order); with a ``root`` it is ``torch_geometric.datasets.Planetoid(root, name,
    split="public")`` with no transform, copied first into ``zoo.files.cache_root()/data/planetoid`` when
    ``root`` is read-only. Each dataloader yields one ``torch_geometric.data.Data`` per epoch.
    ``num_features`` and ``num_classes`` call ``prepare_data()`` and ``setup()`` themselves when read
    before setup.
    """

    def __init__(
        self,
        root: str | None = None,
        name: str = "Cora",
        setting: Literal["tran", "ind"] = "tran",
        split_rate: float = 0.2,
        split_seed: int = 0,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(root=root, split_seed=split_seed)
        if setting not in ("tran", "ind"):
            raise ValueError(f"setting must be 'tran' or 'ind', got {setting!r}")
        if setting == "ind" and not 0.0 < split_rate < 1.0:
            raise ValueError(f"split_rate must be in (0, 1) for setting='ind', got {split_rate}")
        self.save_hyperparameters()
        self.name = name
        self.setting = setting
        self.split_rate = split_rate
        self.synthetic = dict(synthetic or {})
        self.full_graph: Data | None = None
        self.train_graph: Data | None = None
        self.test_graph: Data | None = None
        self._num_classes: int | None = None

    # ------------------------------------------------------------------ data on disk

    def _load_planetoid(self) -> Data:

        assert self.root is not None
        files = planetoid_raw_file_names(self.name)
        dataset, _ = open_raw_dataset(
            self.root,
            self.name,
            "planetoid",
            files,
            files,
            lambda root: _safe_planetoid(root, self.name),
            f"Planetoid {self.name!r} needs raw files {', '.join(files)}",
            diagnose=lambda raw_dir: planetoid_raw_problem(raw_dir, self.name),
        )
        self._num_classes = int(dataset.num_classes)
        return dataset[0]

    def prepare_data(self) -> None:
        """Copy and/or download and process the real dataset once (rank zero); nothing for ``root=None``."""
        if self.root is not None:
            self._load_planetoid()

    # ------------------------------------------------------------------ graphs

    def setup(self, stage: str | None = None) -> None:
        """Build the full, observed and test graphs once; later calls return at once."""
        if self.full_graph is not None:
            return
        if self.root is None:
            graph = contextual_sbm(**self.synthetic)
            num_classes = int(graph.y.max()) + 1  # labels are balanced, so every class occurs
            graph.train_mask, graph.val_mask, graph.test_mask = planetoid_public_split(
                graph.y, num_classes, self.split_seed
            )
        else:
            loaded = self._load_planetoid()
            num_classes = self._num_classes
            graph = Data(
                x=loaded.x,
                y=loaded.y,
                edge_index=loaded.edge_index,
                train_mask=loaded.train_mask,
                val_mask=loaded.val_mask,
                test_mask=loaded.test_mask,
                num_nodes=loaded.num_nodes,
            )
        check_graphs([graph], f"Planetoid {self.name if self.root is not None else 'embedded default'}")
        edge_index, _ = remove_self_loops(graph.edge_index)
        graph.edge_index = to_undirected(edge_index, num_nodes=graph.num_nodes)
        graph.node_ids = torch.arange(graph.num_nodes)
        check_node_splits(
            {"train_mask": graph.train_mask, "val_mask": graph.val_mask, "test_mask": graph.test_mask},
            graph.num_nodes,
        )

        if self.setting == "ind":
            train_graph, test_graph = inductive_split(graph, self.split_rate, self.split_seed)
        else:
            train_graph = test_graph = graph
        self._num_classes = num_classes
        self.train_graph, self.test_graph = train_graph, test_graph
        self.full_graph = graph

    @property
    def num_features(self) -> int:
        """F, node feature width (sets the data up on first use)."""
        if self.full_graph is None:
            self.prepare_data()
            self.setup()
        assert self.full_graph is not None
        return int(self.full_graph.num_features)

    @property
    def num_classes(self) -> int:
        """C, number of classes (sets the data up on first use)."""
        if self._num_classes is None or self.full_graph is None:
            self.prepare_data()
            self.setup()
        assert self._num_classes is not None
        return self._num_classes

    # ------------------------------------------------------------------ loaders

    def _loader(self, which: str) -> DataLoader:
        if self.full_graph is None:
            self.prepare_data()
            self.setup()
        graph = {"train": self.train_graph, "val": self.train_graph, "test": self.test_graph}.get(
            which, self.full_graph
        )
        return self.loader([graph], batch_size=None, collate_fn=_single_graph)

    def train_dataloader(self) -> DataLoader:
        """One batch: the full graph ("tran") or the observed graph without test_ind nodes ("ind")."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """One batch: the same graph as training; ``val_mask`` selects the nodes scored."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """One batch: the full graph; ``test_mask`` is the public test set ("tran") or test_ind ("ind")."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """One batch: the full graph with its original masks."""
        return self._loader("predict")


def _safe_planetoid(root: str, name: str) -> Any:
    """PyG's ``Planetoid`` on a cache folder of ours, its raw pickles read by the restricted unpickler."""
    from torch_geometric.datasets import Planetoid

    with restricted_pyg_pickles():
        return Planetoid(root, name, split="public")
