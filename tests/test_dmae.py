"""DMAE: the feature term's golden value, the truncated teacher, the shared mask, and the no-teacher arm."""

import pytest
import torch

from modules.core import Teacher
from modules.dmae import DMAE, dmae_feature_loss
from modules.nets import MaskedAutoencoder
from zoo import specs


def tiny_mae(dim: int = 32, depth: int = 4, seed: int = 0) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(img_size=16, patch_size=4, embed_dim=dim, depth=depth, num_heads=2, decoder_dim=16,
                             decoder_depth=1, decoder_heads=2)  # fmt: skip


def test_feature_loss_golden_value_worked_by_hand():
    # student [3, 4] -> [0.6, 0.8]; teacher [2, 0] -> [1, 0]; L1 mean = (0.4 + 0.8) / 2 = 0.6
    student, teacher = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[2.0, 0.0]]])
    assert dmae_feature_loss(student, teacher).item() == pytest.approx(0.6)
    # L2 option: mean of squares = (0.16 + 0.64) / 2 = 0.4
    assert dmae_feature_loss(student, teacher, "l2").item() == pytest.approx(0.4)


def test_the_teacher_stops_at_its_aligned_block_with_the_same_features():
    mae = tiny_mae(depth=6).eval()
    images = torch.rand(2, 3, 16, 16)
    mask = mae.encoder.random_mask(2, 0.75, generator=torch.Generator().manual_seed(0))
    ran = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(mae.encoder.vit.blocks)]
    with torch.no_grad():
        _, (full,) = mae.encoder(images, mask, [3])
        ran.clear()
        cut = mae.encoder.forward_until(images, mask, 3)
    for h in hooks:
        h.remove()
    assert ran == [0, 1, 2, 3], "blocks after the aligned one must not run"
    assert torch.equal(cut, full)


def test_a_dmae_step_shares_the_teachers_mask_and_trains_only_the_student():
    teacher_net = tiny_mae(dim=48, depth=4, seed=1)
    module = DMAE(tiny_mae(dim=32, depth=2), Teacher(teacher_net), student_block=1, teacher_block=2)
    images = torch.rand(4, 3, 16, 16)
    seen = {}
    module.student.encoder.register_forward_pre_hook(lambda m, a: seen.update(student=a[1].ids_keep.clone()))
    original = module.teacher_encoder().forward_until

    def spy(images, mask, block):
        seen["teacher"] = mask.ids_keep.clone()
        return original(images, mask, block)

    module.teacher_encoder().forward_until = spy
    terms = module.distill_loss({"image": images})
    assert set(terms) == {"pixel", "distill"} and torch.equal(seen["student"], seen["teacher"])
    assert seen["student"].shape == (4, 4)  # 16 patches at mask 0.75
    (terms["pixel"] + terms["distill"]).backward()
    assert all(p.grad is None for p in teacher_net.parameters())
    assert module.projectors["features"].weight.grad is not None
    assert module.projectors["features"].weight.shape == (48, 32)


def test_without_a_teacher_it_is_mae_pretraining_and_bad_settings_are_refused():
    module = DMAE(tiny_mae(), None)
    assert set(module.distill_loss({"image": torch.rand(2, 3, 16, 16)})) == {"pixel"}
    with pytest.raises(ValueError, match=r"mask_ratio 0.99 leaves no visible patch of 16"):
        DMAE(tiny_mae(), None, mask_ratio=0.99)
    with pytest.raises(ValueError, match=r"teacher_block 9 is out of range for a teacher of 4 blocks"):
        DMAE(tiny_mae(), Teacher(tiny_mae()), student_block=1, teacher_block=9)
    other_grid = MaskedAutoencoder(img_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_dim=16,
                                   decoder_depth=1, decoder_heads=2)  # fmt: skip
    with pytest.raises(ValueError, match="must share the patch grid to share a mask"):
        DMAE(tiny_mae(), Teacher(other_grid), student_block=1, teacher_block=1)


def test_validation_mask_is_fixed_so_val_pixel_loss_compares_across_epochs():
    module = DMAE(tiny_mae(), None).eval()
    batch = {"image": torch.rand(3, 3, 16, 16), "index": torch.tensor([5, 6, 7])}
    with torch.no_grad():
        assert torch.equal(module.evaluate(batch, "val")["pixel"], module.evaluate(batch, "val")["pixel"])


def test_the_mae_exports_and_rebuilds_identically():
    mae = tiny_mae().eval()
    rebuilt = specs.build(specs.module_spec(mae))
    rebuilt.load_state_dict(mae.state_dict())
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), mae(images))


def test_the_truncated_teacher_gives_the_official_whole_teacher_loss():
    teacher = Teacher(tiny_mae(dim=48, depth=4, seed=1))
    student = tiny_mae(dim=32, depth=2)
    cut = DMAE(student, teacher, student_block=1, teacher_block=1)
    whole = DMAE(student, teacher, student_block=1, teacher_block=1, truncate_teacher=False)
    whole.projectors.load_state_dict(cut.projectors.state_dict())
    images = torch.rand(2, 3, 16, 16)
    torch.manual_seed(3)
    a = cut.distill_loss({"image": images})
    torch.manual_seed(3)
    b = whole.distill_loss({"image": images})
    assert torch.equal(a["distill"], b["distill"]) and torch.equal(a["pixel"], b["pixel"])


def test_an_image_size_the_patches_do_not_fit_is_refused_before_training(tmp_path):
    """MAE at 16 px with 4-px patches, given 30-px images: a clear error naming both sizes, not a reshape
    error inside patchify."""
    import lightning as L

    from datamodules.images import ImageFolderDataModule
    from modules.dmae import MAEPretrain

    data = ImageFolderDataModule(root=None, image_size=30, labels=False, batch_size=8)
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"image_size 30 does not fit the student.*\(30, 30\)"):
        trainer.fit(MAEPretrain(tiny_mae()), datamodule=data)


def test_the_finetune_recipe_starts_from_the_published_dmae_student_on_the_embedded_default(tmp_path):
    """recipes/dmae/finetune.yaml: the network and weights are zoo:dmae-vit-cifar10's before any step, and it
    trains on the embedded rendered shapes (10 classes: the head is kept; another count replaces it, as
    tests/test_g2sd.py shows for the same module)."""
    import cli
    import zoo

    built = cli.lightning_main(["--config=recipes/dmae/finetune.yaml"], run=False)
    published = zoo.load("dmae-vit-cifar10")
    assert torch.equal(built.model.student.vit.blocks[2].attn.qkv.weight, published.vit.blocks[2].attn.qkv.weight)
    result = cli.main(["fit", "--config=recipes/dmae/finetune.yaml", "--trainer.fast_dev_run=true",
                       f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert result.trainer.state.finished and result.datamodule.num_classes == result.model.student.num_classes == 10
    assert not torch.equal(result.model.student.vit.head.weight, published.vit.head.weight)  # one step was taken
