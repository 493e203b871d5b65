"""Frozen-backbone linear segmentation probe: how much a ViT's patch tokens know about a dense task.

DINOv2's linear evaluation (``dinov2/eval/segmentation``, ``BNHead``), which PH-Reg reports and which
measures G2SD's claim that the generic stage keeps "generic" (dense) knowledge a task-specific stage loses:
the backbone is frozen (wrapped as the module's teacher: no grad, always eval, left out of checkpoints and
rebuilt from its source), its last-layer patch tokens are turned into a [B, D, h, w] map, and only a
BatchNorm + 1x1 conv head (:class:`~modules.nets.probes.SegmentationProbe`) learns, under cross-entropy
with the dataset's ignore index; the logits are upsampled bilinearly to the labels. Metric: mIoU over the
classes (torchmetrics ``MulticlassJaccardIndex``, the ignore index excluded), as mmsegmentation reports it.

A ViT trained at 32 px runs at a dense task's resolution through timm's ``dynamic_img_size`` (its positional
embedding interpolated bicubically), which is also where the position artifacts PH-Reg removes appear.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from modules.core import DistillModule, Teacher
from modules.g2sd import DistilledViT
from modules.nets import MaskedAutoencoder, TimmViT
from modules.nets.mae import MAEEncoder
from modules.nets.probes import SegmentationProbe
from zoo import export


def dynamic_vit(network: nn.Module, source: str = "the backbone") -> TimmViT:
    """A headless ``TimmViT`` with ``dynamic_img_size`` carrying the weights of ``network``: an MAE (its
    encoder), an ``MAEEncoder``, a ``DistilledViT`` (its ViT) or a ``TimmViT`` (rebuilt dynamic, head dropped)."""
    if isinstance(network, MaskedAutoencoder):
        network = network.encoder
    if isinstance(network, DistilledViT):
        network = network.backbone
    name = None
    if isinstance(network, MAEEncoder):
        kwargs = network.timm_kwargs() | {"qkv_bias": True, "class_token": True, "global_pool": "token"}
    elif isinstance(network, TimmViT):
        name, kwargs = network.init_args.get("model_name"), dict(network.init_args.get("timm_kwargs") or {})
    else:
        raise TypeError(f"{source} is a {type(network).__name__}; a dense probe reads a ViT (an MAE or a TimmViT)")
    state = {k: v for k, v in network.vit.state_dict().items() if not k.startswith("head.")}
    mean, std = network.mean.flatten().tolist(), network.std.flatten().tolist()
    vit = TimmViT(name, timm_kwargs=kwargs | {"num_classes": 0}, mean=mean, std=std, dynamic_img_size=True)
    missing, unexpected = vit.vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: its weights do not fit a ViT (missing {missing}, unexpected {unexpected})")
    return vit.eval()


def load_backbone(source: str, tta_views: int = 0) -> nn.Module:
    """The frozen ViT of ``source`` (``zoo:NAME``, a ``.safetensors`` path, or a stage's Lightning ``.ckpt``),
    offering ``dense_features`` at any resolution; with ``tta_views``, under PH-Reg's test-time augmentation."""
    from modules.phreg import RegisterViT, TTADense

    network = export.load_network(source)
    vit = network if isinstance(network, RegisterViT) else dynamic_vit(network, source)
    return TTADense(vit, tta_views) if tta_views else vit.eval()


class LinearProbe(DistillModule):
    """Linear segmentation probe of a frozen ViT ``backbone`` (``zoo:NAME``, a ``.safetensors`` path or a
    Lightning ``.ckpt``; ``tta_views`` > 0 probes its PH-Reg test-time-augmented features): BN + 1x1 conv on
    the last-layer patch tokens, cross-entropy ignoring ``ignore_index``, logits upsampled to the labels.
    Metrics ``miou`` and pixel ``acc``, and the backbone's artifact scalars on the same images:
    ``outliers`` (share of tokens above median + 3 MAD of the norms) and ``positional`` (share of feature
    variance explained by grid position), at the last layer and, where the backbone gives block outputs, at
    the middle and second-to-last blocks (``_mid``, ``_penultimate``); with ``reference`` (a teacher source)
    ``cos_tta`` at test, the cosine of the features to that teacher's 10-view TTA target. Batches are the
    segmentation datamodule's ``{"image", "mask"}``. ``test_time_registers`` > 0 probes the backbone with that
    many register neurons shifted to a test-time register (:class:`~modules.phreg.TestTimeRegisters`, located
    on training images). The exported network is the head."""

    def __init__(
        self,
        backbone: str,
        num_classes: int = 11,
        ignore_index: int = 11,
        dropout: float = 0.0,
        tta_views: int = 0,
        test_time_registers: int = 0,
        reference: str | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        from modules.phreg import TestTimeRegisters

        network = load_backbone(backbone, tta_views)
        if test_time_registers:
            if not isinstance(network, TimmViT):
                raise ValueError("test_time_registers needs a plain ViT backbone (no TTA, no trained registers)")
            network = TestTimeRegisters(network, top_k=test_time_registers)
        frozen = {"backbone": Teacher(network=network)}
        if reference is not None:
            frozen["reference"] = Teacher(network=load_backbone(reference, tta_views=10))
        for name, source in (("backbone", backbone), ("reference", reference)):
            if name in frozen:
                frozen[name].manifest["source"] = source  # rebuilt from this source when a checkpoint is loaded
        head = SegmentationProbe(frozen["backbone"].network.embed_dim, num_classes, dropout)
        super().__init__(student=head, teacher=frozen, optimizer=optimizer, lr_scheduler=lr_scheduler)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._cache: dict[tuple[str, int], Tensor] = {}  # (split, sample index) -> feature map, never saved

    @property
    def backbone(self) -> nn.Module:
        return self.teacher["backbone"].network

    def setup(self, stage: str) -> None:
        """The data's classes must be the head's; test-time registers locate their neurons on the first 64
        training images (unaugmented), once."""
        self.require_data_agrees("num_classes", "ignore_index")
        neurons = getattr(self.backbone, "neurons", None)
        if neurons == {} and self._trainer is not None:
            dataset = self.trainer.datamodule.dataset("train", augment=False)
            images = torch.stack([dataset[i]["image"] for i in range(min(64, len(dataset)))]).to(self.device)
            found = self.backbone.calibrate(images)
            rank_zero_info(f"LinearProbe: test-time register neurons { ({k: v.tolist() for k, v in found.items()}) }")
        super().setup(stage)

    def features(self, images: Tensor, split: str | None = None, index: Tensor | None = None) -> Tensor:
        """The frozen backbone's last-layer patch map [B, D, h, w] (CLS and registers dropped). With the
        batch's ``split`` and sample ``index`` and un-augmented data, each image's map is computed once and
        kept (the backbone never changes), so the probe's epochs cost one backbone pass per image in all."""
        keys = None if split is None or index is None or not self._cacheable else [(split, int(i)) for i in index]
        if keys is not None and all(k in self._cache for k in keys):
            return torch.stack([self._cache[k] for k in keys]).to(images.device)
        with torch.no_grad():
            maps = self.backbone.dense_features(images)
        if keys is not None:
            self._cache.update(zip(keys, maps.detach().cpu()))
        return maps

    @property
    def _cacheable(self) -> bool:
        datamodule = self.attached_datamodule
        return getattr(datamodule, "train_transform", None) == "none"

    def logits(self, images: Tensor) -> Tensor:
        return self.student(self.features(images), size=images.shape[-2:])

    def forward(self, images: Tensor) -> Tensor:
        return self.logits(images)

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        logits = self.student(self.features(images, "train", batch.get("index")), size=images.shape[-2:])
        return {"ce": F.cross_entropy(logits, batch["mask"], ignore_index=self.ignore_index)}

    def depths(self) -> dict[str, int]:
        """The blocks whose outputs the artifact scalars are also taken at (none for a TTA backbone)."""
        depth = getattr(self.backbone, "depth", None)
        if not isinstance(depth, int) or not hasattr(self.backbone, "block_features"):
            return {}
        return {"mid": depth // 2 - 1, "penultimate": depth - 2} if depth >= 3 else {}

    def configure_metrics(self) -> MetricCollection:
        from modules.phreg import OutlierShare, PositionalShare

        kwargs: dict[str, Any] = {"ignore_index": self.ignore_index}
        metrics: dict[str, Any] = {
            "miou": MulticlassJaccardIndex(self.num_classes, average="macro", **kwargs),
            "acc": MulticlassAccuracy(self.num_classes, average="micro", **kwargs),
            "outliers": OutlierShare(),
            "positional": PositionalShare(),
        }
        for where in self.depths():
            metrics |= {f"outliers_{where}": OutlierShare(), f"positional_{where}": PositionalShare()}
        return MetricCollection(metrics)

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        images, mask = batch["image"], batch["mask"]
        features = self.features(images, stage, batch.get("index"))
        logits = self.student(features, size=images.shape[-2:])
        metrics = self.stage_metrics[stage]
        metrics["miou"].update(logits, mask)
        metrics["acc"].update(logits, mask)
        out = {"loss": F.cross_entropy(logits, mask, ignore_index=self.ignore_index)}
        metrics["outliers"].update(features)
        metrics["positional"].update(features)
        depths = self.depths()
        if depths:
            with torch.no_grad():
                maps = self.backbone.block_features(images, list(depths.values()))
            for where, features_at in zip(depths, maps):
                metrics[f"outliers_{where}"].update(features_at)
                metrics[f"positional_{where}"].update(features_at)
        if stage == "test" and "reference" in self.teacher:
            with torch.no_grad():
                target = self.teacher["reference"].network.dense_features(images)
            out["cos_tta"] = F.cosine_similarity(features, target, dim=1).mean()
        return out

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])
