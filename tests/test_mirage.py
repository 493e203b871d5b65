"""Mirage end to end: the GNN's root-sum pooling on distilled samples, the datamodule's arms, the recipe."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

import cli
from datamodules.graphs import MirageDataModule, random_subset
from modules.mirage import MirageGNN, graph_pool
from modules.mirage_mining import MirageMiner, computation_trees, mine, tensor_bytes

TINY = "recipes/mirage/tiny.yaml"
SMALL = {"num_graphs": 120}


def test_root_sum_of_a_tree_sample_equals_the_node_embedding_in_its_graph():
    # A labelled graph: 0-1, 1-2, 2-0, 2-3 (a triangle with a tail), 3 node labels, no edge labels.
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 0, 2, 3], [1, 0, 2, 1, 0, 2, 3, 2]])
    labels = torch.tensor([0, 1, 2, 1])
    graph = Data(x=torch.nn.functional.one_hot(labels, 3).float(), edge_index=edge_index, y=torch.tensor([1]))
    torch.manual_seed(0)
    net = MirageGNN(in_channels=3, hidden_channels=8, num_layers=2, conv="gin", dropout=0.0).eval()
    node_h = {}

    def grab(module, inputs, output):
        node_h["h"] = output

    net.convs[-1].register_forward_hook(grab)
    net(Batch.from_data_list([graph]))
    original = node_h["h"]
    for v, tree in enumerate(computation_trees(labels, edge_index, None, depth=2)):
        parents = torch.tensor(tree.parents[1:])
        sample = Data(
            x=torch.nn.functional.one_hot(torch.tensor(tree.labels), 3).float(),
            edge_index=torch.stack([torch.arange(1, tree.num_nodes), parents]),  # child -> parent
            root_mask=torch.tensor([True] + [False] * (tree.num_nodes - 1)),
            y=torch.tensor([1]),
        )
        net(Batch.from_data_list([sample]))
        assert torch.allclose(node_h["h"][0], original[v], atol=1e-5), f"tree of node {v}"


def test_graph_pool_variants():
    h = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    batch = torch.tensor([0, 0, 1, 1])
    roots = torch.tensor([True, False, True, True])
    assert graph_pool(h, batch, 2, "root_sum", roots).view(-1).tolist() == [1.0, 7.0]
    assert graph_pool(h, batch, 2, "sum", roots).view(-1).tolist() == [3.0, 7.0]
    assert graph_pool(h, batch, 2, "mean", roots).view(-1).tolist() == [1.0, 3.5]
    assert graph_pool(h, batch, 2, "root_sum").view(-1).tolist() == [3.0, 7.0]  # original graphs: all nodes
    with pytest.raises(ValueError, match="unknown pool 'max'"):
        graph_pool(h, batch, 2, "max")


def test_datamodule_arms_and_budget():
    mirage = MirageDataModule(synthetic=SMALL, miner=MirageMiner(depth=1, support=0.3, drop_shared=True))
    mirage.setup()
    assert all(g.root_mask.any() for g in mirage.train_set)
    assert 0 < mirage.stats["compression"] < 0.05
    assert mirage.stats["train_bytes"] == tensor_bytes(mirage.train_set)
    miner = MirageMiner(depth=1, support=0.3, drop_shared=True)
    rnd = MirageDataModule(synthetic=SMALL, miner=miner, train_on="random", subset_seed=1)
    rnd.setup()
    assert rnd.stats["train_bytes"] >= mirage.stats["train_bytes"]
    assert {int(g.y) for g in rnd.train_set} == {0, 1}
    assert all("root_mask" not in g for g in rnd.train_set)  # original graphs, summed over all nodes
    full = MirageDataModule(synthetic=SMALL, train_on="full")
    full.setup()
    assert full.stats["compression"] == 1.0 and len(full.train_set) == len(mirage.split_indices["train"])
    # val/test are the original graphs in every arm
    assert [g.num_nodes for g in full.test_set] == [g.num_nodes for g in mirage.test_set]


def test_the_miner_is_data_in_and_out_and_mining_parameters_say_where_they_go():
    seen = []

    def first_two_per_class(graphs):  # any callable list[Data] -> list[Data] is a miner
        seen.append(len(graphs))
        return [g for c in (0, 1) for g in [g for g in graphs if int(g.y) == c][:2]]

    dm = MirageDataModule(synthetic=SMALL, miner=first_two_per_class)
    dm.setup()
    assert seen == [len(dm.split_indices["train"])] and len(dm.train_set) == 4
    assert "extraction_seconds" not in dm.stats and "miner" not in dm.hparams  # objects are not hyperparameters
    mined = MirageDataModule(synthetic=SMALL, miner=MirageMiner(depth=1, support=0.3, drop_shared=True))
    mined.setup()
    assert mined.stats["extraction_seconds"] >= 0 and mined.stats["mining_seconds"] >= 0
    with pytest.raises(ValueError, match=r"support=0.6 given.*--data.init_args.miner.init_args.support"):
        MirageDataModule(synthetic=SMALL, support=0.6)
    with pytest.raises(ValueError, match=r"train_on='mirage' needs the distilled set.*modules.mirage_mining"):
        MirageDataModule(synthetic=SMALL)
    MirageDataModule(synthetic=SMALL, train_on="full")  # the full arm needs no miner
    MirageDataModule(synthetic=SMALL, train_on="random", budget_bytes=5000)  # nor a random arm with a budget


def test_random_subset_is_seeded_and_meets_the_budget():
    graphs = MirageDataModule(synthetic=SMALL, train_on="full")
    graphs.setup()
    a = random_subset(graphs.train_set, 5000, seed=0)
    assert a == random_subset(graphs.train_set, 5000, seed=0) and a != random_subset(graphs.train_set, 5000, seed=1)
    assert tensor_bytes(a) >= 5000 and tensor_bytes(a[:-1]) < 5000 or len({int(g.y) for g in a[:-1]}) < 2


def test_too_high_support_names_the_largest_usable_one():
    dm = MirageDataModule(synthetic=SMALL, miner=MirageMiner(depth=2, support=0.9))
    with pytest.raises(ValueError, match="largest usable support for this class is"):
        dm.setup()


def test_distilled_set_round_trips_through_the_zoo(scratch_zoo):
    from zoo import export

    dm = MirageDataModule(synthetic=SMALL, miner=MirageMiner(depth=1, support=0.3, drop_shared=True))
    dm.setup()
    export.export_dataset(
        dm.train_set,
        "mirage-toy",
        {"method": "Mirage", "task": "graph-classification"},
        "datamodules.graphs.stored.GraphSet",
        scratch_zoo["weights"],
    )
    again = MirageDataModule(synthetic=SMALL, distilled="zoo:mirage-toy")
    again.setup()
    assert len(again.train_set) == len(dm.train_set)
    assert all(
        torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) for a, b in zip(again.train_set, dm.train_set)
    )
    wrong = MirageDataModule(synthetic={**SMALL, "num_node_labels": 5}, distilled="zoo:mirage-toy")
    with pytest.raises(ValueError, match="has 4 node labels but"):
        wrong.setup()


def test_graphs_without_edges_are_mined_without_error():
    graphs = [
        Data(x=torch.eye(2)[[i % 2]], edge_index=torch.empty(2, 0, dtype=torch.long), y=torch.tensor([i % 2]))
        for i in range(6)
    ]
    graphs += [
        Data(x=torch.eye(2)[[0, 1]], edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.tensor([i % 2]))
        for i in range(6)
    ]
    result = mine(graphs, depth=1, support=0.5)
    assert sum(result.num_samples.values()) >= 1


def test_tiny_recipe_runs_through_the_cli(tmp_path):
    result = cli.main(
        [
            "fit",
            "--config",
            TINY,
            "--trainer.max_epochs=2",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.synthetic.num_graphs=120",
            "--data.init_args.miner.init_args.depth=1",
            "--data.init_args.miner.init_args.drop_shared=true",
        ]
    )
    assert 0.0 <= result.test_metrics["test/auroc"] <= 1.0
    assert result.datamodule.stats["compression"] < 0.05


def test_graph_size_baseline_ranks_by_node_count():
    import lightning as L

    from modules.mirage import GraphClassification, GraphSizeClassifier

    small = [
        Data(x=torch.ones(n, 1), edge_index=torch.empty(2, 0, dtype=torch.long), y=torch.tensor([0])) for n in (3, 4, 5)
    ]
    large = [
        Data(x=torch.ones(n, 1), edge_index=torch.empty(2, 0, dtype=torch.long), y=torch.tensor([1]))
        for n in (20, 25, 30)
    ]
    from torch_geometric.loader import DataLoader

    loader = DataLoader(small + large, batch_size=6)
    module = GraphClassification(student=GraphSizeClassifier(), optimizer=lambda p: torch.optim.Adam(p, lr=0.1))
    L.Trainer(
        max_epochs=100, logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False
    ).fit(module, train_dataloaders=loader)
    probs = module.student(next(iter(loader))).softmax(-1)[:, 1]
    assert probs[:3].max() < probs[3:].min()


def test_evidence_summary_reports_all_runs_and_top_k_by_validation():
    from zoo.evidence import summarise

    row = summarise([0.5, 0.7, 0.9, 0.6], 100, val=[0.1, 0.9, 0.8, 0.2], top_k=2)
    assert row["mean"] == 67.5 and row["n"] == 4
    assert row["top_mean"] == 80.0 and row["top_std"] == 10.0  # runs 1 and 2 have the best validation
