"""TU graph classification with categorical node labels (MUTAG, NCI1, IMDB-BINARY, ...), as Mirage needs, with
its embedded planted-motif default; categorical label checks and the stratified graph split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader as GraphDataLoader

from datamodules.base import BaseDataModule
from datamodules.graphs.raw import open_raw_dataset
from datamodules.splits import stratified_split
from datamodules.synthetic.motifs import planted_motif_graphs
from zoo.datasets import check_graphs

__all__ = [
    "TUDataModule",
    "categorical_edge_labels",
    "categorical_node_labels",
    "degree_one_hot",
    "node_degrees",
    "stratified_graph_split",
    "tu_raw_file_names",
]

TU_REQUIRED_SUFFIXES = ("A", "graph_indicator", "graph_labels")


def tu_raw_file_names(name: str) -> list[str]:
    """The raw files a TU graph-classification set needs (``MUTAG_A.txt``, ...); labels files are optional."""
    return [f"{name}_{suffix}.txt" for suffix in TU_REQUIRED_SUFFIXES]


def tu_raw_problem(raw_dir: Path, name: str) -> str | None:
    """The first raw file of TU dataset ``name`` in ``raw_dir`` that PyG's reader would choke on, and why (not
    comma-separated numbers, a wrong column count, row counts that disagree, a node id past the nodes); None
    if each looks right. Only run after processing failed, to name the file PyG's own error leaves out."""
    tables: dict[str, list[list[float]]] = {}
    for suffix, columns in (("A", 2), ("graph_indicator", 1), ("graph_labels", 1), ("node_labels", None),
                            ("edge_labels", None), ("node_attributes", None), ("edge_attributes", None)):  # fmt: skip
        path = raw_dir / f"{name}_{suffix}.txt"
        if not path.is_file():
            continue
        rows = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                rows.append([float(v) if "attributes" in suffix else int(v) for v in line.split(",")])
            except ValueError:
                return f"{path.name} line {number} is {line[:40]!r}: expected comma-separated numbers"
            if columns is not None and len(rows[-1]) != columns:
                return f"{path.name} line {number} has {len(rows[-1])} values, expected {columns}"
        if not rows:
            return f"{path.name} is empty"
        tables[suffix] = rows
    if "A" not in tables or "graph_indicator" not in tables:
        return None
    nodes, edges = len(tables["graph_indicator"]), len(tables["A"])
    ids = [v for row in tables["A"] for v in row]
    per_node = (nodes, f"{name}_graph_indicator.txt has {nodes} nodes")
    if min(ids) < 1 or max(ids) > nodes:
        return f"{name}_A.txt has node ids in [{min(ids)}, {max(ids)}], but {per_node[1]}"
    graphs = max(row[0] for row in tables["graph_indicator"])
    per_graph = (graphs, f"{name}_graph_indicator.txt names {graphs} graphs")
    per_edge = (edges, f"{name}_A.txt has {edges} edges")
    expected = {"graph_labels": per_graph, "node_labels": per_node, "node_attributes": per_node}
    expected |= {"edge_labels": per_edge, "edge_attributes": per_edge}
    for suffix, (count, source) in expected.items():
        if suffix in tables and len(tables[suffix]) != count:
            return f"{name}_{suffix}.txt has {len(tables[suffix])} rows, but {source}"
    return None


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

    :func:`datamodules.splits.stratified_split` with fractions ``(1 - val - test, val, test)`` and
    ``order=("test", "val", "train")``: for each class (in label order) the indices of its ``n_c`` graphs are
    permuted with one generator seeded by ``seed``; the first ``floor(test_fraction * n_c + 1/2)`` are test,
    the next ``floor(val_fraction * n_c + 1/2)`` val, the rest train (halves round up). So every split holds
    each class in proportion, within one graph. The published TU entries were split this way.

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
    fractions = (1.0 - val_fraction - test_fraction, val_fraction, test_fraction)
    split = stratified_split(y, fractions, seed, order=("test", "val", "train"), what="graphs")
    return split["train"], split["val"], split["test"]


class TUDataModule(BaseDataModule):
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
    ``root``, ``root/name/raw`` is copied first into ``zoo.files.cache_root()/data/tu/name/raw`` when ``root``
    is read-only; with ``root=None`` the graphs are seeded planted-motif graphs
    (:func:`datamodules.synthetic.planted_motif_graphs`, keyword arguments from ``synthetic``). Dataloaders are
    ``torch_geometric.loader.DataLoader`` over ``train_set``/``val_set``/``test_set`` (lists of ``Data``) with
    ``batch_size`` and ``num_workers``, shuffled for training only (by torch's global RNG, so the order follows
    the run's seed). ``num_features``, ``num_classes`` and ``num_edge_labels`` call ``prepare_data()`` and
    ``setup()`` themselves when read before setup.
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
        num_workers: int = 0,
    ) -> None:
        super().__init__(root=root, split_seed=split_seed, batch_size=batch_size, num_workers=num_workers)
        for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{what} must be in [0, 1), got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
        if max_degree is not None and max_degree < 0:
            raise ValueError(f"max_degree must be >= 0 or None, got {max_degree}")
        self.save_hyperparameters()
        self.name = name
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
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
        dataset, raw_dir = open_raw_dataset(
            self.root,
            self.name,
            "tu",
            present,
            files,
            lambda root: TUDataset(root, self.name, use_node_attr=False),
            f"TU dataset {self.name!r} needs raw files {', '.join(files)} (and {self.name}_node_labels.txt "
            "where it has node labels)",
            checked_files=files[:2],  # what TUDataset checks before downloading
            diagnose=lambda raw_dir: tu_raw_problem(raw_dir, self.name),
        )
        if dataset._data.y is None:
            raise FileNotFoundError(
                f"TU dataset {self.name!r} has no graph labels: {raw_dir / files[2]} is missing, and graph "
                "classification needs it"
            )
        if dataset._data.y.numel() != len(dataset):  # PyG processes this without a word and fails on indexing
            problem = tu_raw_problem(raw_dir, self.name)
            problem = problem or f"{dataset._data.y.numel()} graph labels for {len(dataset)} graphs"
            source = Path(self.root).expanduser() / self.name / "raw"
            raise ValueError(f"TU dataset {self.name!r}: the raw files in {source} disagree: {problem}")
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
        check_graphs(graphs, f"TU {label}")
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
        # the global RNG, as the published TU entries were trained (see BaseDataModule.loader)
        return self.loader(self.train_set, shuffle=True, shuffle_rng="global", loader_class=GraphDataLoader)

    def val_dataloader(self) -> GraphDataLoader:
        """Mini-batches of validation graphs, in index order."""
        self._ensure_setup()
        return self.loader(self.val_set, loader_class=GraphDataLoader)

    def test_dataloader(self) -> GraphDataLoader:
        """Mini-batches of test graphs, in index order."""
        self._ensure_setup()
        return self.loader(self.test_set, loader_class=GraphDataLoader)
