"""The input contract of every published entry, on what the field's standard reader returns.

For each entry the reader's raw output (the real dataset when it is here, else the embedded sample of the
same layout) must match the metafile's typed ``input`` block, and ``zoo.load(name)`` must take it with no
step in between. Where the card states the published weights' own score (``published_model``), it is
recomputed here on that raw input and must agree, so a broken contract or a wrong card fails CI.

``python tests/test_entry_contracts.py`` prints every entry's current score (run it after republishing).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import SHARED_DATA  # noqa: E402

import zoo  # noqa: E402
from zoo.units import hu_window, mu_to_hu  # noqa: E402

needs = {
    "planetoid": pytest.mark.skipif(not (SHARED_DATA / "planetoid").is_dir(), reason="needs Cora (data:planetoid)"),
    "cifar10": pytest.mark.skipif(not (SHARED_DATA / "cifar10").is_dir(), reason="needs CIFAR-10 (data:cifar10)"),
    "camvid": pytest.mark.skipif(not (SHARED_DATA / "camvid").is_dir(), reason="needs CamVid (data:camvid)"),
}


def cifar_test(labels: bool = True):
    """The CIFAR-10 test images as the ImageFolder reader returns them (float RGB in [0, 1], 32 x 32)."""
    from datamodules.images import ImageFolderDataModule

    dm = ImageFolderDataModule(root="data:cifar10", image_size=32, labels=labels, batch_size=128)
    dm.setup("test")
    return dm


def image_accuracy(name: str) -> float:
    """Top-1 (%) of a zoo classifier on the CIFAR-10 test images exactly as the reader returns them."""
    meta, net, dm = zoo.get(name).meta, zoo.load(name), cifar_test()
    right = seen = 0
    with torch.no_grad():
        loaders = dm.test_dataloader()
        for batch in loaders[0] if isinstance(loaders, list) else loaders:
            meta.input.check(batch["image"], f"{name}: the reader's test images")
            right += int((net(batch["image"]).argmax(-1) == batch["label"]).sum())
            seen += len(batch["label"])
    return 100 * right / seen


def mae_pixel_loss(name: str) -> float:
    """An MAE's masked-patch pixel loss on the CIFAR-10 test images under the evaluation's fixed masks (the
    module's test step, which seeds each batch's mask with its first sample index)."""
    import lightning as L

    from modules.dmae import MAEPretrain

    meta, dm = zoo.get(name).meta, cifar_test(labels=False)
    meta.input.check(next(iter(dm.test_dataloader()))["image"], f"{name}: the reader's test images")
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.test(MAEPretrain(zoo.load(name).train()), datamodule=dm, verbose=False)
    return round(float(result["test/pixel"]), 4)


def dense_cosine_to_tta(name: str, teacher: str) -> float:
    """The mean cosine of a dense student's ``dense_features`` to its teacher's 10-view TTA target on the CamVid
    test frames as the segmentation reader returns them (float RGB in [0, 1], resized to the card's 72 x 96),
    the features' shape checked against the card's call ([B, D, H/4, W/4])."""
    from datamodules.images import SegmentationDataModule
    from modules.dense_probe import load_backbone

    meta, net, target = zoo.get(name).meta, zoo.load(name), load_backbone(teacher, tta_views=10)
    dm = SegmentationDataModule(root="data:camvid/CamVid", eval_size=(72, 96), batch_size=26)
    dm.setup("test")
    cosines = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            images = batch["image"]
            meta.input.check(images, f"{name}: the reader's test images")
            features = net.dense_features(images)
            assert features.shape == (len(images), net.embed_dim, 72 // 4, 96 // 4), features.shape
            cosines.append(torch.nn.functional.cosine_similarity(features, target.dense_features(images), dim=1))
    return round(float(torch.cat(cosines).mean()), 4)


def camvid_miou(name: str) -> float:
    """mIoU (x 100, the 11 classes, void ignored) of a segmentation student on the CamVid test frames as the
    segmentation reader returns them (float RGB in [0, 1], resized to the card's 180 x 240), the logits' shape
    checked against the card's call ([B, 11, H, W])."""
    from torchmetrics.classification import MulticlassJaccardIndex

    from datamodules.images import SegmentationDataModule

    meta, net = zoo.get(name).meta, zoo.load(name)
    dm = SegmentationDataModule(root="data:camvid/CamVid", eval_size=(180, 240), batch_size=13)
    dm.setup("test")
    miou = MulticlassJaccardIndex(11, average="macro", ignore_index=11)
    with torch.no_grad():
        for batch in dm.test_dataloader():
            images = batch["image"]
            meta.input.check(images, f"{name}: the reader's test images")
            logits = net(images)
            assert logits.shape == (len(images), 11, *images.shape[-2:]), logits.shape
            miou.update(logits, batch["mask"])
    return round(100 * float(miou.compute()), 2)


def prompt_teacher_absrel(name: str) -> float:
    """The prompt teacher's pooled AbsRel on the generated test scenes (held-out focal lengths), each prompted with
    1% of its own noisy source, through the module's own test step (the training set is not needed: one scene)."""
    import lightning as L

    from datamodules.images import MetricDepthDataModule
    from modules.metric_depth import PromptDepthTeacher

    dm = MetricDepthDataModule(train_samples=1, val_samples=1, test_samples=512, batch_size=32)
    dm.setup()
    zoo.get(name).meta.input.check(next(iter(dm.test_dataloader()))["image"], f"{name}: the generated test images")
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.test(PromptDepthTeacher(zoo.load(name)), datamodule=dm, verbose=False)
    return round(float(result["test/absrel"]), 4)


def node_accuracy(name: str, graph, use_graph: bool = True) -> float:
    """Test-mask accuracy (%) of a node classifier on the graph exactly as the reader returned it."""
    meta, net = zoo.get(name).meta, zoo.load(name)
    meta.input.check(graph.x, f"{name}: the reader's node features")
    with torch.no_grad():
        logits = net(graph.x, graph.edge_index) if use_graph else net(graph.x)
    return 100 * float((logits.argmax(-1) == graph.y)[graph.test_mask].float().mean())


def cora():
    from datamodules.graphs import PlanetoidDataModule

    return PlanetoidDataModule(root="data:planetoid", name="Cora")._load_planetoid()  # torch_geometric's Planetoid


def csbm():
    from datamodules.graphs import PlanetoidDataModule

    dm = PlanetoidDataModule(root=None)
    dm.setup()
    return dm.full_graph


def uci_accuracy() -> float:
    """The UNIEGO student on the UCI pixel view as the reader returns it (values 0-6), test split of seed 0."""
    from datamodules.multiview import MultiViewDataModule
    from datamodules.multiview.mfeat import PIX_SHAPE, read_uci_mfeat

    raw, y = read_uci_mfeat()
    x = torch.from_numpy(raw["pix"]).float().reshape(-1, *PIX_SHAPE)
    name = "uniego-uci-mfeat"
    zoo.get(name).meta.input.check(x, "the UCI pixel view")
    dm = MultiViewDataModule(dataset="uci")
    dm.setup()
    test = dm.split_index["test"]
    with torch.no_grad():
        logits = zoo.load(name)(x[test])
    return 100 * float((logits.argmax(-1) == torch.as_tensor(y)[test]).float().mean())


def uci_view_accuracy(name: str, view: str) -> float:
    """A UNIEGO view teacher on its view as the datamodule standardises it ([B, width]): test accuracy (%)."""
    from datamodules.multiview import MultiViewDataModule

    dm = MultiViewDataModule(dataset="uci", input_views=[view])
    dm.setup()
    x = dm.views[view]
    zoo.get(name).meta.input.check(x, f"the {view!r} view")
    test = dm.split_index["test"]
    with torch.no_grad():
        logits = zoo.load(name)(x[test])
    return 100 * float((logits.argmax(-1) == dm.y[test]).float().mean())


def uci_pixel_contract(name: str) -> None:
    """A UNIEGO pixel-view network (init, proxy, soup) takes the raw UCI pixel view (values 0-6)."""
    from datamodules.multiview.mfeat import PIX_SHAPE, read_uci_mfeat

    x = torch.from_numpy(read_uci_mfeat()[0]["pix"]).float().reshape(-1, *PIX_SHAPE)
    zoo.get(name).meta.input.check(x, "the UCI pixel view")
    with torch.no_grad():
        assert zoo.load(name)(x[:8]).shape == (8, 10)


def uci_outputs_contract(name: str, train_only: bool) -> None:
    """A UNIEGO teacher-outputs entry serves rows for the datamodule's sample ids, shaped as its block says."""
    from datamodules.multiview import MultiViewDataModule
    from zoo import store

    dm = MultiViewDataModule(dataset="uci")
    dm.setup()
    ids = [dm.ids[i] for i in dm.split_index["train"].tolist()] if train_only else dm.ids
    found = store.read_outputs(f"zoo:{name}", ids)
    zoo.get(name).meta.input.check(found.outputs["features"], f"{name}: features")


def gloredi_psnr(name: str) -> float:
    """PSNR (official HU window) of a GloReDi student given the sparse-view FBP of the test phantoms in HU
    (the head phantoms of the split; an out-of-family set, where the recipe has one, is not the headline)."""
    from torchmetrics.image import PeakSignalNoiseRatio

    import cli

    meta = zoo.get(name).meta
    arm = next(a for a in meta.evidence.arms if a.arm.endswith("(GloReDi)"))
    dm = cli.lightning_main([*(f"--config={c}" for c in arm.config), *arm.args], run=False).datamodule
    dm.setup("test")
    net, psnr = zoo.load(name), PeakSignalNoiseRatio(data_range=1.0)
    with torch.no_grad():
        loaders = dm.test_dataloader()
        for batch in loaders[0] if isinstance(loaders, list) else loaders:
            fbp = mu_to_hu(batch["sparse"])  # a CT reader's output is HU
            meta.input.check(fbp, "the FBP in HU")
            psnr.update(hu_window(net(fbp), units="hu"), hu_window(batch["full"]))
    return float(psnr.compute())


def codec_contract(name: str) -> None:
    """A codec takes a waveform as soundfile reads it (float32 in [-1, 1] at the entry's rate): a LibriSpeech
    test-other file when the data are here, else the embedded synthetic speech (same tensors), so CI checks it."""
    from datamodules.audio.speech import read_audio, synthetic_speech

    meta = zoo.get(name).meta
    rate = meta.input.sample_rate
    files = sorted((SHARED_DATA / "librispeech" / "test-other").rglob("*.flac"))
    if files:
        wav, what = read_audio(files[0], rate)[0], f"{files[0].name} as read"
    else:
        wav, what = synthetic_speech(1, 1, rate)[0].audio, "the embedded synthetic speech"
    wav = wav[:rate].view(1, 1, -1)
    meta.input.check(wav, what)
    with torch.no_grad():
        out = zoo.load(name)(wav)["audio"]
    assert out.shape == wav.shape and torch.isfinite(out).all()


def distilled_graphs_contract(name: str, dataset: str) -> None:
    """A distilled graph set has the node features of the TUDataset it stands in for, and the size its card
    states (graphs and bytes, the compression the card reports)."""
    from datamodules.graphs import TUDataModule
    from zoo.datasets import tensor_bytes

    meta = zoo.get(name).meta
    graphs = zoo.load(name)
    for g in graphs:
        meta.input.check(g.x, f"{name}: a distilled graph's features")
    assert len(graphs) == meta.distilled_set["train_graphs"]
    assert tensor_bytes(graphs) == meta.distilled_set["train_bytes"]
    if not (SHARED_DATA / "tu").is_dir():
        return  # the reader's side needs the TU files (not in CI); the stored side is checked above
    reader = TUDataModule(root="data:tu", name=dataset)
    reader.setup()
    real = reader.train_set[0].x
    meta.input.check(real, f"TUDataset {dataset!r} features")
    assert real.shape[1] == graphs[0].x.shape[1]


# entry -> (check returning the published score or None, marks)
CHECKS: dict[str, tuple[Callable[[], float | None], list]] = {
    "uniego-uci-mfeat": (uci_accuracy, []),
    "gloredi-phantoms-18v": (lambda: gloredi_psnr("gloredi-phantoms-18v"), []),
    "gcn-csbm": (lambda: node_accuracy("gcn-csbm", csbm()), []),
    "gcn-cora": (lambda: node_accuracy("gcn-cora", cora()), [needs["planetoid"]]),
    "gcn-cora-ind": (lambda: node_accuracy("gcn-cora-ind", cora()), [needs["planetoid"]]),
    "ffg2m-cora-gcn-mlp": (lambda: node_accuracy("ffg2m-cora-gcn-mlp", cora(), use_graph=False), [needs["planetoid"]]),
    "distilcodec-librispeech": (lambda: codec_contract("distilcodec-librispeech"), []),
    "codec-teacher-librispeech": (lambda: codec_contract("codec-teacher-librispeech"), []),
    "codec-teacher-librispeech-r1": (lambda: codec_contract("codec-teacher-librispeech-r1"), []),
    "mirage-mutag": (lambda: distilled_graphs_contract("mirage-mutag", "MUTAG"), []),
    "mirage-nci1": (lambda: distilled_graphs_contract("mirage-nci1", "NCI1"), []),
    "mirage-imdb-binary": (lambda: distilled_graphs_contract("mirage-imdb-binary", "IMDB-BINARY"), []),
    "uniego-uci-init": (lambda: uci_pixel_contract("uniego-uci-init"), []),
    "uniego-uci-soup": (lambda: uci_pixel_contract("uniego-uci-soup"), []),
    "uniego-uci-uniform": (lambda: uci_pixel_contract("uniego-uci-uniform"), []),
    "uniego-uci-proxy-outputs": (lambda: uci_outputs_contract("uniego-uci-proxy-outputs", train_only=True), []),
    "mae-vit-cifar10": (lambda: mae_pixel_loss("mae-vit-cifar10"), [needs["cifar10"]]),
    "metric-prompt-teacher-scenes": (lambda: prompt_teacher_absrel("metric-prompt-teacher-scenes"), []),
    "mae-vit-cifar10-ft": (lambda: image_accuracy("mae-vit-cifar10-ft"), [needs["cifar10"]]),
    "dmae-vit-cifar10": (lambda: image_accuracy("dmae-vit-cifar10"), [needs["cifar10"]]),
    "g2sd-vit-cifar10": (lambda: image_accuracy("g2sd-vit-cifar10"), [needs["cifar10"]]),
    "phreg-vit-camvid": (lambda: dense_cosine_to_tta("phreg-vit-camvid", "zoo:mae-vit-cifar10-ft"), [needs["camvid"]]),
    "collab-deeplabv3p-camvid": (lambda: camvid_miou("collab-deeplabv3p-camvid"), [needs["camvid"]]),
    "collab-segformer-camvid": (lambda: camvid_miou("collab-segformer-camvid"), [needs["camvid"]]),
}
for _view in ("fou", "fac", "kar", "zer", "mor"):
    CHECKS[f"uniego-uci-teacher-{_view}"] = (lambda v=_view: uci_view_accuracy(f"uniego-uci-teacher-{v}", v), [])
    CHECKS[f"uniego-uci-features-{_view}"] = (
        lambda v=_view: uci_outputs_contract(f"uniego-uci-features-{v}", False),
        [],
    )
    CHECKS[f"uniego-uci-proxy-{_view}"] = (lambda v=_view: uci_pixel_contract(f"uniego-uci-proxy-{v}"), [])


def test_every_published_entry_has_a_contract_check():
    assert sorted(CHECKS) == zoo.list(), "a new entry needs its reader check here"


@pytest.mark.parametrize("name", [pytest.param(n, marks=m) for n, (_, m) in CHECKS.items()])
def test_the_entry_takes_its_readers_raw_output_and_scores_what_its_card_says(name):
    score = CHECKS[name][0]()
    published = zoo.get(name).meta.published_model
    if published is None:
        assert score is None, f"{name} scores {score:.2f} on raw reader output: state it as published_model"
    else:
        assert score == pytest.approx(published.value, abs=0.01), f"{name}: card says {published.value}"


def test_uniego_republished_under_the_contract_computes_the_first_releases_function():
    """The first release took value / 6; the republished network divides inside: bit for bit the same."""
    from datamodules.multiview.mfeat import PIX_SHAPE, read_uci_mfeat

    raw = torch.from_numpy(read_uci_mfeat()[0]["pix"]).float().reshape(-1, *PIX_SHAPE)
    student, first_release = zoo.load("uniego-uci-mfeat"), zoo.load("uniego-uci-mfeat")
    first_release.input_max = None
    with torch.no_grad():
        assert torch.equal(first_release(raw / 6), student(raw))


def test_a_broken_contract_fails_naming_both_sides():
    meta = zoo.get("uniego-uci-mfeat").meta
    with pytest.raises(ValueError, match=r"size 240 at dim 2 instead of 16; size 1 at dim 3 instead of 15"):
        meta.input.check(torch.rand(4, 1, 240, 1) * 6, "a flattened view")
    with pytest.raises(ValueError, match=r"dtype float64 instead of float32"):
        meta.input.check(torch.zeros(4, 1, 16, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"values in \[7, 7\] outside \[0, 6\]"):
        meta.input.check(torch.full((1, 1, 16, 15), 7.0))


if __name__ == "__main__":
    for entry, (check, _) in CHECKS.items():
        try:
            print(f"{entry}: {check()}")
        except Exception as err:  # noqa: BLE001 - a report, not a test
            print(f"{entry}: skipped ({err})")
