"""FF-G2M / GLNN: modes, vectorised edge losses, once-per-fit teacher logits, bad graphs, fine-tuning."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch_geometric.data import Data

import cli
from datamodules.graphs import PlanetoidDataModule
from modules.core import Teacher, kd_kl
from modules.graph_mlp import FFG2M, GNN, MLP, check_graph, hfd_loss, lfd_loss, row_normalize

SMALL = {"num_nodes": 300, "num_features": 32, "num_classes": 3}


def small_graph() -> Data:
    dm = PlanetoidDataModule(synthetic=SMALL)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_edge_losses_equal_a_per_edge_loop():
    g = torch.Generator().manual_seed(0)
    h, z = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    edges = torch.tensor([[0, 1, 1, 2, 3, 5], [1, 0, 2, 1, 5, 3]])
    loops = torch.cat([edges, torch.arange(6).repeat(2, 1)], dim=1)
    lfd_ref = sum(kd_kl(h[i : i + 1], z[j : j + 1]) for j, i in loops.t().tolist()) / loops.size(1)
    hfd_ref = sum(
        kd_kl((h[a] - h[b]).abs()[None], (z[a] - z[b]).abs()[None], 1.5, scale_t2=False) for a, b in edges.t().tolist()
    ) / edges.size(1)
    assert torch.allclose(lfd_loss(h, z, loops), lfd_ref, atol=1e-6)
    assert torch.allclose(hfd_loss(h, z, edges, 1.5), hfd_ref, atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "terms"),
    [
        ("ce", {"ce"}),
        ("glnn", {"ce", "kd"}),
        ("lfd", {"ce", "lfd"}),
        ("hfd", {"ce", "hfd"}),
        ("ffg2m", {"ce", "lfd", "hfd"}),
    ],
)
def test_modes_compute_their_terms_with_official_weights(mode, terms):
    data = small_graph()
    teacher = None if mode == "ce" else Teacher(GNN(32, 16, 3))
    module = FFG2M(student=MLP(32, 16, 3), teacher=teacher, mode=mode, lamb=0.3)
    out = module.distill_loss(data)
    assert set(out) == terms
    assert module.weight_of("ce") == pytest.approx(1.0 if mode == "ce" else 0.3)
    assert all(module.weight_of(t) == pytest.approx(0.7) for t in terms - {"ce"})


def test_mlp_is_the_official_name_of_the_no_teacher_arm():
    assert FFG2M(student=MLP(32, 16, 3), mode="mlp").mode == "ce"
    with pytest.raises(ValueError, match="unknown mode 'kd'"):
        FFG2M(student=MLP(32, 16, 3), mode="kd")


def test_distilling_without_a_teacher_is_refused():
    with pytest.raises(ValueError, match="mode 'ffg2m' distils from a teacher"):
        FFG2M(student=MLP(32, 16, 3), mode="ffg2m")


def test_teacher_logits_are_computed_once_per_fit(tmp_path):
    calls = []
    net = GNN(32, 16, 3)
    net.register_forward_hook(lambda *a: calls.append(1))
    module = FFG2M(student=MLP(32, 16, 3), teacher=Teacher(net), mode="ffg2m")
    trainer = L.Trainer(
        max_epochs=5, logger=False, enable_progress_bar=False, enable_checkpointing=False, default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule=PlanetoidDataModule(synthetic=SMALL))
    assert trainer.global_step == 5 and len(calls) == 1


def test_row_normalize_keeps_zero_rows():
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert torch.equal(row_normalize(x), torch.tensor([[0.25, 0.75], [0.0, 0.0]]))


def test_bad_graphs_get_clear_errors():
    data = small_graph()
    with pytest.raises(ValueError, match="graph has 32 node features but the student expects in_channels=1433"):
        check_graph(data, 1433, 3)
    bad = data.clone()
    bad.y = bad.y.clone()
    bad.y[bad.train_mask.nonzero()[0]] = 7
    with pytest.raises(ValueError, match=r"labels span \[0, 7\] but the student has 3 classes"):
        check_graph(bad, 32, 3)
    empty = data.clone()
    empty.train_mask = torch.zeros_like(empty.train_mask)
    with pytest.raises(ValueError, match="train_mask is empty"):
        FFG2M(student=MLP(32, 16, 3), mode="ce").distill_loss(empty)


def test_zoo_student_refuses_a_graph_of_another_width(tmp_path):
    with pytest.raises(ValueError, match="graph has 256 node features but the student expects in_channels=1433"):
        cli.main(
            [
                "fit",
                "--config",
                "recipes/graph_mlp/finetune.yaml",
                "--data.init_args.synthetic.num_features=256",
                "--trainer.fast_dev_run=true",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )


def test_finetune_recipe_starts_from_the_zoo_student(tmp_path):
    import zoo

    published = zoo.load("ffg2m-cora-gcn-mlp")
    result = cli.main(
        [
            "fit",
            "--config",
            "recipes/graph_mlp/finetune.yaml",
            "--trainer.max_epochs=3",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.logger=false",
        ]
    )
    tuned = result.model.student
    assert isinstance(tuned, MLP) and tuned.init_args == published.init_args
    first = "layers.0.weight"
    delta = (tuned.state_dict()[first] - published.state_dict()[first]).abs().max()
    assert 0 < delta < 0.5  # started from the zoo weights and moved a little
    assert "test/acc" in result.test_metrics
