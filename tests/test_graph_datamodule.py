"""Property checks for the contextual SBM and the Planetoid datamodule's transductive and inductive splits."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import SHARED_DATA
from torch_geometric.data import Data
from torch_geometric.utils import contains_self_loops, is_undirected

from datamodules.graphs import PlanetoidDataModule, check_node_splits, planetoid_raw_file_names
from datamodules.synthetic import contextual_sbm

PLANETOID = SHARED_DATA / "planetoid"
SMALL = {"num_nodes": 600, "num_features": 64, "num_classes": 4}


def masks_of(graph: Data) -> dict[str, torch.Tensor]:
    return {"train_mask": graph.train_mask, "val_mask": graph.val_mask, "test_mask": graph.test_mask}


def test_csbm_is_seeded_and_shaped_like_planetoid():
    a, b, c = contextual_sbm(seed=3), contextual_sbm(seed=3), contextual_sbm(seed=4)
    for key in ("x", "y", "edge_index"):
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a.x, c.x) and not torch.equal(a.edge_index, c.edge_index)
    assert a.x.dtype == torch.float32 and a.y.dtype == torch.int64 and a.edge_index.dtype == torch.int64
    assert a.x.shape == (2000, 256) and set(a.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.x.sum(1), torch.full((2000,), 18.0))  # words_per_node distinct words per row
    assert int(a.y.min()) == 0 and int(a.y.max()) == 6


def test_csbm_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    contextual_sbm(num_nodes=100, num_features=32, num_classes=3)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("homophily", [0.2, 0.8])
def test_csbm_edges_are_simple_undirected_with_the_requested_homophily_and_degree(homophily):
    g = contextual_sbm(num_nodes=1000, avg_degree=6.0, homophily=homophily, seed=1)
    ei = g.edge_index
    assert is_undirected(ei, num_nodes=1000) and not contains_self_loops(ei)
    assert torch.unique(ei[0] * 1000 + ei[1]).numel() == ei.size(1)  # no duplicate edges
    assert ei.size(1) / 1000 == pytest.approx(6.0, abs=0.01)
    measured = (g.y[ei[0]] == g.y[ei[1]]).float().mean().item()
    assert measured == pytest.approx(homophily, abs=0.02)


def test_csbm_features_carry_class_signal():
    g = contextual_sbm(seed=0)
    x, y = g.x, g.y
    centroids = torch.stack([x[y == c].mean(0) for c in range(7)])
    nearest = (x @ centroids.t()).argmax(1)
    assert 0.3 < (nearest == y).float().mean() < 0.95  # informative but far from separable


def test_transductive_split_is_planetoid_public_style():
    dm = PlanetoidDataModule(split_seed=5)
    dm.setup("fit")
    g = dm.full_graph
    assert dm.num_features == 256 and dm.num_classes == 7
    assert [int(m.sum()) for m in masks_of(g).values()] == [140, 500, 1000]
    assert torch.equal(torch.bincount(g.y[g.train_mask], minlength=7), torch.full((7,), 20))
    assert not (g.train_mask & g.val_mask).any() and not (g.val_mask & g.test_mask).any()
    assert not (g.train_mask & g.test_mask).any()
    assert all(m.dtype == torch.bool and m.shape == (2000,) for m in masks_of(g).values())
    batches = [list(loader()) for loader in (dm.train_dataloader, dm.val_dataloader, dm.test_dataloader)]
    assert all(len(b) == 1 and b[0] is g for b in batches)
    assert next(iter(dm.predict_dataloader())) is g
    other = PlanetoidDataModule(split_seed=6)
    other.setup()
    assert not torch.equal(other.full_graph.train_mask, g.train_mask)
    dm.setup("test")  # idempotent
    assert dm.full_graph is g


def test_small_graph_scales_val_and_test_down():
    dm = PlanetoidDataModule(synthetic=SMALL)
    dm.setup()
    sizes = [int(m.sum()) for m in masks_of(dm.full_graph).values()]
    assert sizes[0] == 80 and sizes[1] == 173 and sizes[2] == 346  # (600 - 80) * 500/1500, * 1000/1500


def test_inductive_split_hides_test_ind_nodes():
    dm = PlanetoidDataModule(setting="ind", split_rate=0.2, split_seed=1)
    dm.setup("fit")
    full, obs = dm.full_graph, next(iter(dm.train_dataloader()))
    assert next(iter(dm.val_dataloader())) is obs
    test = next(iter(dm.test_dataloader()))
    test_ind = test.test_mask.nonzero().view(-1)
    assert test_ind.numel() == 200 and bool(full.test_mask[test_ind].all())
    assert torch.equal(test.train_mask, full.train_mask) and torch.equal(test.val_mask, full.val_mask)
    assert test.edge_index is full.edge_index and int(full.test_mask.sum()) == 1000  # full graph left intact

    assert not torch.isin(test_ind, obs.node_ids).any()
    assert obs.num_nodes == 140 + 500 + 800 == obs.node_ids.numel() == obs.x.size(0)
    assert [int(m.sum()) for m in masks_of(obs).values()] == [140, 500, 800]
    original_edges = obs.node_ids[obs.edge_index]
    assert not torch.isin(original_edges, test_ind).any()
    check_node_splits(masks_of(obs), obs.num_nodes)
    # The relabelled graph is the induced subgraph: same features, labels and masks as the original nodes.
    assert torch.equal(obs.x, full.x[obs.node_ids]) and torch.equal(obs.y, full.y[obs.node_ids])
    assert torch.equal(obs.train_mask, full.train_mask[obs.node_ids])
    kept = torch.isin(full.edge_index, obs.node_ids).all(0)
    assert obs.edge_index.size(1) == int(kept.sum())
    assert torch.equal(obs.test_mask | full.test_mask[obs.node_ids], full.test_mask[obs.node_ids])


def test_split_check_names_the_bad_mask():
    n = 10
    train, val, test = (
        torch.zeros(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
        torch.zeros(n, dtype=torch.bool),
    )
    val[:3], test[3:] = True, True
    with pytest.raises(ValueError, match=r"train_mask is empty \(0 of 10 nodes\).*val_mask=3, test_mask=7"):
        check_node_splits({"train_mask": train, "val_mask": val, "test_mask": test}, n)
    train[2] = True
    with pytest.raises(ValueError, match=r"train_mask and val_mask overlap on 1 nodes"):
        check_node_splits({"train_mask": train, "val_mask": val, "test_mask": test}, n)


def test_graph_too_small_for_a_split_is_refused():
    dm = PlanetoidDataModule(synthetic={"num_nodes": 40, "num_features": 32, "num_classes": 2})
    with pytest.raises(ValueError, match="val_mask is empty"):
        dm.setup()


def test_missing_raw_files_raise_file_not_found(tmp_path, monkeypatch):
    root = tmp_path / "readonly"
    (root / "Cora").mkdir(parents=True)
    os.chmod(root / "Cora", 0o555)  # read-only: sends the loader to the cache, which is empty
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    import torch_geometric.datasets.planetoid as planetoid

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(planetoid.fs, "cp", offline)
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.x.*ind\.cora\.test\.index"):
        PlanetoidDataModule(root=str(root)).setup()


@pytest.mark.skipif(not (PLANETOID / "Cora" / "raw").is_dir(), reason=f"no offline Cora under {PLANETOID}")
def test_real_cora_from_a_read_only_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path))
    processed = PLANETOID / "Cora" / "processed"
    existed_before = processed.exists()
    dm = PlanetoidDataModule(root=str(PLANETOID), name="Cora")
    dm.prepare_data()
    dm.setup()
    g = dm.full_graph
    assert (g.num_nodes, dm.num_features, dm.num_classes) == (2708, 1433, 7)
    assert [int(m.sum()) for m in masks_of(g).values()] == [140, 500, 1000]
    assert is_undirected(g.edge_index) and not contains_self_loops(g.edge_index)
    assert set(g.x.unique().tolist()) == {0.0, 1.0}  # raw bag-of-words: no transform applied
    (copied,) = (p / "Cora" for p in (tmp_path / "data" / "planetoid").iterdir())  # one content-keyed copy
    assert sorted(p.name for p in (copied / "raw").iterdir()) == sorted(planetoid_raw_file_names("Cora"))
    assert (copied / "processed").is_dir()
    assert processed.exists() == existed_before  # nothing written into the read-only copy


def test_planetoid_raw_pickles_cannot_run_code_and_a_users_processed_folder_is_never_opened(tmp_path, monkeypatch):
    """A hostile data root: a raw Planetoid file whose pickle would call os.system, and a processed/ folder
    that would run code when unpickled. Neither runs: the raw file is refused naming the global, and the
    processed folder is never read because processing happens in the project cache."""
    import os
    import pickle

    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    raw = tmp_path / "root" / "Cora" / "raw"
    raw.mkdir(parents=True)
    for name in planetoid_raw_file_names("Cora"):
        (raw / name).write_bytes(b"1\n2\n" if name.endswith("test.index") else pickle.dumps(Evil()))
    processed = tmp_path / "root" / "Cora" / "processed"
    processed.mkdir()
    for name in ("data.pt", "pre_filter.pt", "pre_transform.pt"):
        (processed / name).write_bytes(pickle.dumps(Evil()))
    dm = PlanetoidDataModule(root=str(tmp_path / "root"), name="Cora")
    with pytest.raises(
        pickle.UnpicklingError, match="refusing to unpickle posix.system|refusing to unpickle os.system"
    ):
        dm.prepare_data()
    assert not marker.exists()
