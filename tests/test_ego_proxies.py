"""UNIEGO: the SPD selection rule, the learned soup, proxy export and the SPD/FeatureDistill losses."""

from __future__ import annotations

import pytest
import torch

from modules.ego_proxies import SPD, FeatureDistill, ViewNet, learned_soup, proxy_outputs, select_proxies
from zoo.outputs import write_outputs


def test_selection_keeps_correct_more_confident_proxies_under_the_floor():
    # 3 proxies x 4 samples, 2 classes, all labels 0; the student's CE is 0.5 everywhere
    logits = torch.tensor(
        [
            [[3.0, 0.0], [0.0, 3.0], [0.2, 0.0], [-6.0, 0.0]],  # right+sure, wrong, right but unsure, wrong
            [[2.0, 0.0], [1.0, 0.0], [0.1, 0.0], [-4.5, 0.0]],  # right, right+sure, right but unsure, wrong
            [[5.0, 0.0], [0.5, 0.0], [0.05, 0.0], [-5.0, 0.0]],  # best, less sure than proxy 1, unsure, wrong
        ]
    )
    w = select_proxies(logits, torch.zeros(4, dtype=torch.long), torch.full((4,), 0.5), top_k=1)
    assert w[:, 0].tolist() == [0.0, 0.0, 1.0]  # lowest CE among valid
    assert w[:, 1].tolist() == [0.0, 1.0, 0.0]  # proxy 2 is correct but less confident than the student
    assert w[:, 2].sum() == 0 and w[:, 3].sum() == 0  # no proxy beats the student / all wrong
    w2 = select_proxies(logits, torch.zeros(4, dtype=torch.long), torch.full((4,), 0.5), top_k=2)
    assert w2[:, 0].tolist() == [0.5, 0.0, 0.5]
    # the CE floor: a correct proxy whose CE exceeds ce_floor is not selected, even against a hopeless student
    close = torch.tensor([[[0.0, 0.0, 0.001]]])  # label 2 is the argmax by a hair: CE ~ 1.1
    assert select_proxies(close, torch.tensor([2]), torch.tensor([10.0]), ce_floor=4.0).sum() == 1
    assert select_proxies(close, torch.tensor([2]), torch.tensor([10.0]), ce_floor=1.0).sum() == 0


def _batches(n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    return [{"x": x[i : i + 8], "y": y[i : i + 8], "index": torch.arange(i, i + 8)} for i in range(0, n, 8)]


def test_learned_soup_blends_parameters_and_learns_its_weights():
    torch.manual_seed(0)
    proxies = [ViewNet((1, 8, 6), 2, hidden=16) for _ in range(3)]
    merged, w = learned_soup(proxies, _batches(), epochs=2, lr=0.1)
    assert w.shape == (3,) and w.sum().item() == pytest.approx(1.0) and not torch.allclose(w, torch.full((3,), 1 / 3))
    expected = sum(wk * p.head.weight for wk, p in zip(w, proxies))
    assert torch.allclose(merged.head.weight, expected, atol=1e-6)
    with pytest.raises(ValueError, match="different architecture"):
        learned_soup([proxies[0], ViewNet((1, 8, 6), 2, hidden=8)], _batches())


def test_spd_distils_only_covered_samples_from_exported_proxies(tmp_path):
    torch.manual_seed(0)
    proxies = {"a": ViewNet((1, 8, 6), 2, hidden=16), "b": ViewNet((1, 8, 6), 2, hidden=16)}
    named, rows = proxy_outputs(proxies, _batches())
    path = write_outputs(tmp_path / "proxies.safetensors", named, [f"s{r}" for r in rows], "proxies a, b", "0" * 64)
    spd = SPD(str(path), student=ViewNet((1, 8, 6), 2, hidden=16))
    assert spd.proxy_features.shape == (2, 32, 16) and spd.proxy_logits.shape == (2, 32, 2)
    batch = _batches()[1]
    terms = spd.distill_loss(batch)
    assert set(terms) == {"ce", "feat", "kd"}
    sum(terms.values()).backward()
    assert spd.projectors["q"].weight.grad is not None
    uniform = SPD(str(path), student=ViewNet((1, 8, 6), 2, hidden=16), selection="uniform")
    assert torch.equal(uniform.weights(torch.zeros(2, 8, 2), batch["y"], torch.zeros(8)), torch.full((2, 8), 0.5))
    with pytest.raises(KeyError, match="no exported proxy outputs"):
        spd.proxy_rows(torch.tensor([99]))


def test_feature_distill_masks_missing_teacher_rows():
    torch.manual_seed(0)
    m = FeatureDistill(ViewNet((1, 8, 6), 2, hidden=16, dropout=0.0), teachers={"fou": 5, "zer": 3})
    batch = dict(_batches()[0], features={"fou": torch.randn(8, 5), "zer": torch.zeros(8, 3)})
    terms = m.distill_loss(batch)
    assert terms["cos"] > 0
    # every 'zer' row is missing: only 'fou' contributes
    only_fou = FeatureDistill(ViewNet((1, 8, 6), 2, hidden=16, dropout=0.0), teachers={"fou": 5})
    only_fou.student.load_state_dict(m.student.state_dict())
    only_fou.projectors["fou"].load_state_dict(m.projectors["fou"].state_dict())
    assert only_fou.distill_loss(batch)["cos"].item() == pytest.approx(terms["cos"].item())


def test_gradient_conflict_rate_counts_opposing_sources():
    from modules.ego_proxies import gradient_conflict_rate

    p = torch.zeros(2, requires_grad=True)
    agree = [(p * torch.tensor([1.0, 0.0])).sum(), (p * torch.tensor([1.0, 1.0])).sum()]
    assert gradient_conflict_rate([p], agree).item() == 0.0
    mixed = [*agree, (p * torch.tensor([-1.0, 0.0])).sum()]  # opposes both: 2 of 3 pairs conflict
    assert gradient_conflict_rate([p], mixed).item() == pytest.approx(2 / 3)
    assert gradient_conflict_rate([p], agree[:1]) is None


def test_vit_backbone_reads_images_and_video_clips_and_soups():
    """The frame-wise ViT: one feature per clip (CLS tokens averaged over frames), usable by the soup."""
    torch.manual_seed(0)
    video = ViewNet((4, 3, 16, 15), num_classes=5, hidden=32, num_layers=1, backbone="vit").eval()
    clip = torch.rand(2, 4, 3, 16, 15)
    c, logits = video.both(clip)
    assert c.shape == (2, 32) and logits.shape == (2, 5)
    # a clip of one repeated frame gives that frame's feature
    frame = clip[:, :1].expand(-1, 4, -1, -1, -1)
    torch.testing.assert_close(video.both(frame)[0], video.both(clip[:, 0])[0])
    with pytest.raises(ValueError, match="vit backbone"):
        ViewNet((240,), num_classes=5, backbone="vit")
    other = ViewNet((4, 3, 16, 15), num_classes=5, hidden=32, num_layers=1, backbone="vit").eval()
    soup, weights = learned_soup([video, other], loader=[], epochs=0)
    head = (video.head.weight + other.head.weight) / 2
    torch.testing.assert_close(soup.head.weight, head)
    assert weights.tolist() == [0.5, 0.5]


def test_ce_student_fit_logs_epoch_accuracy_on_the_test_views():
    """The CE arm through a real fit on the generated multi-view default: test/acc is the epoch-level
    accuracy (the template's stage metrics), logged even though the module adds its own test-epoch hook."""
    import lightning as L

    from datamodules.multiview import MultiViewDataModule

    dm = MultiViewDataModule(dataset="generated", batch_size=32, seed=1)
    dm.setup()
    x = next(iter(dm.train_dataloader()))["x"]
    model = FeatureDistill(ViewNet(tuple(x.shape[1:]), dm.num_classes, hidden=16))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert 0.0 <= result["test/acc"] <= 1.0 and "test/loss" in result
