"""The frozen linear segmentation probe: only the head learns, the backbone (an MAE encoder trained at 32 px)
runs at the segmentation resolution through an interpolated positional embedding, and mIoU ignores void."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import saved_weights

from datamodules.images import SegmentationDataModule
from modules.dense_probe import LinearProbe, dynamic_vit
from modules.g2sd import DistilledViT
from modules.nets import MaskedAutoencoder, TimmViT


def tiny_mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, decoder_dim=16,
                             decoder_depth=1, decoder_heads=2)  # fmt: skip


def test_the_probe_trains_only_its_head_on_a_frozen_backbone_at_another_resolution(tmp_path):
    mae = tiny_mae()
    module = LinearProbe(backbone=saved_weights(mae, tmp_path / "mae.safetensors"))
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    data = SegmentationDataModule(root=None, train_size=(64, 96), eval_size=(96, 128), batch_size=4)
    trainer = L.Trainer(max_steps=3, limit_val_batches=1, limit_test_batches=2, logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    after = module.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen
    optimised = {id(p) for g in module.optimizers().optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.student.parameters()}
    images = torch.rand(2, 3, 96, 128)
    assert module(images).shape == (2, 11, 96, 128)  # a 12 x 16 grid from a ViT made for 4 x 4
    # at the training resolution the probe's backbone computes exactly the MAE encoder's tokens
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(module.backbone.forward_features(x), mae.encoder.forward_features(x), atol=1e-5)
    (result,) = trainer.test(module, datamodule=data)
    assert 0.0 <= result["test/miou"] <= 1.0 and 0.0 <= result["test/acc"] <= 1.0


def test_classifiers_become_headless_dynamic_backbones_and_other_networks_are_refused():
    vit = TimmViT(timm_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2,
                               "num_classes": 10, "global_pool": "avg"})  # fmt: skip
    probe = dynamic_vit(vit)
    assert probe.num_classes == 0 and probe.forward_features(torch.rand(1, 3, 48, 64)).shape == (1, 1 + 48, 32)
    distilled = DistilledViT({"timm_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
                                              "num_heads": 2, "num_classes": 10}})  # fmt: skip
    assert dynamic_vit(distilled).embed_dim == 32
    with pytest.raises(TypeError, match="a dense probe reads a ViT"):
        dynamic_vit(torch.nn.Linear(3, 3), "zoo:linear")


def test_the_probe_reports_artifact_scalars_at_three_depths_and_the_cosine_to_a_tta_reference(tmp_path):
    """A PH-Reg student (registers dropped from the map) probed against its teacher's TTA target: the test
    logs mIoU, the artifact scalars at the middle, second-to-last and last blocks, and cos_tta."""
    from modules.phreg import RegisterViT

    torch.manual_seed(0)
    vit_kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 4, "num_heads": 2, "num_classes": 10}
    teacher = TimmViT(timm_kwargs=vit_kwargs)
    student = RegisterViT.from_vit(teacher, num_registers=2)
    module = LinearProbe(backbone=saved_weights(student, tmp_path / "s.safetensors"),
                         reference=saved_weights(teacher, tmp_path / "t.safetensors"))  # fmt: skip
    data = SegmentationDataModule(root=None, train_size=(32, 48), eval_size=(32, 48), batch_size=8)
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, limit_test_batches=2, logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    (result,) = trainer.test(module, datamodule=data)
    for key in ("miou", "outliers", "positional", "outliers_mid", "positional_penultimate", "cos_tta"):
        assert f"test/{key}" in result, key
    assert 0 <= result["test/positional"] <= 1 and -1 <= result["test/cos_tta"] <= 1
    # the untrained student is its teacher plus registers: close to the teacher's own TTA target already
    assert result["test/cos_tta"] > 0.5


def test_with_unaugmented_data_each_image_goes_through_the_backbone_once(tmp_path):
    module = LinearProbe(backbone=saved_weights(tiny_mae(), tmp_path / "mae.safetensors"))
    calls = []
    dense = module.backbone.dense_features
    module.backbone.dense_features = lambda x: (calls.append(len(x)), dense(x))[1]
    data = SegmentationDataModule(root=None, train_size=(32, 48), eval_size=(32, 48), train_transform="none",
                                  batch_size=16)  # fmt: skip
    trainer = L.Trainer(max_epochs=3, limit_val_batches=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert sum(calls) == 96 + 16  # the 96 training images and the one validation batch, each once in 3 epochs


def test_a_probe_for_other_classes_than_the_data_has_stops_naming_both(tmp_path):
    module = LinearProbe(backbone=saved_weights(tiny_mae(), tmp_path / "mae.safetensors"), num_classes=5)
    data = SegmentationDataModule(root=None, train_size=(32, 48), eval_size=(32, 48), batch_size=8)
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"the data has num_classes=11, the model 5.*--model.init_args.num_classes=11"):
        trainer.fit(module, datamodule=data)
