"""CNN-ViT collaborative segmentation (modules/cnn_vit.py): the students, the selection rules of HFD, region-wise
and pixel-wise BSD, the stop-gradients, and exporting one student of the pair; the label-noise option of the
segmentation datamodule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import saved_weights
from torch import nn

from datamodules.images import SegmentationDataModule, read_image
from datamodules.images.segmentation import corrupt_blobs
from datamodules.synthetic.scenes import write_scenes_folder
from modules.cnn_vit import CollaborativeSeg, DeepLabV3Plus, SegFormer, SegParts, kl_per_pixel, region_means
from zoo import export, store
from zoo.specs import module_spec


def tiny_cnn(num_classes: int = 11) -> DeepLabV3Plus:
    kwargs = {"channels": (8, 8, 16, 16), "stem_width": 8, "layers": (1, 1, 1, 1)}
    return DeepLabV3Plus(num_classes, backbone_kwargs=kwargs, aspp_channels=8, aspp_rates=(1, 2), low_channels=8,
                         decoder_channels=8)  # fmt: skip


def tiny_vit(num_classes: int = 11) -> SegFormer:
    kwargs = {"embed_dims": (8, 8, 16, 16), "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)}
    return SegFormer(num_classes, backbone_kwargs=kwargs, decoder_dim=8)


class Fixed(nn.Module):
    """A 'student' whose parts are given tensors (logits as a parameter, so its step has something to train)."""

    def __init__(self, logits: torch.Tensor, low: torch.Tensor | None = None, features: torch.Tensor | None = None):
        super().__init__()
        b, c, h, w = logits.shape
        self.logits = nn.Parameter(logits.clone())
        self.low = nn.Parameter(torch.randn(b, 4, h, w) if low is None else low.clone())
        self.features = nn.Parameter(torch.randn(b, 4, h, w) if features is None else features.clone())
        self.low_dim = self.feature_dim = 4
        self.num_classes = c

    def parts(self, x: torch.Tensor) -> SegParts:
        return SegParts(self.low, self.features, self.logits)


def one_hot_logits(labels: torch.Tensor, classes: int = 3, scale: float = 4.0) -> torch.Tensor:
    return scale * nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def module(cnn: nn.Module, vit: nn.Module, **kwargs) -> CollaborativeSeg:
    m = CollaborativeSeg(cnn, vit, num_classes=cnn.num_classes, ignore_index=255, **kwargs)
    m.log = lambda *a, **k: None  # no trainer here
    return m


@pytest.mark.parametrize("net", [tiny_cnn, tiny_vit])
def test_students_take_images_in_0_1_at_any_size_and_give_stride_4_parts(net):
    student = net()
    x = torch.rand(2, 3, 50, 70)
    assert student(x).shape == (2, 11, 50, 70)
    low, features, logits = student.parts(torch.rand(1, 3, 64, 96))
    assert low.shape[-2:] == features.shape[-2:] == logits.shape[-2:] == (16, 24)
    assert low.shape[1] == student.low_dim and features.shape[1] == student.feature_dim
    with pytest.raises(ValueError, match=r"RGB images \[B, 3, H, W\]"):
        student(torch.rand(2, 1, 32, 32))


def test_region_means_sum_each_cell_and_a_grid_that_does_not_divide_names_both():
    values = torch.arange(16.0).view(1, 4, 4)
    weights = torch.ones(1, 4, 4)
    weights[0, 0, 0] = 0
    total, count = region_means(values, weights, 2)
    assert total.tolist() == [[[0 + 1 + 4 + 5 - 0, 2 + 3 + 6 + 7], [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]]]
    assert count.tolist() == [[[3, 4], [4, 4]]]
    with pytest.raises(ValueError, match=r"region grid 3x3 does not divide the 4x4 map"):
        region_means(values, weights, 3)


def test_pixel_wise_bsd_flows_only_from_the_right_student_to_the_wrong_one():
    labels = torch.tensor([[[0, 1], [2, 0]]])  # [1, 2, 2]
    mask = labels.clone()
    mask[0, 1, 1] = 255  # ignored: never selected
    cnn_says = torch.tensor([[[0, 1], [0, 1]]])  # right at (0,0), (0,1); wrong at (1,0)
    vit_says = torch.tensor([[[0, 0], [2, 2]]])  # right at (0,0), (1,0); wrong at (0,1)
    m = module(Fixed(one_hot_logits(cnn_says)), Fixed(one_hot_logits(vit_says)), hfd=False, region=False)
    batch = {"image": torch.rand(1, 3, 2, 2), "mask": mask}
    shared = m.shared_forward(batch)
    assert shared["cnn"]["taught"].tolist() == [[[False, False], [True, False]]]  # ViT right, CNN wrong
    assert shared["vit"]["taught"].tolist() == [[[False, True], [False, False]]]
    assert int(shared["selected"]) == 2
    kl_cnn = kl_per_pixel(one_hot_logits(vit_says), one_hot_logits(cnn_says), 1.0)
    terms = m.step_loss("cnn", batch, shared)
    assert set(terms) == {"seg", "logits"}
    assert torch.isclose(terms["logits"], kl_cnn[0, 1, 0] / 2)
    assert kl_cnn[0, 0, 0] == 0 and kl_cnn[0, 1, 1] > 0  # agreeing pixel, ignored pixel: neither counted
    per_labelled = module(m.student["cnn"], m.student["vit"], hfd=False, region=False, pixel_normaliser="labelled")
    assert torch.isclose(per_labelled.step_loss("cnn", batch, per_labelled.shared_forward(batch))["logits"],
                         kl_cnn[0, 1, 0] / 3)  # 3 labelled pixels  # fmt: skip


def test_dml_transfers_at_every_labelled_pixel_and_independent_training_has_only_the_segmentation_loss():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mask = torch.randint(0, 3, (2, 4, 4))
    mask[0, 0] = 255
    batch = {"image": torch.rand(2, 3, 4, 4), "mask": mask}
    m = module(Fixed(a), Fixed(b), hfd=False, region=False, logits="all")
    terms = m.step_loss("vit", batch, m.shared_forward(batch))
    valid = mask != 255
    assert torch.isclose(terms["logits"], kl_per_pixel(a, b, 1.0)[valid].mean())
    alone = module(Fixed(a), Fixed(b), hfd=False, region=False, logits="none")
    terms = alone.step_loss("cnn", batch, alone.shared_forward(batch))
    expected = nn.functional.cross_entropy(a, mask, ignore_index=255)
    assert set(terms) == {"seg"} and torch.isclose(terms["seg"], expected)


def test_region_wise_bsd_teaches_the_worse_student_where_the_other_has_the_lower_loss():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    right, wrong = one_hot_logits(labels), one_hot_logits(torch.ones_like(labels))
    cnn_logits = torch.cat([right[..., :2], wrong[..., 2:]], dim=-1)  # CNN right on the left half
    vit_logits = torch.cat([wrong[..., :2], right[..., 2:]], dim=-1)  # ViT right on the right half
    m = module(Fixed(cnn_logits), Fixed(vit_logits), hfd=False, logits="none", region_grid=2)
    batch = {"image": torch.rand(1, 3, 4, 4), "mask": labels}
    shared = m.shared_forward(batch)
    assert shared["cnn"]["region_taught"].tolist() == [[[False, True], [False, True]]]
    assert shared["vit"]["region_taught"].tolist() == [[[True, False], [True, False]]]
    terms = m.step_loss("cnn", batch, shared)
    d = (shared["cnn"]["region"] - shared["vit"]["region"]).pow(2).mean(1)[0]
    assert torch.isclose(terms["region"], d[:, 2:].mean() / 2)  # two of four regions, each a 2x2 mean


def test_each_step_trains_only_its_own_student_and_projectors():
    torch.manual_seed(0)
    m = module(Fixed(torch.randn(2, 3, 8, 8)), Fixed(torch.randn(2, 3, 8, 8)), region_grid=2, hfd_dim=4, region_dim=4)
    batch = {"image": torch.rand(2, 3, 8, 8), "mask": torch.randint(0, 3, (2, 8, 8))}
    shared = m.shared_forward(batch)
    terms = m.step_loss("cnn", batch, shared)
    assert set(terms) == {"seg", "hfd", "region", "logits"}
    sum(terms.values()).backward()
    for name, p in m.named_parameters():
        own = name.startswith("student.cnn.") or name.startswith("projectors.") and name.split(".")[1].endswith("_cnn")
        assert (p.grad is not None) == own, name
    assert {id(p) for mod in m.step_modules("vit") for p in mod.parameters()} == {
        id(p) for n, p in m.named_parameters() if "vit" in n
    }


def test_mutual_feature_mimicry_cannot_collapse_to_a_constant():
    """The projectors normalise without learnable scale: the mimicked features keep unit variance per channel."""
    torch.manual_seed(0)
    m = module(Fixed(torch.randn(4, 3, 8, 8)), Fixed(torch.randn(4, 3, 8, 8)), region=False, logits="none")
    assert not any(p.requires_grad for n, p in m.projectors.named_parameters() if ".1." in n)
    out = m.shared_forward({"image": torch.rand(4, 3, 8, 8), "mask": torch.zeros(4, 8, 8, dtype=torch.long)})
    std = out["cnn"]["hfd"].transpose(0, 1).flatten(1).std(1)
    assert torch.allclose(std, torch.ones_like(std), atol=0.05)


def test_a_region_grid_that_does_not_divide_the_crop_stops_the_step_naming_it():
    m = module(Fixed(torch.randn(1, 3, 6, 6)), Fixed(torch.randn(1, 3, 6, 6)), region_grid=4)
    with pytest.raises(ValueError, match=r"region grid 4x4 does not divide the 6x6 map"):
        m.shared_forward({"image": torch.rand(1, 3, 6, 6), "mask": torch.zeros(1, 6, 6, dtype=torch.long)})


def test_module_refuses_students_without_parts_or_with_other_classes():
    with pytest.raises(ValueError, match="must offer parts"):
        CollaborativeSeg(nn.Conv2d(3, 11, 1), tiny_vit())
    with pytest.raises(ValueError, match="num_classes=11"):
        CollaborativeSeg(tiny_cnn(5), tiny_vit())
    with pytest.raises(ValueError, match="logits must be one of"):
        CollaborativeSeg(tiny_cnn(), tiny_vit(), logits="some")


def test_one_checkpoint_exports_either_student_which_takes_the_readers_raw_images(tmp_path):
    folder = write_scenes_folder(tmp_path / "scenes", sizes={"train": 8, "val": 4, "test": 4}, size=(32, 48))
    dm = SegmentationDataModule(str(folder), train_size=(32, 48), batch_size=4)
    m = CollaborativeSeg(tiny_cnn(), tiny_vit(), region_grid=2)
    trainer = L.Trainer(max_steps=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, limit_val_batches=1)  # fmt: skip
    trainer.fit(m, dm)
    ckpt = tmp_path / "pair.ckpt"
    trainer.save_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"holds 2 students \(cnn, vit\).*--part"):
        export.export(ckpt, "pair-test", weights_dir=tmp_path / "w", entries_dir=tmp_path / "e")
    image = read_image(next((folder / "test").iterdir())).float().div(255)[None]  # the reader's raw output
    for part in ("cnn", "vit"):
        meta = {"method": "CNN-ViT collaborative", "task": "semantic segmentation"}
        path = export.export(ckpt, f"{part}-test", meta, tmp_path / "w", tmp_path / "e", part=part)
        loaded = store.load(str(path)).eval()
        assert type(loaded) is type(m.student[part])
        with torch.no_grad():
            assert torch.allclose(loaded(image), m.student[part].eval()(image), atol=1e-5)
            assert loaded(image).shape == (1, 11, 32, 48)


def test_label_noise_relabels_the_share_in_blobs_of_training_labels_only_and_is_fixed():
    mask = torch.randint(0, 11, (60, 80))
    mask[:6] = 11
    noisy = corrupt_blobs(mask, 0.1, 11, 11, seed=3)
    changed = (noisy != mask).float().sum() / (mask != 11).sum()
    assert 0.1 <= changed < 0.16
    assert (noisy[:6] == 11).all() and torch.equal(noisy, corrupt_blobs(mask, 0.1, 11, 11, seed=3))
    assert not torch.equal(noisy, corrupt_blobs(mask, 0.1, 11, 11, seed=4))
    clean = SegmentationDataModule(train_transform="none")
    dm = SegmentationDataModule(train_transform="none", label_noise=0.1)
    for split, touched in (("train", True), ("val", False), ("test", False)):
        a, b = clean.dataset(split)[0]["mask"], dm.dataset(split)[0]["mask"]
        assert (not torch.equal(a, b)) == touched, split
    with pytest.raises(ValueError, match="label_noise"):
        SegmentationDataModule(label_noise=1.5)


def test_crops_are_cut_from_the_rescaled_base_size():
    dm = SegmentationDataModule(train_size=(48, 64), crop_size=(16, 32), batch_size=2)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[-2:] == batch["mask"].shape[-2:] == (16, 32)


def test_data_with_other_classes_stops_the_fit_naming_the_flag(tmp_path):
    m = CollaborativeSeg(tiny_cnn(5), tiny_vit(5), num_classes=5)
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"data has num_classes=11, the model 5.*--model.init_args.num_classes=11"):
        trainer.fit(m, SegmentationDataModule(train_size=(32, 48), batch_size=2))


def test_students_given_as_weights_start_from_them_and_a_head_for_other_classes_is_replaced(tmp_path):
    """How a fine-tuning run continues from a published pair: each student from its weights file,
    every tensor as exported; with other classes only the classifier is new (and its spec says so)."""
    paths = {}
    for part, net in (("cnn", tiny_cnn()), ("vit", tiny_vit())):
        paths[part] = saved_weights(net, tmp_path / f"{part}.safetensors")
    same = CollaborativeSeg(paths["cnn"], paths["vit"])
    other = CollaborativeSeg(paths["cnn"], paths["vit"], num_classes=5)
    for part in ("cnn", "vit"):
        saved = store.load(paths[part]).state_dict()
        loaded = same.student[part].state_dict()
        assert same.student[part].training and all(torch.equal(v, saved[k]) for k, v in loaded.items())
        kept = {k: v for k, v in other.student[part].state_dict().items() if not k.startswith("classifier.")}
        assert kept and all(torch.equal(v, saved[k]) for k, v in kept.items())
        assert other.student[part].classifier.out_channels == 5 and other.student[part].init_args["num_classes"] == 5
        assert store.build(module_spec(other.student[part])).num_classes == 5


def test_the_finetune_recipe_continues_the_published_pair_on_the_embedded_default(tmp_path):
    """recipes/cnn_vit/finetune.yaml: both students are the published entries' weights before any step (one
    run's pair: the CNN of zoo:collab-deeplabv3p-camvid, the ViT of zoo:collab-segformer-camvid), and one
    collaborative step on the embedded road scenes moves both."""
    import cli
    import zoo

    built = cli.lightning_main(["--config=recipes/cnn_vit/finetune.yaml"], run=False)
    published = {"cnn": zoo.load("collab-deeplabv3p-camvid"), "vit": zoo.load("collab-segformer-camvid")}
    for part, net in published.items():
        mine = built.model.student[part].state_dict()
        assert all(torch.equal(v, mine[k]) for k, v in net.state_dict().items()), part
    result = cli.main(["fit", "--config=recipes/cnn_vit/finetune.yaml", "--trainer.fast_dev_run=true",
                       f"--trainer.default_root_dir={tmp_path}"])  # fmt: skip
    assert result.trainer.state.finished
    for part, net in published.items():
        assert not torch.equal(result.model.student[part].classifier.weight, net.classifier.weight), part
