"""G2SD: the generic term's golden value, the shared mask and the teacher's truncated decoder, the
distillation token without a position, the specific-stage loss and starting from a pre-trained encoder; the
specific stage for segmentation (channel-wise distillation of the teacher segmenter's logits)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import saved_weights

from modules.core import Teacher
from modules.g2sd import (
    DistilledViT,
    GenericDistill,
    SegmentSpecificDistill,
    SpecificDistill,
    ViTSegmenter,
    channel_wise_divergence,
    generic_loss,
    load_encoder,
)
from modules.nets import MaskedAutoencoder, TimmViT
from zoo import specs

VIT = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 3}


def tiny_mae(dim: int = 32, decoder_dim: int = 16, decoder_depth: int = 2, seed: int = 0) -> MaskedAutoencoder:
    torch.manual_seed(seed)
    return MaskedAutoencoder(img_size=16, patch_size=4, embed_dim=dim, depth=2, num_heads=2, decoder_dim=decoder_dim,
                             decoder_depth=decoder_depth, decoder_heads=2)  # fmt: skip


def test_generic_loss_golden_value_worked_by_hand():
    # teacher [1, 3] -> LayerNorm without affine: mean 2, var 1 -> [-1, 1] (eps 1e-6 negligible);
    # student [0, 4]: |d| = 1 and 3; smooth-L1 beta 2: 0.5 * 1 / 2 = 0.25 and 3 - 1 = 2 -> mean 1.125
    loss = generic_loss(torch.tensor([[[0.0, 4.0]]]), torch.tensor([[[1.0, 3.0]]]))
    assert loss.item() == pytest.approx(1.125, abs=1e-5)


def test_generic_stage_shares_one_mask_and_stops_the_teacher_decoder_at_its_layer():
    teacher = tiny_mae(dim=48, decoder_dim=24, decoder_depth=4, seed=1)
    module = GenericDistill(tiny_mae(), Teacher(teacher), teacher_layer=2)
    ran, masks = [], []
    for k, block in enumerate(teacher.decoder.decoder_blocks):
        block.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
    for enc in (teacher.encoder, module.student.encoder):
        enc.register_forward_pre_hook(lambda m, a: masks.append(a[1].ids_keep.clone()))
    terms = module.distill_loss({"image": torch.rand(3, 3, 16, 16)})
    assert set(terms) == {"generic"} and ran == [0, 1] and torch.equal(masks[0], masks[1])
    terms["generic"].backward()
    assert module.projectors["decoder"][0].in_features == 16 and module.projectors["decoder"][2].out_features == 24
    assert all(p.grad is None for p in teacher.parameters())
    assert module.student.decoder.decoder_pred.weight.grad is None, "no pixel loss in the generic stage"
    with pytest.raises(ValueError, match=r"teacher_layer must be in 1..4, got 5"):
        GenericDistill(tiny_mae(), Teacher(teacher), teacher_layer=5)
    assert set(GenericDistill(tiny_mae(), None).distill_loss({"image": torch.rand(2, 3, 16, 16)})) == {"pixel"}


def test_the_distillation_token_has_no_position_and_the_heads_are_averaged():
    torch.manual_seed(0)
    net = DistilledViT({"timm_kwargs": VIT}).eval()
    assert net.backbone.vit.pos_embed.shape[1] == 1 + 16, "positions for CLS and patches only"
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        cls, dist = net.both(images)
        assert torch.allclose(net(images), (cls + dist) / 2)
        # a distillation token given a position would need 18 rows; the token is appended after them
        tokens = net.backbone.vit._pos_embed(net.backbone.vit.patch_embed(net.backbone.normalize(images)))
        assert tokens.shape[1] == 17
    rebuilt = specs.build(specs.module_spec(net))
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(images), net(images))


def test_specific_stage_loss_is_half_label_ce_and_half_teacher_argmax_ce():
    torch.manual_seed(0)
    student = DistilledViT({"timm_kwargs": VIT})
    teacher = TimmViT(timm_kwargs=VIT)
    module = SpecificDistill(student, Teacher(teacher))
    batch = {"image": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 2, 0])}
    terms = module.distill_loss(batch)
    cls, dist = student.both(batch["image"])
    with torch.no_grad():
        hard = teacher(batch["image"]).argmax(-1)
    assert terms["cls"].item() == pytest.approx(F.cross_entropy(cls, batch["label"]).item(), rel=1e-5)
    assert terms["dist"].item() == pytest.approx(F.cross_entropy(dist, hard).item(), rel=1e-5)
    assert module.weight_of("cls") == module.weight_of("dist") == 0.5
    plain = SpecificDistill(TimmViT(timm_kwargs=VIT), None)
    assert set(plain.distill_loss(batch)) == {"cls"} and plain.weight_of("cls") == 1.0


def test_fine_tuning_starts_from_a_pretrained_encoder_with_fresh_heads(tmp_path):
    mae = tiny_mae()
    path = saved_weights(mae, tmp_path / "mae.safetensors")
    student = DistilledViT({"timm_kwargs": VIT})
    fresh = load_encoder(student, path)
    assert set(fresh) == {"head.weight", "head.bias"}
    assert torch.equal(student.backbone.vit.blocks[0].attn.qkv.weight, mae.encoder.vit.blocks[0].attn.qkv.weight)
    wide = DistilledViT({"timm_kwargs": VIT | {"embed_dim": 48}})
    with pytest.raises(ValueError, match="does not fit the student ViT"):
        load_encoder(wide, path)


def test_fine_tuning_on_a_folder_with_other_classes_replaces_the_head_and_says_so(tmp_path, caplog):
    """A 10-class student on a 3-class folder gets fresh 3-class heads (logged) that the export spec records,
    so the fine-tuned network is rebuilt with them; a folder at a size the ViT was not made for is refused."""
    import lightning as L
    import numpy as np
    from PIL import Image

    from datamodules.images import ImageFolderDataModule

    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cow"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "folder" / name / f"{i}.png")
    data = ImageFolderDataModule(root=str(tmp_path / "folder"), image_size=32, batch_size=4, val_fraction=0.2)
    vit = VIT | {"img_size": 32, "num_classes": 10}
    module = SpecificDistill(student=DistilledViT({"timm_kwargs": vit}))
    assert module.student.num_classes == 10
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with caplog.at_level("INFO"):
        trainer.fit(module, datamodule=data)
    assert "the head is replaced" in caplog.text and "3" in caplog.text
    assert module.student.num_classes == 3 and module.student.backbone.num_classes == 3
    assert module.student(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    rebuilt = specs.build(specs.module_spec(module.student))
    rebuilt.load_state_dict(module.student.state_dict())  # the spec describes the fine-tuned heads
    small = ImageFolderDataModule(root=str(tmp_path / "folder"), image_size=24, batch_size=4, val_fraction=0.2)
    module = SpecificDistill(student=TimmViT(timm_kwargs=vit))
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="image_size 24 does not fit the student"):
        trainer.fit(module, datamodule=small)


def test_the_finetune_recipe_starts_from_the_zoo_encoder_on_the_embedded_default(tmp_path, capsys):
    """recipes/vit/finetune.yaml + teacher.yaml: the published MAE teacher's encoder, fine-tuned on a folder
    (here the embedded shapes, as on a fresh machine); the encoder's weights are the zoo's before the step."""
    import cli
    import zoo

    built = cli.lightning_main(
        ["--config=recipes/vit/finetune.yaml", "--config=recipes/vit/teacher.yaml", "--data.init_args.root=null"],
        run=False,
    )
    mae = zoo.load("mae-vit-cifar10")
    assert torch.equal(built.model.student.vit.blocks[3].mlp.fc1.weight, mae.encoder.vit.blocks[3].mlp.fc1.weight)
    assert (
        "encoder from zoo:mae-vit-cifar10; fresh: fc_norm.weight, fc_norm.bias, head.weight" in capsys.readouterr().out
    )
    result = cli.main(["fit", "--config=recipes/vit/finetune.yaml", "--config=recipes/vit/teacher.yaml",
                       "--data.init_args.root=null", "--trainer.fast_dev_run=true",
                       f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert result.trainer.state.finished and result.model.student.num_classes == 10


def test_channel_wise_divergence_is_the_official_spatial_softmax_cross_entropy_less_the_teacher_entropy():
    """Each class channel is a distribution over positions: the term is sum_positions p_T (log p_T - log p_S)
    * tau^2 averaged over images and channels, i.e. the official cross-entropy (cwd.py) minus the teacher's
    entropy; 0 where the maps agree, and positive, with the official gradient, where they do not."""
    torch.manual_seed(0)
    s, t, tau = torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 3, 4, 5), 2.0
    loss = channel_wise_divergence(s, t, tau)
    p_t = F.softmax(t.view(-1, 20) / tau, dim=1)
    official = torch.sum(-p_t * F.log_softmax(s.view(-1, 20) / tau, dim=1)) * tau**2 / (3 * 2)
    entropy = torch.sum(-p_t * torch.log(p_t)) * tau**2 / (3 * 2)
    assert loss.item() == pytest.approx((official - entropy).item(), rel=1e-5) and loss.item() > 0
    (grad,) = torch.autograd.grad(loss, s)
    (official_grad,) = torch.autograd.grad(official, s)
    assert torch.allclose(grad, official_grad, atol=1e-6)
    assert channel_wise_divergence(t, t, tau).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match=r"student \(2, 3, 4, 5\) != teacher \(2, 3, 2, 5\)"):
        channel_wise_divergence(s, t[:, :, :2], tau)


def segmenter(dim: int = 32, patch: int = 4, classes: int = 3, seed: int = 0) -> ViTSegmenter:
    torch.manual_seed(seed)
    return ViTSegmenter({"timm_kwargs": VIT | {"embed_dim": dim, "patch_size": patch}}, num_classes=classes)


def test_the_dense_specific_stage_distils_the_teacher_logits_channel_wise_beside_the_labels(tmp_path):
    """ce on the upsampled logits (ignore index left out) plus weight 10 x cwd on the patch-grid logits, a
    teacher on another grid resized to the student's; the encoder starts from an MAE; class counts must pair."""
    student, teacher = segmenter(), segmenter(dim=48, patch=8, seed=1)
    mae = tiny_mae()
    path = saved_weights(mae, tmp_path / "mae.safetensors")
    module = SegmentSpecificDistill(student=student, teacher=Teacher(teacher), init_encoder=path, ignore_index=3)
    assert torch.equal(module.student.backbone.vit.blocks[1].mlp.fc2.weight, mae.encoder.vit.blocks[1].mlp.fc2.weight)
    images, mask = torch.rand(2, 3, 16, 24), torch.randint(0, 4, (2, 16, 24))  # 3 = ignored
    terms = module.distill_loss({"image": images, "mask": mask})
    maps = module.student.logit_map(images)
    assert maps.shape == (2, 3, 4, 6) and module.student(images).shape == (2, 3, 16, 24)
    logits = F.interpolate(maps, size=(16, 24), mode="bilinear", align_corners=False)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, mask, ignore_index=3).item(), rel=1e-5)
    target = F.interpolate(teacher.logit_map(images), size=(4, 6), mode="bilinear", align_corners=False)
    assert terms["cwd"].item() == pytest.approx(channel_wise_divergence(maps, target).item(), rel=1e-5)
    assert module.loss_weights == {"ce": 1.0, "cwd": 10.0}
    with pytest.raises(ValueError, match="the teacher segments 5 classes, the student 3"):
        SegmentSpecificDistill(student=segmenter(), teacher=Teacher(segmenter(classes=5)))
    alone = SegmentSpecificDistill(student=segmenter(), ignore_index=3)  # plain fine-tuning: the labels only
    assert set(alone.distill_loss({"image": images, "mask": mask})) == {"ce"}


def test_the_tiny_dense_specific_recipe_fits_and_exports_a_segmenter_that_takes_reader_images(tmp_path):
    """recipes/g2sd/tiny_segment.yaml on the embedded scenes: both terms train, and the exported student,
    rebuilt from its spec, maps the datamodule's own images to logits at their size."""
    import cli

    result = cli.main(["fit", "--config=recipes/g2sd/tiny_segment.yaml", "--trainer.max_epochs=1",
                       "--test_after_fit=false", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                       f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    logged = result.trainer.logged_metrics
    assert {"train/ce", "train/cwd"} <= set(logged) and torch.isfinite(logged["train/cwd"])
    rebuilt = specs.build(specs.module_spec(result.model.student))
    rebuilt.load_state_dict(result.model.student.state_dict())
    batch = next(iter(result.datamodule.val_dataloader()))
    out = rebuilt.eval()(batch["image"])
    assert out.shape == (batch["image"].shape[0], 11, *batch["image"].shape[-2:])


def test_the_finetune_recipe_starts_from_the_published_g2sd_student_on_the_embedded_default(tmp_path):
    """recipes/g2sd/finetune.yaml: the network (a DistilledViT) and its weights are zoo:g2sd-vit-cifar10's before
    any step, and both heads train on the labels of the embedded rendered shapes (no teacher)."""
    import cli
    import zoo

    built = cli.lightning_main(["--config=recipes/g2sd/finetune.yaml"], run=False)
    published = zoo.load("g2sd-vit-cifar10")
    assert isinstance(built.model.student, DistilledViT) and built.model.teacher is None
    assert torch.equal(built.model.student.dist_token, published.dist_token)
    result = cli.main(["fit", "--config=recipes/g2sd/finetune.yaml", "--trainer.fast_dev_run=true",
                       f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert result.trainer.state.finished and result.model.student.num_classes == 10
    assert not torch.equal(result.model.student.head_dist.weight, published.head_dist.weight)
