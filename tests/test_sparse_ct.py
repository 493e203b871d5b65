"""GloReDi: FFC network, the distillation losses (golden values worked by hand), and the two-step trainer."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from scipy.fft import dctn
from torchmetrics.image import PeakSignalNoiseRatio

from modules.sparse_ct import (
    BandPassContrast,
    FourierUnit,
    GloReDi,
    LossScaler,
    Reconstructor,
    band_mask,
    dct2,
    directional_loss,
    supcon_loss,
)
from zoo.units import hu_to_mu, mu_to_hu


def test_supcon_loss_matches_the_hand_worked_value():
    # Rows 0,1 = (1, 0) with label 1; rows 2,3 = (0, 1) with label 0; T = 1. For every anchor the one positive
    # has e = 1, the two others e^-1 (+1e-5 each), so loss = log(1 + 2/e) = 0.551444 for each anchor.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    loss = supcon_loss(z, torch.tensor([1, 1, 0, 0]), temperature=1.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-4)


def test_directional_loss_is_one_minus_cosine_per_position():
    s = torch.zeros(1, 2, 1, 3)
    s[0, 0] = 1.0  # every position points along channel 0
    t = torch.zeros(1, 2, 1, 3)
    t[0, 0, 0, 0], t[0, 1, 0, 1], t[0, 0, 0, 2] = 2.0, 1.0, -1.0  # same, orthogonal, opposite
    assert directional_loss(s, t).item() == pytest.approx((0 + 1 + 2) / 3)


def test_dct2_is_scipys_unnormalised_dct_ii():
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    expected = dctn(x.numpy(), type=2, axes=(-2, -1))
    np.testing.assert_allclose(dct2(x).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_band_mask_is_the_official_square_annulus():
    mask = band_mask(64, 64, 0.1, 0.6)  # 6.4 < max(u, v) <= 38.4
    u, v = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    expected = (np.maximum(u, v) >= 7) & (np.maximum(u, v) <= 38)
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert int(mask.sum()) == 39**2 - 7**2
    with pytest.raises(ValueError, match="low < high"):
        band_mask(16, 16, 0.6, 0.1)


def test_fourier_unit_sees_the_whole_map():
    torch.manual_seed(0)
    fu = FourierUnit(2, 2).eval()
    x = torch.randn(1, 2, 16, 16)
    y = x.clone()
    y[0, :, 0, 0] += 1.0
    changed = (fu(x) - fu(y)).abs().sum(1)[0]
    assert changed[15, 15] > 1e-4 and changed[8, 8] > 1e-4  # far from the perturbed pixel


def test_reconstructor_shapes_and_bad_input():
    net = Reconstructor(ngf=4, n_downsampling=2, e_blocks=1, d_blocks=1)
    out, latent = net.both(torch.rand(2, 1, 16, 16))
    assert out.shape == (2, 1, 16, 16) and latent.shape == (2, 16, 4, 4)
    assert 0 <= out.min() and out.max() <= 1  # sigmoid head
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(2, 1, 18, 16))


def test_band_pass_contrast_waits_for_a_full_memory_then_pulls_pairs_together():
    torch.manual_seed(0)
    scl = BandPassContrast(memory=4, temperature=0.07, band=(0.1, 0.6))
    s = torch.randn(2, 3, 8, 8, requires_grad=True)
    t = torch.randn(2, 3, 8, 8)
    assert scl(s, t).item() == 0 and scl.filled == 2
    assert scl(s, t).item() == 0 and scl.filled == 4
    loss = scl(s, t)
    loss.backward()
    assert loss.item() > 0 and s.grad.abs().sum() > 0
    # the student matching the teacher lowers the loss against the same memory
    scl.filled, before = 4, scl.bank.clone()
    closer = scl(t.clone(), t)
    scl.bank.copy_(before)
    assert closer.item() < loss.item()


def test_loss_scaler_replaces_outliers_by_a_constant():
    scaler = LossScaler(window=50, factor=3.0)
    assert scaler(torch.tensor(1.0, requires_grad=True)).requires_grad
    clipped = scaler(torch.tensor(5.0, requires_grad=True))
    assert clipped.item() == 3.0 and not clipped.requires_grad


class _Snapshot(L.Callback):
    def __init__(self) -> None:
        self.after_first: dict[str, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch == 0 and hasattr(module, "teacher_encoder"):
            self.after_first = {k: v.clone() for k, v in module.teacher_encoder.state_dict().items()}


def _fit(tmp_path, ood_phantoms=0, **kwargs):
    from datamodules.ct import CTDataModule

    L.seed_everything(0)
    dm = CTDataModule(image_size=16, views=4, full_views=32, num_phantoms=16, batch_size=4, ood_phantoms=ood_phantoms)
    module = GloReDi(Reconstructor(ngf=4, e_blocks=1, d_blocks=1), scl_memory=4, finetune_epochs=1, **kwargs)
    snap = _Snapshot()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[snap], default_root_dir=tmp_path)  # fmt: skip
    start = {k: v.clone() for k, v in module.student.encoder.state_dict().items()}
    trainer.fit(module, datamodule=dm)
    return module, trainer.test(module, datamodule=dm, verbose=False)[0], snap, start


def test_gloredi_trains_teacher_then_student_and_finetunes_the_student_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    fresh = GloReDi(Reconstructor(ngf=4, e_blocks=1, d_blocks=1))
    teacher, student = fresh.teacher_encoder.state_dict(), fresh.student.encoder.state_dict()
    assert all(torch.equal(teacher[k], student[k]) for k in student)  # E2 starts as a copy of E1
    module, metrics, snap, start = _fit(tmp_path)
    trained = module.student.encoder.state_dict()
    assert not all(torch.equal(start[k], trained[k]) for k in trained)
    # the final epoch is pixel-loss fine-tuning: the teacher encoder's weights no longer move
    final = module.teacher_encoder.state_dict()
    assert all(
        torch.equal(snap.after_first[k], final[k]) for k in final if "running" not in k and "num_batches" not in k
    )
    assert {"test/psnr", "test/ssim", "test/psnr_fbp", "test/psnr_teacher"} <= set(metrics)
    assert 0 < metrics["test/ssim"] <= 1 and metrics["test/psnr"] > 0


def test_student_alone_trains_no_teacher_and_scores_the_out_of_family_set_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    module, metrics, _, _ = _fit(tmp_path, distill="none", ood_phantoms=4)
    assert not hasattr(module, "teacher_encoder") and "test/psnr_teacher" not in metrics
    # the body phantoms are scored on their own, never pooled with the heads
    assert {"test/psnr_ood", "test/ssim_ood", "test/psnr_fbp_ood"} <= set(metrics)
    assert metrics["test/psnr_fbp_ood"] != metrics["test/psnr_fbp"]
    dm = module.trainer.datamodule
    ood = next(iter(dm.test_dataloader()[1]))
    with torch.no_grad():
        from zoo.units import hu_window

        expected = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))(
            hu_window(ood["sparse"]), hu_window(ood["full"])
        )
    assert metrics["test/psnr_fbp_ood"] == pytest.approx(float(expected), abs=1e-4)
    # per-slice PSNR kept for evidence pairing: one per test slice, averaging to the logged metric
    scores = module.sample_scores()
    assert len(scores["test/psnr"]) == len(dm.split_index["test"]) and len(scores["test/psnr_ood"]) == 4
    assert sum(scores["test/psnr_ood"]) / 4 == pytest.approx(metrics["test/psnr_ood"], abs=1e-4)
    with pytest.raises(ValueError, match="distill must be"):
        GloReDi(Reconstructor(ngf=4, e_blocks=1, d_blocks=1), distill="kl")


def test_trained_student_exports_to_the_zoo_and_reloads_identically(tmp_path, monkeypatch):
    """The checkpoint carries the Reconstructor's spec, so `zoo export` rebuilds it; the zoo copy takes and
    returns HU (the CT input contract) and predicts what the trained student (mu) does, converted at its
    edges (and the teacher encoder is not exported)."""
    from zoo import export, store

    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    module, _, _, _ = _fit(tmp_path)
    checkpoint: dict = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    spec = checkpoint["distillzoo"]["student_spec"]
    assert spec["init_args"]["ngf"] == 4 and spec["class_path"] == "modules.sparse_ct.Reconstructor"
    assert spec["init_args"]["units"] == "hu" and module.student.units == "mu"
    tensors = export.student_tensors(checkpoint)
    assert not any(k.startswith("teacher") for k in tensors)
    net = store.build(spec)
    net.load_state_dict(tensors)
    mu = torch.rand(2, 1, 16, 16) * 0.3
    with torch.no_grad():
        hu = net.eval()(mu_to_hu(mu))
        assert torch.allclose(hu_to_mu(hu, clip=False), module.student.eval()(mu), atol=1e-6)


def test_global_skip_starts_from_the_input_and_self_reconstruction_needs_no_teacher():
    """With the official global skip and a zero-initialised residual head, an untrained reconstructor returns
    its FBP input exactly (route B of the evidence); the self-reconstruction stage refuses a teacher."""
    torch.manual_seed(0)
    net = Reconstructor(ngf=8, e_blocks=1, d_blocks=1, global_skip=True)
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(net(x), x)
    plain = Reconstructor(ngf=8, e_blocks=1, d_blocks=1)
    assert not torch.allclose(plain(x), x, atol=1e-2) and plain(x).min() >= 0  # sigmoid head: an image in [0, 1]
    with pytest.raises(ValueError, match="self-reconstruction warm start: it trains no teacher"):
        GloReDi(Reconstructor(ngf=8, e_blocks=1, d_blocks=1), distill="cosine", input_key="full")
