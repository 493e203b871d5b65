"""Graph datamodules: Planetoid node classification and TU graph classification, with their embedded synthetic
defaults."""

from __future__ import annotations

import copy
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader as GraphDataLoader
from torch_geometric.utils import remove_self_loops, subgraph, to_undirected

from datamodules.synthetic.csbm import contextual_sbm
from datamodules.synthetic.motifs import planted_motif_graphs

__all__ = [
    "PlanetoidDataModule",
    "TUDataModule",
    "categorical_edge_labels",
    "categorical_node_labels",
    "check_node_splits",
    "degree_one_hot",
    "inductive_split",
    "node_degrees",
    "planetoid_public_split",
    "planetoid_raw_file_names",
    "stratified_graph_split",
    "tu_raw_file_names",
]

PLANETOID_RAW_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")


def planetoid_raw_file_names(name: str) -> list[str]:
    """The raw files ``torch_geometric.datasets.Planetoid`` reads for ``name`` (``ind.cora.x``, ...)."""
    return [f"ind.{name.lower()}.{suffix}" for suffix in PLANETOID_RAW_SUFFIXES]


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


def _is_writable_dir(path: Path) -> bool:
    """Whether files can be created under ``path`` (or its nearest existing ancestor).

    A directory with no write bit counts as read-only even for root, who would otherwise bypass it:
    a data copy marked read-only must not get a ``processed/`` folder written into it.
    """
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    if not path.is_dir():
        return False
    return os.access(path, os.W_OK | os.X_OK) and bool(stat.S_IMODE(path.stat().st_mode) & 0o222)


def distillzoo_cache_dir() -> Path:
    """``$DISTILLZOO_CACHE``, else ``~/.cache/distillzoo``."""
    return Path(os.environ.get("DISTILLZOO_CACHE", "~/.cache/distillzoo")).expanduser()


def _writable_dataset_root(root: Path, name: str, family: str, files: Sequence[str]) -> Path:
    """The root to hand a PyG dataset class: ``root`` when ``root/name`` is writable, else the cache.

    When ``root/name`` is read-only, the ``files`` of ``root/name/raw`` that exist there and are not yet in
    ``$DISTILLZOO_CACHE/data/<family>/<name>/raw`` are copied there, each to a temporary name and then
    renamed, so a concurrent reader never sees half a file; PyG then writes ``processed/`` beside the copy.

    Args:
        root: the dataset root the user gave (``<root>/<name>/raw`` holds the raw files).
        name: the dataset name, the folder under ``root``.
        family: the cache folder of the dataset family, e.g. ``"planetoid"`` or ``"tu"``.
        files: the raw file names to copy.

    Returns:
        ``root``, or ``$DISTILLZOO_CACHE/data/<family>``.
    """
    if _is_writable_dir(root / name):
        return root
    cache_root = distillzoo_cache_dir() / "data" / family
    src, dst = root / name / "raw", cache_root / name / "raw"
    missing = [f for f in files if not (dst / f).is_file() and (src / f).is_file()]
    if missing:
        dst.mkdir(parents=True, exist_ok=True)
    for file in missing:
        fd, tmp = tempfile.mkstemp(dir=dst, prefix=f".{file}.")
        os.close(fd)
        try:
            shutil.copyfile(src / file, tmp)
            os.replace(tmp, dst / file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return cache_root


_ANNOUNCED_COPIES: set[tuple[Path, str]] = set()


def _open_raw_dataset(
    root: str,
    name: str,
    family: str,
    copy_files: Sequence[str],
    needed_files: Sequence[str],
    open_dataset: Callable[[str], Any],
    what: str,
    checked_files: Sequence[str] | None = None,
) -> tuple[Any, Path]:
    """Open a PyG dataset from ``root/name/raw`` through :func:`_writable_dataset_root`.

    ``open_dataset(dataset_root)`` builds the PyG dataset (it downloads when the raw files are absent
    and the user has network). If the ``checked_files`` (default: ``needed_files``) were not all there
    and opening fails, the error becomes a FileNotFoundError naming ``what``, the missing ``needed_files``
    and where they were looked for.

    Returns:
        (the dataset, its raw folder).
    """
    given = Path(root).expanduser()
    dataset_root = _writable_dataset_root(given, name, family, copy_files)
    raw_dir = dataset_root / name / "raw"
    if dataset_root != given and (given, name) not in _ANNOUNCED_COPIES:
        rank_zero_info(f"{given / name} is read-only; loading {name} from the copy in {raw_dir}")
        _ANNOUNCED_COPIES.add((given, name))
    had_raw = all((raw_dir / f).is_file() for f in (needed_files if checked_files is None else checked_files))
    try:
        return open_dataset(str(dataset_root)), raw_dir
    except Exception as err:
        if had_raw:
            raise
        missing = [f for f in needed_files if not (raw_dir / f).is_file()]
        source = given / name / "raw"
        where = str(raw_dir) if source == raw_dir else f"{raw_dir} (or the read-only {source})"
        raise FileNotFoundError(
            f"{what} in {where}; missing {', '.join(missing)}, and downloading them failed "
            f"({type(err).__name__}: {err})"
        ) from err


class PlanetoidDataModule(lightning.LightningDataModule):
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
    split="public")`` with no transform, copied first into ``$DISTILLZOO_CACHE/data/planetoid`` when
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
        super().__init__()
        if setting not in ("tran", "ind"):
            raise ValueError(f"setting must be 'tran' or 'ind', got {setting!r}")
        if setting == "ind" and not 0.0 < split_rate < 1.0:
            raise ValueError(f"split_rate must be in (0, 1) for setting='ind', got {split_rate}")
        self.save_hyperparameters()
        self.root = root
        self.name = name
        self.setting = setting
        self.split_rate = split_rate
        self.split_seed = split_seed
        self.synthetic = dict(synthetic or {})
        self.full_graph: Data | None = None
        self.train_graph: Data | None = None
        self.test_graph: Data | None = None
        self._num_classes: int | None = None

    # ------------------------------------------------------------------ data on disk

    def _load_planetoid(self) -> Data:
        from torch_geometric.datasets import Planetoid

        assert self.root is not None
        files = planetoid_raw_file_names(self.name)
        dataset, _ = _open_raw_dataset(
            self.root,
            self.name,
            "planetoid",
            files,
            files,
            lambda root: Planetoid(root, self.name, split="public"),
            f"Planetoid {self.name!r} needs raw files {', '.join(files)}",
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
        return DataLoader([graph], batch_size=None, shuffle=False, collate_fn=_single_graph)

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


# ====================================================================== graph classification (TU)

TU_REQUIRED_SUFFIXES = ("A", "graph_indicator", "graph_labels")


def tu_raw_file_names(name: str) -> list[str]:
    """The raw files a TU graph-classification set needs (``MUTAG_A.txt``, ...); labels files are optional."""
    return [f"{name}_{suffix}.txt" for suffix in TU_REQUIRED_SUFFIXES]


def _one_hot_labels(values: Tensor, what: str, name: str | None) -> Tensor:
    """``values.argmax(-1)`` after checking every row is one-hot: exactly one 1, the rest 0."""
    where = f" in {name}" if name else ""
    if values.dim() != 2 or values.size(-1) == 0:
        raise ValueError(
            f"{what} features{where} must be a 2-D one-hot matrix of categorical labels, "
            f"got shape {tuple(values.shape)}"
        )
    if values.size(0) == 0:
        return torch.zeros(0, dtype=torch.long, device=values.device)
    is_one = values == 1
    bad = ~(((values == 0) | is_one).all(-1) & (is_one.sum(-1) == 1))
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        shown = values[row, :8].tolist()
        more = ", ..." if values.size(-1) > 8 else ""
        raise ValueError(
            f"{what} features are continuous, Mirage needs categorical labels (one-hot rows: exactly one 1, rest 0)"
            f"{where}: {int(bad.sum())} of {values.size(0)} rows are not one-hot, first row {row} = "
            f"{', '.join(f'{v:g}' for v in shown)}{more}"
        )
    return values.argmax(-1)


def categorical_node_labels(data: Data, name: str | None = None) -> Tensor:
    """The categorical node labels of a graph whose ``x`` is one-hot, as TUDataset builds it from node labels.

    Args:
        data: a graph with ``x`` [n, L], each row exactly one 1 and the rest 0.
        name: how to name the graph in errors, e.g. ``"MUTAG graph 17"``.

    Returns:
        int64 [n], ``x.argmax(-1)``.

    Raises:
        ValueError: naming the graph, when ``x`` is missing or a row is not one-hot (continuous features).
    """
    if data.x is None:
        raise ValueError(f"node features of {name or 'the graph'} are missing; Mirage needs categorical node labels")
    return _one_hot_labels(data.x, "node", name)


def categorical_edge_labels(data: Data, name: str | None = None) -> Tensor:
    """The categorical edge labels of a graph: argmax of one-hot ``edge_attr``, or zeros without ``edge_attr``.

    Args:
        data: a graph with ``edge_index`` [2, E] and optionally ``edge_attr`` [E, K], each row one-hot.
        name: how to name the graph in errors.

    Returns:
        int64 [E].

    Raises:
        ValueError: naming the graph, when ``edge_attr`` has a row count other than E or a row is not one-hot.
    """
    num_edges = data.edge_index.size(1)
    edge_attr = data.get("edge_attr")
    if edge_attr is None:
        return torch.zeros(num_edges, dtype=torch.long, device=data.edge_index.device)
    if edge_attr.dim() == 1:
        edge_attr = edge_attr.unsqueeze(-1)
    if edge_attr.size(0) != num_edges:
        where = f" of {name}" if name else ""
        raise ValueError(f"edge_attr{where} has {edge_attr.size(0)} rows but edge_index has {num_edges} edges")
    return _one_hot_labels(edge_attr, "edge", name)


def node_degrees(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Int64 [num_nodes], the out-degree in ``edge_index`` (the degree, for an edge list holding both directions)."""
    return torch.bincount(edge_index[0], minlength=num_nodes)[:num_nodes]


def degree_one_hot(degrees: Tensor, max_degree: int) -> Tensor:
    """Float32 [n, max_degree + 1], the one-hot of ``min(degree, max_degree)`` for int64 ``degrees`` [n]."""
    return torch.nn.functional.one_hot(degrees.clamp(max=max_degree), max_degree + 1).float()


def stratified_graph_split(
    y: Tensor, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded stratified split of graphs: per class, shuffled, first the test graphs, then val, then train.

    For each class (in label order) the indices of its ``n_c`` graphs are permuted with one generator seeded by
    ``seed``; the first ``round(test_fraction * n_c)`` are test, the next ``round(val_fraction * n_c)`` val, the
    rest train (halves round up). So every split holds each class in proportion, within one graph.

    Args:
        y: int64 [G], graph labels (any integers; each distinct value is a class).
        val_fraction: fraction of each class in val, in [0, 1).
        test_fraction: fraction of each class in test, in [0, 1), with ``val_fraction + test_fraction < 1``.
        seed: seed of the shuffle.

    Returns:
        (train_idx, val_idx, test_idx), int64 sorted indices into ``y``, disjoint and covering ``[0, G)``.
    """
    for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{what} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training graphs, got {val_fraction} + {test_fraction}"
        )
    y = y.view(-1).cpu()
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[Tensor]] = {"train": [], "val": [], "test": []}
    for c in torch.unique(y).tolist():
        members = (y == c).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_test = math.floor(test_fraction * members.numel() + 0.5)
        n_val = math.floor(val_fraction * members.numel() + 0.5)
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    split = {k: torch.cat(v).sort().values if v else torch.zeros(0, dtype=torch.long) for k, v in parts.items()}
    sizes = ", ".join(f"{k}={v.numel()}" for k, v in split.items())
    for k, fraction in (("train", 1.0), ("val", val_fraction), ("test", test_fraction)):
        if fraction > 0 and split[k].numel() == 0:
            raise ValueError(f"the {k} split is empty ({sizes} of {y.numel()} graphs); use more graphs or fractions")
    return split["train"], split["val"], split["test"]


class TUDataModule(lightning.LightningDataModule):
    """TU graph classification with categorical node labels (MUTAG, NCI1, IMDB-BINARY, ...), as Mirage needs.

    Follows the official Mirage code (idea-iitd/Mirage, ``NCI1/graph-nci-finalize-reduce-curr.py`` and
    ``IMDB-B/graph-TUD_finalize-curr.py``): ``x`` is the one-hot of the categorical node labels as
    ``torch_geometric.datasets.TUDataset(root, name)`` builds it (``use_node_attr=False``), ``edge_attr`` the
    one-hot edge labels where the set has them, and every graph is checked to have one-hot rows
    (:func:`categorical_node_labels`). Sets without node labels (IMDB-BINARY) get categorical degree labels, as
    the official IMDB script uses the degree as node label: ``x`` is the one-hot of ``min(degree, max_degree)``,
    ``max_degree + 1`` wide, where ``max_degree`` defaults to the largest degree over the whole dataset so that
    train, val and test share one width (the official script instead numbers the distinct degrees it sees;
    ``max_degree`` is ignored for sets with node labels). The official scripts shuffle with seed 0 and take
    test = first 10%, val = next 10%, train = rest; here the split is stratified (:func:`stratified_graph_split`,
    per class ``test_fraction`` test, ``val_fraction`` val, rest train, seeded by ``split_seed``). With a
    ``root``, ``root/name/raw`` is copied first into ``$DISTILLZOO_CACHE/data/tu/name/raw`` when ``root`` is
    read-only; with ``root=None`` the graphs are seeded planted-motif graphs
    (:func:`datamodules.synthetic.planted_motif_graphs`, keyword arguments from ``synthetic``). Dataloaders are
    ``torch_geometric.loader.DataLoader`` over ``train_set``/``val_set``/``test_set`` (lists of ``Data``) with
    ``batch_size``, shuffled (by a generator seeded by ``split_seed``) for training only. ``num_features``,
    ``num_classes`` and ``num_edge_labels`` call ``prepare_data()`` and ``setup()`` themselves when read
    before setup.
    """

    def __init__(
        self,
        root: str | None = None,
        name: str = "MUTAG",
        split_seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 128,
        max_degree: int | None = None,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_degree is not None and max_degree < 0:
            raise ValueError(f"max_degree must be >= 0 or None, got {max_degree}")
        self.save_hyperparameters()
        self.root = root
        self.name = name
        self.split_seed = split_seed
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.batch_size = batch_size
        self.max_degree = max_degree
        self.synthetic = dict(synthetic or {})
        self.graphs: list[Data] | None = None
        self.train_set: list[Data] | None = None
        self.val_set: list[Data] | None = None
        self.test_set: list[Data] | None = None
        self.split_indices: dict[str, Tensor] = {}
        self.degree_labels = False  # whether x holds one-hot degrees (the set has no node labels)
        self._num_classes: int | None = None

    # ------------------------------------------------------------------ data on disk

    def _load_tu(self) -> Any:
        from torch_geometric.datasets import TUDataset

        assert self.root is not None
        src = Path(self.root).expanduser() / self.name / "raw"
        present = sorted(p.name for p in src.iterdir() if p.is_file()) if src.is_dir() else []
        files = tu_raw_file_names(self.name)
        dataset, raw_dir = _open_raw_dataset(
            self.root,
            self.name,
            "tu",
            present,
            files,
            lambda root: TUDataset(root, self.name, use_node_attr=False),
            f"TU dataset {self.name!r} needs raw files {', '.join(files)} (and {self.name}_node_labels.txt "
            "where it has node labels)",
            checked_files=files[:2],  # what TUDataset checks before downloading
        )
        if dataset._data.y is None:
            raise FileNotFoundError(
                f"TU dataset {self.name!r} has no graph labels: {raw_dir / files[2]} is missing, and graph "
                "classification needs it"
            )
        return dataset

    def prepare_data(self) -> None:
        """Copy and/or download and process the real dataset once (rank zero); nothing for ``root=None``."""
        if self.root is not None:
            self._load_tu()

    # ------------------------------------------------------------------ graphs

    def _read_graphs(self) -> list[Data]:
        if self.root is None:
            return planted_motif_graphs(**self.synthetic)
        dataset = self._load_tu()
        graphs = [dataset[i] for i in range(len(dataset))]
        if dataset._data.x is None or dataset._data.x.size(-1) == 0:
            self.degree_labels = True
            degrees = [node_degrees(g.edge_index, g.num_nodes) for g in graphs]
            seen = max((int(d.max()) for d in degrees if d.numel()), default=0)
            max_degree = seen if self.max_degree is None else self.max_degree
            for g, d in zip(graphs, degrees):
                g.x = degree_one_hot(d, max_degree)
        return graphs

    def setup(self, stage: str | None = None) -> None:
        """Read, check and split the graphs once; later calls return at once."""
        if self.graphs is not None:
            return
        graphs = self._read_graphs()
        label = self.name if self.root is not None else "planted-motif"
        for i, g in enumerate(graphs):
            categorical_node_labels(g, name=f"{label} graph {i}")
            categorical_edge_labels(g, name=f"{label} graph {i}")
        widths = {int(g.x.size(-1)) for g in graphs}
        if len(widths) != 1:
            raise ValueError(f"{label} graphs have node label widths {sorted(widths)}; they must share one width")
        y = torch.cat([g.y.view(-1)[:1] for g in graphs])
        train_idx, val_idx, test_idx = stratified_graph_split(y, self.val_fraction, self.test_fraction, self.split_seed)
        self.split_indices = {"train": train_idx, "val": val_idx, "test": test_idx}
        self.train_set = [graphs[i] for i in train_idx.tolist()]
        self.val_set = [graphs[i] for i in val_idx.tolist()]
        self.test_set = [graphs[i] for i in test_idx.tolist()]
        self._num_classes = int(y.max()) + 1
        self.graphs = graphs

    def _ensure_setup(self) -> list[Data]:
        if self.graphs is None:
            self.prepare_data()
            self.setup()
        assert self.graphs is not None
        return self.graphs

    @property
    def num_features(self) -> int:
        """L, width of the one-hot node labels (sets the data up on first use)."""
        return int(self._ensure_setup()[0].x.size(-1))

    @property
    def num_classes(self) -> int:
        """C, number of graph classes (sets the data up on first use)."""
        self._ensure_setup()
        assert self._num_classes is not None
        return self._num_classes

    @property
    def num_edge_labels(self) -> int:
        """K, width of the one-hot edge labels, 0 when the set has none (sets the data up on first use)."""
        edge_attr = self._ensure_setup()[0].get("edge_attr")
        return 0 if edge_attr is None else int(edge_attr.view(edge_attr.size(0), -1).size(-1))

    # ------------------------------------------------------------------ loaders

    def train_dataloader(self) -> GraphDataLoader:
        """Shuffled mini-batches of training graphs; the order follows the run's seed (``seed_everything``),
        so repeated runs with different seeds see different orders."""
        self._ensure_setup()
        return GraphDataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> GraphDataLoader:
        """Mini-batches of validation graphs, in index order."""
        self._ensure_setup()
        return GraphDataLoader(self.val_set, batch_size=self.batch_size, shuffle=False)

    def test_dataloader(self) -> GraphDataLoader:
        """Mini-batches of test graphs, in index order."""
        self._ensure_setup()
        return GraphDataLoader(self.test_set, batch_size=self.batch_size, shuffle=False)


class MirageDataModule(TUDataModule):
    """A TU dataset whose training set is Mirage's distilled set; val and test stay the original graphs.

    ``train_on="mirage"``: the distilled samples, loaded from the zoo (``distilled="zoo:NAME"``) or
    mined on the fly from the training split with :func:`modules.mirage_mining.mine` (``depth``,
    ``support``, ``drop_shared``, ``min_tree_count``, ``max_len``). ``"full"``: every training graph.
    ``"random"``: training graphs drawn at random (``subset_seed``, by default the run's seed) until
    their tensors reach the distilled set's bytes (or ``budget_bytes``), the equal-budget baseline. ``stats``
    reports the bytes used, the full training set's bytes, and the mining times. Follows
    idea-iitd/Mirage ``ogbg-molhiv/mine_trees.py`` and ``NCI1/graph-nci-finalize-reduce-curr.py``.
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
        depth: int = 2,
        support: float | dict[int, int] = 0.1,
        drop_shared: bool = False,
        min_tree_count: int = 0,
        max_len: int | None = None,
        subset_seed: int | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        super().__init__(root, name, split_seed, val_fraction, test_fraction, batch_size, max_degree, synthetic)
        if train_on not in ("mirage", "full", "random"):
            raise ValueError(f"train_on must be 'mirage', 'full' or 'random', got {train_on!r}")
        self.train_on = train_on
        self.distilled = distilled
        self.mining_args = dict(
            depth=depth, support=support, drop_shared=drop_shared, min_tree_count=min_tree_count, max_len=max_len
        )
        self.subset_seed = subset_seed
        self.budget_bytes = budget_bytes
        self.mining = None
        self.stats: dict[str, Any] = {}

    def distilled_graphs(self) -> list[Data]:
        """The distilled samples: from the zoo entry, else mined from the training split (once)."""
        if self.distilled is not None:
            import zoo

            graphs = list(zoo.load(self.distilled))
            width = int(graphs[0].x.size(-1))
            if width != self.num_features:
                raise ValueError(
                    f"distilled set {self.distilled} has {width} node labels but {self.name} has {self.num_features}"
                )
            return graphs
        if self.mining is None:
            from modules.mirage_mining import mine

            self.mining = mine(
                self.train_set,
                num_node_labels=self.num_features,
                num_edge_labels=self.num_edge_labels,
                **self.mining_args,
            )
            rank_zero_info(
                f"Mirage mined {self.mining.num_samples} samples from {len(self.train_set)} training graphs "
                f"in {self.mining.extraction_seconds + self.mining.mining_seconds:.2f} s"
            )
        return list(self.mining.graphs)

    def setup(self, stage: str | None = None) -> None:
        if self.stats:
            return
        super().setup(stage)
        from modules.mirage_mining import tensor_bytes

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
        if self.mining is not None:
            self.stats.update(
                extraction_seconds=self.mining.extraction_seconds, mining_seconds=self.mining.mining_seconds
            )


def random_subset(graphs: list[Data], budget_bytes: int, seed: int) -> list[Data]:
    """Graphs in a seeded random order until their tensor bytes reach ``budget_bytes``, with at least one
    graph per class (the equal-budget random baseline)."""
    from modules.mirage_mining import tensor_bytes

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
