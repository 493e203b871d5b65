"""Checks for the planted-motif generator, the stratified graph split and the TU graph-classification datamodule."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from torch_geometric.data import Data
from torch_geometric.utils import contains_self_loops, is_undirected

from datamodules.graphs import (
    TUDataModule,
    categorical_edge_labels,
    categorical_node_labels,
    node_degrees,
    stratified_graph_split,
)
from datamodules.synthetic import planted_motif_graphs

TU = SHARED_DATA / "tu"


def adjacency(g: Data) -> set[tuple[int, int]]:
    return set(zip(g.edge_index[0].tolist(), g.edge_index[1].tolist()))


def has_labelled_cycle(g: Data, labels: tuple[int, ...]) -> bool:
    """Whether nodes with the given labels, in this order, form a cycle (a triangle for 3, a 4-cycle for 4)."""
    adj, node_label = adjacency(g), categorical_node_labels(g)
    candidates = [(node_label == lab).nonzero().view(-1).tolist() for lab in labels]
    for nodes in itertools.product(*candidates):
        if all((nodes[i], nodes[(i + 1) % len(nodes)]) in adj for i in range(len(nodes))):
            return True
    return False


# ---------------------------------------------------------------------- generator


def test_motif_graphs_are_seeded_and_shaped_like_tu():
    a, b, c = planted_motif_graphs(seed=3), planted_motif_graphs(seed=3), planted_motif_graphs(seed=4)
    assert len(a) == 600
    assert all(torch.equal(g[k], h[k]) for g, h in zip(a, b) for k in ("x", "y", "edge_index"))
    assert any(g.num_nodes != h.num_nodes or not torch.equal(g.edge_index, h.edge_index) for g, h in zip(a, c))
    y = torch.cat([g.y for g in a])
    assert torch.bincount(y).tolist() == [300, 300]
    for g in a:
        assert g.x.dtype == torch.float32 and g.x.shape == (g.num_nodes, 4) and 15 <= g.num_nodes <= 30
        assert torch.equal(g.x.sum(1), torch.ones(g.num_nodes)) and set(g.x.unique().tolist()) == {0.0, 1.0}
        assert g.y.dtype == torch.int64 and g.y.shape == (1,) and g.get("edge_attr") is None
        ei = g.edge_index
        assert ei.dtype == torch.int64 and is_undirected(ei, num_nodes=g.num_nodes)
        assert not contains_self_loops(ei) and len(adjacency(g)) == ei.size(1)  # no duplicates


def test_motif_graphs_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    planted_motif_graphs(num_graphs=10)
    assert torch.equal(torch.rand(3), expected)


def test_class_one_has_the_labelled_triangle_and_class_zero_the_labelled_four_cycle():
    graphs = planted_motif_graphs(num_graphs=120, seed=1)
    for g in graphs:
        if int(g.y) == 1:
            assert has_labelled_cycle(g, (0, 1, 2))
        else:
            assert has_labelled_cycle(g, (0, 1, 2, 3))


def test_label_frequencies_do_not_give_the_class_away():
    graphs = planted_motif_graphs(seed=0)
    counts = torch.stack([torch.bincount(categorical_node_labels(g), minlength=4).float() for g in graphs])
    y = torch.cat([g.y for g in graphs])
    gap = (counts[y == 0].mean(0) - counts[y == 1].mean(0)).abs()
    # A motif planted on top of the background would give class 0 one more label-3 node per graph.
    assert bool((gap < 0.5).all()), gap
    assert bool((counts[:, :4] >= 1).all())  # labels 0-3 occur in every graph of both classes


def test_generator_refuses_bad_arguments():
    with pytest.raises(ValueError, match="num_node_labels must be >= 4"):
        planted_motif_graphs(num_node_labels=3)
    with pytest.raises(ValueError, match="max_nodes must be >= min_nodes=15, got 10"):
        planted_motif_graphs(max_nodes=10)


# ---------------------------------------------------------------------- split


def test_stratified_split_is_disjoint_deterministic_and_proportional():
    y = torch.cat([torch.zeros(103), torch.ones(47), torch.full((10,), 2)]).long()
    y = y[torch.randperm(160, generator=torch.Generator().manual_seed(0))]
    train, val, test = stratified_graph_split(y, 0.1, 0.2, seed=7)
    again = stratified_graph_split(y, 0.1, 0.2, seed=7)
    other = stratified_graph_split(y, 0.1, 0.2, seed=8)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    assert not torch.equal(test, other[2])
    assert torch.equal(torch.cat([train, val, test]).sort().values, torch.arange(160))  # disjoint and covering
    for c, n_c in ((0, 103), (1, 47), (2, 10)):
        assert abs(int((y[val] == c).sum()) - 0.1 * n_c) <= 1
        assert abs(int((y[test] == c).sum()) - 0.2 * n_c) <= 1
        assert abs(int((y[train] == c).sum()) - 0.7 * n_c) <= 1


def test_split_refuses_bad_fractions_and_empty_splits():
    with pytest.raises(ValueError, match=r"val_fraction \+ test_fraction must be < 1"):
        TUDataModule(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"the val split is empty \(train=2, val=0, test=2 of 4 graphs\)"):
        stratified_graph_split(torch.tensor([0, 0, 1, 1]), 0.1, 0.3, seed=0)


def test_synthetic_datamodule_splits_and_loads():
    dm = TUDataModule(batch_size=64, split_seed=2)
    assert (dm.num_features, dm.num_classes, dm.num_edge_labels) == (4, 2, 0)  # sets itself up
    sizes = [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)]
    assert sizes == [480, 60, 60]
    for split in (dm.val_set, dm.test_set):
        assert torch.bincount(torch.cat([g.y for g in split])).tolist() == [30, 30]
    ids = {k: set(v.tolist()) for k, v in dm.split_indices.items()}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    other = TUDataModule(split_seed=2, batch_size=64)
    other.setup()
    assert all(torch.equal(dm.split_indices[k], other.split_indices[k]) for k in ids)
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 64 and batch.x.shape[1] == 4 and batch.y.shape == (64,)
    assert sum(b.num_graphs for b in dm.test_dataloader()) == 60
    torch.manual_seed(3)
    first = [b.y.tolist() for b in dm.train_dataloader()]
    torch.manual_seed(3)
    assert first == [b.y.tolist() for b in other.train_dataloader()]  # the run seed fixes the order
    torch.manual_seed(4)
    assert first != [b.y.tolist() for b in other.train_dataloader()]


# ---------------------------------------------------------------------- categorical checks


def test_categorical_labels_reject_continuous_features():
    g = Data(x=torch.rand(5, 3), edge_index=torch.tensor([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match=r"node features are continuous, Mirage needs categorical labels.*in toy 7"):
        categorical_node_labels(g, name="toy 7")
    g.x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # multi-hot row 1
    with pytest.raises(ValueError, match=r"1 of 2 rows are not one-hot, first row 1"):
        categorical_node_labels(g)
    g.x = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert categorical_node_labels(g).tolist() == [1, 0]
    assert categorical_edge_labels(g).tolist() == [0, 0]  # no edge_attr
    g.edge_attr = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert categorical_edge_labels(g).tolist() == [2, 2]
    g.edge_attr = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="edge features are continuous"):
        categorical_edge_labels(g)


def write_tu(root: Path, name: str, graphs: list[tuple[int, list[tuple[int, int]], int]], node_labels=None) -> None:
    """Write a TU dataset: graphs are (num_nodes, undirected edges with local ids, class label)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    edges, indicator, offset = [], [], 0
    for gid, (n, local_edges, _) in enumerate(graphs):
        indicator += [gid + 1] * n
        for u, v in local_edges:
            edges += [(offset + u + 1, offset + v + 1), (offset + v + 1, offset + u + 1)]
        offset += n
    (raw / f"{name}_A.txt").write_text("".join(f"{u}, {v}\n" for u, v in edges))
    (raw / f"{name}_graph_indicator.txt").write_text("".join(f"{i}\n" for i in indicator))
    (raw / f"{name}_graph_labels.txt").write_text("".join(f"{label}\n" for _, _, label in graphs))
    if node_labels is not None:
        (raw / f"{name}_node_labels.txt").write_text("".join(f"{row}\n" for row in node_labels))


TINY = [(1, [], 0), (3, [(0, 1), (1, 2)], 0), (2, [(0, 1)], 0), (2, [(0, 1)], 1), (4, [(0, 1), (0, 2), (0, 3)], 1)]
TINY += [(3, [(0, 1), (1, 2), (2, 0)], 1)]


def test_graph_without_edges_passes_through_a_batch(tmp_path):
    write_tu(tmp_path, "TINY", TINY)  # no node labels: degree labels, the first graph a lone node without edges
    dm = TUDataModule(root=str(tmp_path), name="TINY", val_fraction=0.34, test_fraction=0.34, batch_size=6)
    assert dm.num_features == 4 and dm.degree_labels  # degrees 0..3
    lone = dm.graphs[0]
    assert lone.num_nodes == 1 and lone.edge_index.shape == (2, 0) and lone.x.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    batches = [b for loader in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader) for b in loader()]
    assert sum(b.num_graphs for b in batches) == 6 and sum(b.num_nodes for b in batches) == 15
    assert any(1 in torch.bincount(b.batch).tolist() for b in batches)
    for g in dm.graphs:
        assert torch.equal(categorical_node_labels(g), node_degrees(g.edge_index, g.num_nodes))
    assert not (tmp_path / "TINY" / "processed").exists()  # processed in the project cache, never the user's root


def test_multi_column_node_labels_are_refused_naming_the_graph(tmp_path):
    write_tu(tmp_path, "TWO", TINY, node_labels=["1, 1", "1, 2", "2, 1"] * 5)
    with pytest.raises(ValueError, match=r"node features are continuous.*in TWO graph 0: 1 of 1 rows"):
        TUDataModule(root=str(tmp_path), name="TWO", val_fraction=0.34, test_fraction=0.34).setup()


def test_missing_raw_files_raise_file_not_found(tmp_path, monkeypatch):
    root = tmp_path / "readonly"
    (root / "MUTAG").mkdir(parents=True)
    os.chmod(root / "MUTAG", 0o555)  # read-only: sends the loader to the cache, which is empty
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    import torch_geometric.datasets.tu_dataset as tu_dataset

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tu_dataset.fs, "cp", offline)
    expected = r"MUTAG_A\.txt, MUTAG_graph_indicator\.txt, MUTAG_graph_labels\.txt.*cache/data/tu/download/MUTAG/raw"
    with pytest.raises(FileNotFoundError, match=expected):
        TUDataModule(root=str(root), name="MUTAG").setup()


# ---------------------------------------------------------------------- real data


def load_real(name: str, tmp_path: Path, monkeypatch, **kwargs) -> TUDataModule:
    if not (TU / name / "raw").is_dir():
        pytest.skip(f"no offline {name} under {TU}")
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path))
    processed_before = (TU / name / "processed").exists()
    dm = TUDataModule(root=str(TU), name=name, **kwargs)
    dm.prepare_data()
    dm.setup()
    (copied,) = (p / name for p in (tmp_path / "data" / "tu").iterdir())  # one content-keyed copy
    assert sorted(p.name for p in (copied / "raw").iterdir()) == sorted(p.name for p in (TU / name / "raw").iterdir())
    assert (copied / "processed").is_dir()
    assert (TU / name / "processed").exists() == processed_before  # nothing written into the read-only copy
    return dm


@pytest.mark.parametrize(
    ("name", "count", "features", "edge_labels", "class_counts"),
    [("MUTAG", 188, 7, 4, [63, 125]), ("NCI1", 4110, 37, 0, [2053, 2057])],
)
def test_real_labelled_sets_load_from_a_read_only_root(
    name, count, features, edge_labels, class_counts, tmp_path, monkeypatch
):
    dm = load_real(name, tmp_path, monkeypatch)
    assert (len(dm.graphs), dm.num_features, dm.num_edge_labels, dm.num_classes) == (count, features, edge_labels, 2)
    assert not dm.degree_labels
    assert torch.bincount(torch.cat([g.y for g in dm.graphs])).tolist() == class_counts
    assert sum(len(s) for s in (dm.train_set, dm.val_set, dm.test_set)) == count
    assert abs(len(dm.test_set) - count / 10) <= 2 and abs(len(dm.val_set) - count / 10) <= 2
    labels = torch.cat([categorical_node_labels(g) for g in dm.graphs])
    assert int(labels.max()) == features - 1
    if edge_labels:
        assert int(torch.cat([categorical_edge_labels(g) for g in dm.graphs]).max()) == edge_labels - 1
    batch = next(iter(dm.val_dataloader()))
    assert batch.x.shape[1] == features and batch.num_graphs == min(128, len(dm.val_set))


def test_real_imdb_gets_degree_labels(tmp_path, monkeypatch):
    dm = load_real("IMDB-BINARY", tmp_path, monkeypatch)
    assert (len(dm.graphs), dm.num_classes, dm.num_edge_labels) == (1000, 2, 0) and dm.degree_labels
    degrees = [node_degrees(g.edge_index, g.num_nodes) for g in dm.graphs]
    max_degree = max(int(d.max()) for d in degrees)
    assert dm.num_features == max_degree + 1
    assert all(torch.equal(categorical_node_labels(g), d) for g, d in zip(dm.graphs, degrees))
    assert [len(s) for s in (dm.train_set, dm.val_set, dm.test_set)] == [800, 100, 100]

    capped = TUDataModule(root=str(TU), name="IMDB-BINARY", max_degree=20)  # reuses the processed cache
    assert capped.num_features == 21
    assert all(torch.equal(categorical_node_labels(g), d.clamp(max=20)) for g, d in zip(capped.graphs, degrees))
