"""PH-Reg: the TTA targets scatter every view back onto the cells it shows, the student is the teacher plus
position-free registers with only the official set unlocked, and stale target files are refused."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from datamodules.images import SegmentationDataModule
from modules.core import Teacher
from modules.nets import TimmViT
from modules.phreg import (
    OutlierShare,
    PHReg,
    PositionalShare,
    RegisterViT,
    TTADense,
    phreg_loss,
    tta_dense,
    tta_views,
    view_cells,
)

VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}


def tiny_vit(seed: int = 0) -> TimmViT:
    torch.manual_seed(seed)
    return TimmViT(timm_kwargs=VIT)


def test_views_start_unshifted_stay_in_bounds_and_spread_out():
    views = tta_views((24, 32), views=10, generator=torch.Generator().manual_seed(0))
    assert views[0] == (0, 0, False) and len(set(views)) == 10
    assert all(abs(dy) <= 4 and abs(dx) <= 5 for dy, dx, _ in views)  # round(0.15 * 24), round(0.15 * 32)
    with pytest.raises(ValueError, match="would move every patch out of a 3 x 3 grid"):
        tta_views((3, 3), max_shift=3)


def test_scattering_the_views_back_recovers_a_shift_equivariant_map_exactly():
    """With a 'network' that averages each patch, every view shows the same cells the original does (moved,
    flipped, some vacated), so the TTA average is the plain map, cell for cell: the scatter is right."""
    images = torch.rand(2, 3, 40, 48)

    def dense(x):
        return F.avg_pool2d(x, 8)

    views = tta_views((5, 6), views=10, max_shift=2, generator=torch.Generator().manual_seed(1))
    assert any(flip for _, _, flip in views)
    assert torch.allclose(tta_dense(dense, images, views, 8), dense(images), atol=1e-6)
    cells = view_cells((2, 3), 0, 1, True)  # shifted right by one, then flipped: [[?, 1, 0], [?, 4, 3]] -> flip
    assert cells.tolist() == [1, 0, -1, 4, 3, -1]


def test_the_student_is_the_teacher_plus_position_free_registers_with_the_official_set_unlocked():
    teacher = tiny_vit()
    x = torch.rand(2, 3, 48, 64)  # another resolution than the teacher was made for
    plain = RegisterViT.from_vit(teacher, num_registers=0)
    assert torch.allclose(plain.dense_features(x), teacher.as_dynamic().dense_features(x), atol=1e-5)
    student = RegisterViT.from_vit(teacher, num_registers=4)
    assert student.dense_features(x).shape == (2, 32, 6, 8) and student(x).shape == (2, 10)
    assert student.forward_features(x).shape[1] == 4 + 1 + 48  # registers, CLS, patches
    unlocked = set(student.unlock("phreg"))
    assert "registers" in unlocked and "backbone.vit.pos_embed" in unlocked
    assert {n for n in unlocked if n.startswith("backbone.vit.blocks.")} == {
        n for n, _ in student.named_parameters() if n.startswith("backbone.vit.blocks.1.")
    }
    frozen = ("backbone.vit.blocks.0.", "backbone.vit.norm.", "backbone.vit.head.")
    assert not any(n.startswith(frozen) for n in unlocked)
    assert student.unlock("registers") == ["registers"]
    with pytest.raises(ValueError, match="num_registers=0 leaves nothing to train"):
        plain.unlock("registers")


def test_loss_terms_golden_values():
    s = torch.tensor([[[[1.0]], [[0.0]]]])  # [1, 2, 1, 1]
    t = torch.tensor([[[[0.0]], [[2.0]]]])
    terms = phreg_loss(s, t)
    assert terms["cosine"].item() == pytest.approx(1.0) and terms["mse"].item() == pytest.approx(2.5)


def test_artifact_scalars():
    torch.manual_seed(0)
    noise = torch.randn(64, 64, 4, 4)
    positional = torch.randn(1, 64, 4, 4).expand(64, -1, -1, -1)
    share = PositionalShare()
    share.update(positional)
    assert share.compute().item() == pytest.approx(1.0, abs=1e-6)
    share = PositionalShare()
    share.update(noise)
    assert share.compute().item() < 0.1
    spiky = noise.clone()
    spiky[:, :, 0, 0] *= 50  # one high-norm token per image: 1 in 16

    def share_of(features):
        metric = OutlierShare()
        metric.update(features)
        return metric.compute().item()

    # median + 3 MAD is about 2 sigma for Gaussian norms: a tail of ~2%; the spikes add their 1 in 16
    assert share_of(noise) < 0.04
    assert share_of(spiky) - share_of(noise) == pytest.approx(1 / 16, abs=0.01)


def test_a_fit_precomputes_the_targets_once_and_refuses_a_file_of_another_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    data = SegmentationDataModule(root=None, train_size=(32, 48), eval_size=(32, 48), train_transform="none",
                                  batch_size=8)  # fmt: skip
    module = PHReg(teacher=Teacher(tiny_vit()), num_registers=4, views=3)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    frozen_before = module.student.backbone.vit.blocks[0].attn.qkv.weight.clone()
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=data)
    (made,) = list((tmp_path / "cache").rglob("targets-*.safetensors"))
    assert module.train_targets.outputs["dense"].shape == (96, 32, 4, 6)
    assert all(torch.equal(teacher_before[k], v) for k, v in module.teacher.state_dict().items())
    assert torch.equal(module.student.backbone.vit.blocks[0].attn.qkv.weight, frozen_before)  # locked
    again = PHReg(teacher=Teacher(tiny_vit()), num_registers=4, views=3)
    again.trainer = None
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(again, datamodule=data)
    assert list((tmp_path / "cache").rglob("targets-*.safetensors")) == [made]  # the same teacher: reused
    other = PHReg(teacher=Teacher(tiny_vit(seed=1)), num_registers=4, views=3, target_file=str(made))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="outputs of another teacher.*expected sha256"):
        trainer.fit(other, datamodule=data)


def test_a_target_file_made_for_other_images_is_refused_naming_both_sample_hashes(tmp_path, monkeypatch):
    """A precomputed target file holds the rows of the images it was made for; a training set with an image it
    does not hold is refused before a step, naming the file's and the requested samples' hashes."""
    from datamodules.synthetic.scenes import write_scenes_folder

    monkeypatch.setenv("DISTILLZOO_CACHE", str(tmp_path / "cache"))
    root = write_scenes_folder(tmp_path / "scenes", {"train": 4, "val": 2, "test": 2}, size=(32, 48))
    data = SegmentationDataModule(root=str(root), train_transform="none", batch_size=4)
    teacher = tiny_vit()
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(PHReg(teacher=Teacher(teacher), num_registers=2, views=2), datamodule=data)
    (made,) = list((tmp_path / "cache").rglob("targets-*.safetensors"))
    for folder in ("train", "trainannot"):  # another image set: one frame is not the one the file was made for
        (root / folder / "0003.png").rename(root / folder / "0099.png")
    other = PHReg(teacher=Teacher(teacher), num_registers=2, views=2, target_file=str(made))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"made for other samples: 1 of the 4 .*'train/0099.png'.*file samples "
                                         r"sha256 [0-9a-f]{64}, requested [0-9a-f]{64}"):  # fmt: skip
        trainer.fit(other, datamodule=SegmentationDataModule(root=str(root), train_transform="none", batch_size=4))


def test_images_smaller_than_one_patch_are_refused_by_size():
    tta = TTADense(tiny_vit().as_dynamic(), views=3)
    with pytest.raises(ValueError, match=r"images of 6 x 40 px are smaller than one 8-px patch per side"):
        tta.dense_features(torch.rand(1, 3, 6, 40))
    assert tta.dense_features(torch.rand(1, 3, 8, 40)).shape == (1, 32, 1, 5)  # one patch row is enough


def test_held_out_targets_are_computed_once_and_are_the_live_ones(monkeypatch):
    """Validation reads the same TTA targets every epoch: computed on the first visit of a batch, then kept."""
    module = PHReg(teacher=Teacher(tiny_vit()), num_registers=2, views=3)
    batch = {"image": torch.rand(2, 3, 32, 48), "index": torch.tensor([4, 5])}
    calls = []
    live = module.targets_for
    monkeypatch.setattr(module, "targets_for", lambda images, seed: calls.append(seed) or live(images, seed))
    first, second = module.evaluate(batch, "val"), module.evaluate(batch, "val")
    assert calls == [4] and torch.equal(first["cos"], second["cos"])
    expected = phreg_loss(module.student.dense_features(batch["image"]), live(batch["image"], seed=4))
    assert first["mse"].item() == pytest.approx(expected["mse"].item(), rel=1e-6)
    module.evaluate(batch, "test")
    assert calls == [4, 4]  # another split is its own entry


def test_the_tta_teacher_is_a_drop_in_dense_backbone():
    teacher = tiny_vit().as_dynamic()
    tta = TTADense(teacher, views=4)
    x = torch.rand(1, 3, 32, 48)
    assert tta.dense_features(x).shape == teacher.dense_features(x).shape and tta.embed_dim == 32


def test_test_time_registers_move_the_register_neurons_off_the_patches():
    """After calibration the chosen neurons read 0 on every patch and their maximum on the extra token."""
    from modules.phreg import TestTimeRegisters

    torch.manual_seed(0)
    vit = tiny_vit().as_dynamic()
    ttr = TestTimeRegisters(vit, top_k=5)
    images = torch.rand(16, 3, 32, 48)
    neurons = ttr.calibrate(images)
    assert sum(len(v) for v in neurons.values()) == 5
    seen = {}
    block = next(iter(neurons))
    handle = vit.vit.blocks[block].mlp.act.register_forward_hook(lambda m, i, o: seen.__setitem__("act", o))
    try:
        features = ttr.dense_features(images[:2])
    finally:
        handle.remove()
    act = seen["act"][:, :, neurons[block]]  # the very tensor the shift then edits in place
    assert features.shape == (2, 32, 4, 6)
    assert torch.all(act[:, 1:-1] == 0) and torch.all(act[:, -1] >= act[:, 0])
    assert not torch.allclose(features, vit.dense_features(images[:2]))


def small_clip_tower():
    from open_clip.transformer import QuickGELU
    from open_clip.transformer import VisionTransformer as ClipTower

    torch.manual_seed(0)
    tower = ClipTower(image_size=32, patch_size=8, width=32, layers=2, heads=2, mlp_ratio=4.0, output_dim=16,
                      act_layer=QuickGELU)  # fmt: skip
    with torch.no_grad():  # open_clip starts some of these at zero; random values make the comparison bite
        tower.proj.normal_()
        for block in tower.transformer.resblocks:
            block.attn.in_proj_bias.normal_(std=0.1)
    return tower.eval()


def test_an_open_clip_tower_becomes_a_timm_vit_computing_the_same_embedding_and_value_path():
    """CLIP's path, offline: a small open_clip image tower converted through timm's OpenAI-CLIP mapping gives
    the same pooled projection on CLIP-normalised pixels, its dense features go through the projection, and
    the student's value-only last block is W_o (W_v LN1(x) + b_v) + b_o of the original block."""
    from modules.nets.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, from_open_clip
    from modules.phreg import value_path

    tower = small_clip_tower()
    vit = from_open_clip(tower).eval()
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(vit(x), tower(normalised), atol=1e-5)
        assert vit.dense_features(x).shape == (2, 16, 4, 4)  # patch tokens in the 16-d joint space
        tokens = torch.randn(2, 17, 32)
        block = tower.transformer.resblocks[-1]
        w, b = block.attn.in_proj_weight[64:], block.attn.in_proj_bias[64:]
        expected = block.attn.out_proj(F.linear(block.ln_1(tokens), w, b))
        assert torch.allclose(value_path(vit.vit.blocks[-1], tokens), expected, atol=1e-5)
    student = RegisterViT.from_vit(vit, num_registers=2, value_last_block=True)
    assert student.dense_features(torch.rand(1, 3, 48, 64)).shape == (1, 16, 6, 8)


def test_the_naclip_teacher_block_is_key_key_attention_plus_a_patch_gaussian_without_residual_or_mlp():
    """PH-Reg's CLIP teacher (NACLIP, augNaCLIP ``custom_attn``, 'naclip' + 'reduced'): the last block of the
    open_clip tower becomes out_proj(softmax(k k^T / sqrt(d) + omega) v), omega[(i,j),(k,l)] =
    exp(-((i-k)^2 + (j-l)^2) / (2 std^2)) on patches and 0 for CLS; the weights stay the plain tower's,
    the grid follows the input size, and the PH-Reg student built from it keeps the plain block."""
    import math

    from modules.nets.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, from_open_clip
    from modules.nets.vit import NACLIPBlock

    tower = small_clip_tower()
    plain, naclip = from_open_clip(tower).eval(), from_open_clip(tower, naclip_std=2.0).as_dynamic().eval()
    assert isinstance(naclip.vit.blocks[-1], NACLIPBlock)
    assert naclip.vit.state_dict().keys() == plain.vit.state_dict().keys()
    x = torch.rand(2, 3, 24, 32)  # a 3 x 4 grid, not the tower's 4 x 4
    normalised = (x - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = plain.as_dynamic().vit
        t = tokens.norm_pre(tokens._pos_embed(tokens.patch_embed(normalised)))
        t = tokens.blocks[0](t)  # the input of the last block, as the tower computes it
        block = tower.transformer.resblocks[-1]
        h = block.ln_1(t)
        w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
        k = F.linear(h, w[32:64], b[32:64]).view(2, 13, 2, 16).transpose(1, 2)
        v = F.linear(h, w[64:], b[64:]).view(2, 13, 2, 16).transpose(1, 2)
        cells = [(i, j) for i in range(3) for j in range(4)]
        omega = torch.zeros(13, 13)
        for a, (i, j) in enumerate(cells):
            for c, (m, n) in enumerate(cells):
                omega[1 + a, 1 + c] = math.exp(-((i - m) ** 2 + (j - n) ** 2) / (2 * 2.0**2))
        attention = (k @ k.transpose(-2, -1) / math.sqrt(16) + omega).softmax(-1)
        expected = block.attn.out_proj((attention @ v).transpose(1, 2).reshape(2, 13, 32))
        got = naclip.vit.blocks[-1](
            naclip.vit.blocks[0](
                naclip.vit.norm_pre(naclip.vit._pos_embed(naclip.vit.patch_embed(naclip.normalize(x))))
            )
        )
        assert torch.allclose(got, expected, atol=1e-5)
        assert naclip.dense_features(x).shape == (2, 16, 3, 4)
        assert not torch.allclose(naclip.dense_features(x), plain.as_dynamic().dense_features(x), atol=1e-3)
    student = RegisterViT.from_vit(naclip, num_registers=2, value_last_block=True)
    assert not any(isinstance(m, NACLIPBlock) for m in student.modules())
    with pytest.raises(ValueError, match="std > 0"):
        from_open_clip(tower, naclip_std=0.0)


def test_clip_weights_that_cannot_be_fetched_name_what_to_download(monkeypatch):
    from modules.nets.clip import clip_vit

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match=r"ViT-B-16.*openai.*create_model_and_transforms"):
        clip_vit("ViT-B-16", "openai")


def test_the_finetune_recipe_probes_the_published_student_on_the_embedded_default(tmp_path):
    """recipes/phreg/finetune.yaml: the frozen backbone is zoo:phreg-vit-camvid's register ViT with its weights,
    and only the probe head learns on the embedded road scenes (no download, no CamVid)."""
    import cli
    import zoo

    published = zoo.load("phreg-vit-camvid")
    result = cli.main(["fit", "--config=recipes/phreg/finetune.yaml", "--trainer.fast_dev_run=true",
                       f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    backbone, head = result.model.backbone, result.model.student
    assert isinstance(backbone, RegisterViT) and result.trainer.state.finished
    for k, v in published.state_dict().items():
        assert torch.equal(v, backbone.state_dict()[k]), k  # frozen: not one step moved it
    assert not any(p.requires_grad for p in backbone.parameters()) and all(p.requires_grad for p in head.parameters())
    assert head(torch.rand(1, published.embed_dim, 4, 6)).shape == (1, 11, 4, 6)
