"""CNN-ViT collaborative learning for semantic segmentation (Zhu et al., "A Good Student is Cooperative and
Reliable: CNN-Transformer Collaborative Learning for Semantic Segmentation", ICCV 2023, arXiv 2307.12574).

**This is a reconstruction.** The paper has no official code; only its abstract could be read. The abstract fixes
the shape: online distillation between a compact CNN and a compact ViT trained at the same time with no
pretrained teacher; heterogeneous feature distillation (HFD) of *low-layer* features; region-wise bidirectional
selective distillation (BSD) that picks the *direction* of transfer per region *in feature space*; pixel-wise BSD
that picks *which* prediction knowledge flows *in logit space*. Everything else is ours (``shared/methods/
vision.md`` section 4), and the card repeats it:

- HFD: both students' stride-4 features (the CNN's first residual stage, the ViT's first pyramid stage) go
  through a 1x1 conv + BatchNorm to ``hfd_dim`` and each mimics the other's (MSE, stop-gradient on the target).
  The BatchNorm has no affine parameters, so neither side can meet the other by shrinking to a constant (a
  mutual-mimicry loss with learnable scales has that trivial minimum).
- Region-wise BSD: the decoder features, projected the same way to ``region_dim``, are cut into a
  ``region_grid`` x ``region_grid`` grid; in each region the student with the lower mean cross-entropy (over its
  labelled pixels) is the source and the other mimics it there (MSE, stop-gradient); the loss is the mean over
  regions with labelled pixels, a region where the two tie teaching neither.
- Pixel-wise BSD (the rule CTRCL uses: transfer only where the source is right): at a labelled pixel where one
  student's argmax is right and the other's is wrong, the wrong one takes T^2 KL(source^T || own^T); pixels where
  both are right or both wrong transfer nothing; the sum is divided by the number of selected pixels (both
  directions together; ``pixel_normaliser="labelled"`` divides by the labelled pixels instead, so a selected
  pixel weighs what it weighs in the cross-entropy and in DML). ``logits="all"`` is deep mutual learning
  instead (Zhang et al. 2018): KL both ways at every labelled pixel.
- The two students update simultaneously from one forward pass (each step reads the other's outputs of the same
  batch, detached), each with its own optimiser (``cnn_optimizer``, ``vit_optimizer``; C2VKD's recipe
  gives SGD to the CNN and AdamW to the ViT).

Students (:class:`DeepLabV3Plus` on a timm ResNet, :class:`SegFormer` on a timm PVTv2) take images in [0, 1],
normalise inside, and return logits at the input's resolution; ``parts(x)`` returns what the losses read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from modules.core import DistillModule
from modules.nets.images import NormalisedInput
from zoo import store
from zoo.specs import exportable, module_spec

PARTS = ("cnn", "vit")
LOGIT_TRANSFER = ("none", "all", "selective")
PIXEL_NORMALISERS = ("selected", "labelled")


class SegParts(NamedTuple):
    """What a student gives the collaborative losses: ``low`` its stride-4 backbone features, ``features`` its
    decoder features (stride 4) and ``logits`` its class scores at the decoder's resolution."""

    low: Tensor
    features: Tensor
    logits: Tensor


def _timm_features(owner: str, model_name: str, out_indices: Sequence[int], kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm backbone with ``features_only``, built untrained (the zoo's weights or training fill it in)."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name[:6]}*")[:5]
        raise ValueError(f"{owner}: {model_name!r} is not a timm model name" + (f"; close: {close}" if close else ""))
    return timm.create_model(
        model_name, pretrained=False, features_only=True, out_indices=tuple(out_indices), **dict(kwargs)
    )


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


class _Segmenter(NormalisedInput):
    """A segmentation student: ``parts(x)`` for the losses, ``forward(x)`` -> logits at the input size."""

    def parts(self, x: Tensor) -> SegParts:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> logits [B, num_classes, H, W]."""
        return F.interpolate(self.parts(x).logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def reset_classes(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` (fine-tuning on other labels), recorded in the export spec."""
        self.classifier = nn.Conv2d(self.classifier.in_channels, num_classes, 1)
        self.num_classes, self.init_args = num_classes, dict(self.init_args, num_classes=num_classes)


@exportable
class DeepLabV3Plus(_Segmenter):
    """DeepLabV3+ (Chen et al. 2018) on a timm ResNet (``backbone``, ``backbone_kwargs`` such as ``channels`` or
    ``layers`` to shrink it): the last stage at ``output_stride`` through ASPP (a 1x1 branch, 3x3 branches at
    ``aspp_rates`` and image pooling, fused to ``aspp_channels``), upsampled to stride 4 and joined with the
    first stage's features reduced to ``low_channels``, then two 3x3 convs to ``decoder_channels`` and a 1x1
    classifier. The paper's rates (6, 12, 18) are for 32-cell maps at stride 16; scale them with the map."""

    def __init__(
        self,
        num_classes: int = 11,
        backbone: str = "resnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        output_stride: int = 8,
        aspp_channels: int = 64,
        aspp_rates: tuple[int, ...] = (2, 4, 6),
        low_channels: int = 24,
        decoder_channels: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone = _timm_features(
            "DeepLabV3Plus", backbone, (1, 4), dict(backbone_kwargs or {}, output_stride=output_stride)
        )
        low_in, high_in = self.backbone.feature_info.channels()
        self.aspp = nn.ModuleList(
            [_conv_bn_relu(high_in, aspp_channels)] + [_conv_bn_relu(high_in, aspp_channels, 3, r) for r in aspp_rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_in, aspp_channels, 1), nn.ReLU(True))
        self.fuse = nn.Sequential(
            _conv_bn_relu(aspp_channels * (len(aspp_rates) + 2), aspp_channels), nn.Dropout(dropout)
        )
        self.reduce = _conv_bn_relu(low_in, low_channels)
        self.decoder = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_channels, decoder_channels, 3),
            _conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        self.low_dim, self.feature_dim, self.num_classes = low_in, decoder_channels, num_classes

    def parts(self, x: Tensor) -> SegParts:
        low, high = self.backbone(self.normalize(x))
        pooled = self.pool(high).expand(-1, -1, *high.shape[-2:])
        aspp = self.fuse(torch.cat([branch(high) for branch in self.aspp] + [pooled], dim=1))
        aspp = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=False)
        features = self.decoder(torch.cat([aspp, self.reduce(low)], dim=1))
        return SegParts(low, features, self.classifier(features))


@exportable
class SegFormer(_Segmenter):
    """SegFormer's all-MLP decoder (Xie et al. 2021) on a timm PVTv2 (``backbone``, ``backbone_kwargs`` such as
    ``embed_dims`` / ``depths`` / ``num_heads`` to shrink it; overlapping patch embeddings, spatial-reduction
    attention): each of the four stages (strides 4-32) is projected linearly to ``decoder_dim``, upsampled to
    stride 4 and concatenated, fused by a 1x1 conv + BN + ReLU, and classified by a 1x1 conv."""

    def __init__(
        self,
        num_classes: int = 11,
        backbone: str = "pvt_v2_b0",
        backbone_kwargs: dict[str, Any] | None = None,
        decoder_dim: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone = _timm_features("SegFormer", backbone, (0, 1, 2, 3), dict(backbone_kwargs or {}))
        dims = self.backbone.feature_info.channels()
        self.linear = nn.ModuleList([nn.Conv2d(d, decoder_dim, 1) for d in dims])
        self.fuse = nn.Sequential(_conv_bn_relu(decoder_dim * len(dims), decoder_dim), nn.Dropout(dropout))
        self.classifier = nn.Conv2d(decoder_dim, num_classes, 1)
        self.low_dim, self.feature_dim, self.num_classes = dims[0], decoder_dim, num_classes

    def parts(self, x: Tensor) -> SegParts:
        stages = self.backbone(self.normalize(x))
        size = stages[0].shape[-2:]
        maps = [
            F.interpolate(lin(s), size=size, mode="bilinear", align_corners=False)
            for lin, s in zip(self.linear, stages)
        ]
        features = self.fuse(torch.cat(maps, dim=1))
        return SegParts(stages[0], features, self.classifier(features))


def _projector(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv + BatchNorm without affine parameters (see the module docstring: no collapse to a constant)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, affine=False))


def _student(part: str, net: nn.Module | str, num_classes: int) -> nn.Module:
    """A student given as a weights source (``zoo:NAME``, a ``.safetensors`` path: fine-tuning a published one) is
    built from it, trainable; its head is replaced when it predicts another number of classes (logged)."""
    if not isinstance(net, str):
        return net
    loaded = store.load(net).train()
    if callable(getattr(loaded, "reset_classes", None)) and loaded.num_classes != num_classes:
        rank_zero_info(f"CollaborativeSeg: the {part} student {net} predicts {loaded.num_classes} classes, "
                       f"num_classes is {num_classes}: its head is replaced")  # fmt: skip
        loaded.reset_classes(num_classes)
    return loaded


def region_means(values: Tensor, weights: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """Per-region weighted sums over a ``grid`` x ``grid`` partition of [B, H, W] maps: (sum of values * weights,
    sum of weights), each [B, grid, grid].

    Raises:
        ValueError: when the grid does not divide the map (naming both).
    """
    b, h, w = values.shape
    if h % grid or w % grid:
        raise ValueError(
            f"the region grid {grid}x{grid} does not divide the {h}x{w} map; choose a region_grid that divides "
            "both sides (the crop size / 4 for the features, the crop size for the labels)"
        )
    shape = (b, grid, h // grid, grid, w // grid)
    return (values * weights).reshape(shape).sum((2, 4)), weights.reshape(shape).sum((2, 4))


def kl_per_pixel(target_logits: Tensor, logits: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(target/T) || softmax(logits/T)) per pixel, [B, C, H, W] -> [B, H, W]; the target detached."""
    target = F.log_softmax(target_logits.detach() / temperature, dim=1)
    own = F.log_softmax(logits / temperature, dim=1)
    return temperature**2 * (target.exp() * (target - own)).sum(1)


class CollaborativeSeg(DistillModule):
    """Online collaborative distillation of a CNN (``cnn``) and a ViT (``vit``) segmentation student (see the
    module docstring; the rules beyond the paper's abstract are ours).

    Terms of each student's step (``train/<cnn|vit>/<term>``): ``seg`` (cross-entropy ignoring
    ``ignore_index``), ``hfd`` (when ``hfd``), ``region`` (when ``region``), ``logits`` (``"selective"``:
    pixel-wise BSD, ``"all"``: deep mutual learning, ``"none"``: off), weighted by ``loss_weights`` (``hfd``,
    ``region``, ``logits`` or per step ``cnn/hfd``; default 1). All off is the two students trained
    independently in one run. Logged beside them: ``train/flow/<cnn_to_vit|vit_to_cnn>``, the share of
    labelled pixels (pixel-wise) and of regions (``train/flow/region_...``) taught in each direction.

    ``cnn`` and ``vit`` are networks or weights sources (``zoo:NAME``, a ``.safetensors`` path), which is how a
    fine-tuning run continues from a published pair on other data (a head for another number of classes is
    replaced).

    Metrics per student at val and test: ``cnn_miou``, ``vit_miou`` (mean IoU over the classes, the ignore index
    excluded) and ``cnn_acc``, ``vit_acc`` (pixel accuracy); ``mean_miou`` of the two selects the checkpoint.
    ``export_parts`` gives both students; ``zoo export --part cnn|vit`` publishes one."""

    steps = PARTS
    modules_in_init = ("cnn", "vit", "cnn_optimizer", "vit_optimizer")  # kept out of hparams

    def __init__(
        self,
        cnn: nn.Module | str,
        vit: nn.Module | str,
        num_classes: int = 11,
        ignore_index: int = 11,
        hfd: bool = True,
        region: bool = True,
        logits: Literal["none", "all", "selective"] = "selective",
        hfd_dim: int = 64,
        region_dim: int = 64,
        region_grid: int = 4,
        temperature: float = 1.0,
        pixel_normaliser: Literal["selected", "labelled"] = "selected",
        loss_weights: dict[str, float] | None = None,
        cnn_optimizer: OptimizerCallable = torch.optim.AdamW,
        vit_optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if logits not in LOGIT_TRANSFER:
            raise ValueError(f"logits must be one of {LOGIT_TRANSFER}, got {logits!r}")
        if pixel_normaliser not in PIXEL_NORMALISERS:
            raise ValueError(f"pixel_normaliser must be one of {PIXEL_NORMALISERS}, got {pixel_normaliser!r}")
        if region_grid < 1 or temperature <= 0:
            raise ValueError(f"need region_grid >= 1 and temperature > 0, got {region_grid}, {temperature}")
        cnn, vit = _student("cnn", cnn, num_classes), _student("vit", vit, num_classes)
        for part, net in (("cnn", cnn), ("vit", vit)):
            if not callable(getattr(net, "parts", None)) or getattr(net, "num_classes", num_classes) != num_classes:
                raise ValueError(
                    f"CollaborativeSeg: the {part} student must offer parts(x) and predict num_classes={num_classes} "
                    f"classes (got {type(net).__name__} with {getattr(net, 'num_classes', '?')})"
                )
        super().__init__(
            student=nn.ModuleDict({"cnn": cnn, "vit": vit}),
            loss_weights=loss_weights,
            optimizer={"cnn": cnn_optimizer, "vit": vit_optimizer},
            lr_scheduler=lr_scheduler,
        )
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.hfd, self.region, self.logit_transfer = hfd, region, logits
        self.region_grid, self.temperature, self.pixel_normaliser = region_grid, temperature, pixel_normaliser
        for part, net in (("cnn", cnn), ("vit", vit)):
            if hfd:
                self.projectors[f"hfd_{part}"] = _projector(net.low_dim, hfd_dim)
            if region:
                self.projectors[f"region_{part}"] = _projector(net.feature_dim, region_dim)

    # ----- export -----------------------------------------------------------------------------
    def export_parts(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        return {part: (self.student[part], module_spec(self.student[part])) for part in PARTS}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {part: self.student[part](images) for part in PARTS}

    def step_modules(self, step: str) -> tuple[nn.Module, ...]:
        own = [m for name, m in self.projectors.items() if name.endswith(f"_{step}")]
        return (self.student[step], *own)

    # ----- losses ------------------------------------------------------------------------------
    def shared_forward(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        """Both students' parts, projections, per-pixel cross-entropy and correctness, once per batch."""
        images, mask = batch["image"], batch["mask"]
        valid = mask != self.ignore_index
        target = mask.masked_fill(~valid, 0)
        out: dict[str, Any] = {"valid": valid}
        for part in PARTS:
            parts = self.student[part].parts(images)
            logits = F.interpolate(parts.logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
            out[part] = {
                "logits": logits,
                "ce": F.cross_entropy(logits, target, reduction="none") * valid,
                "right": (logits.detach().argmax(1) == mask) & valid,
            }
            if self.hfd:
                out[part]["hfd"] = self.projectors[f"hfd_{part}"](parts.low)
            if self.region:
                out[part]["region"] = self.projectors[f"region_{part}"](parts.features)
        if self.hfd and out["cnn"]["hfd"].shape[-2:] != out["vit"]["hfd"].shape[-2:]:  # odd sizes round apart
            out["vit"]["hfd"] = F.interpolate(out["vit"]["hfd"], size=out["cnn"]["hfd"].shape[-2:], mode="bilinear")
        if self.region:
            self._select_regions(out)
        if self.logit_transfer == "selective":
            c, v = out["cnn"]["right"], out["vit"]["right"]
            out["cnn"]["taught"], out["vit"]["taught"] = v & ~c, c & ~v  # pixels where the other is the right one
            counted = c ^ v if self.pixel_normaliser == "selected" else valid  # the loss's denominator
            out["selected"] = counted.sum().clamp(min=1)
        return out

    def _select_regions(self, out: dict[str, Any]) -> None:
        """Per region of the grid: which student has the lower mean cross-entropy over its labelled pixels."""
        valid = out["valid"].float()
        errors = {}
        for part in PARTS:
            total, count = region_means(out[part]["ce"].detach(), valid, self.region_grid)
            errors[part] = total / count.clamp(min=1)
        labelled = count > 0
        out["cnn"]["region_taught"] = labelled & (errors["vit"] < errors["cnn"])
        out["vit"]["region_taught"] = labelled & (errors["cnn"] < errors["vit"])
        out["regions"] = labelled.sum().clamp(min=1)

    def step_loss(self, step: str, batch: dict[str, Tensor], shared: dict[str, Any]) -> dict[str, Tensor]:
        other = "vit" if step == "cnn" else "cnn"
        me, them, valid = shared[step], shared[other], shared["valid"]
        terms = {"seg": me["ce"].sum() / valid.sum().clamp(min=1)}
        if self.hfd:
            terms["hfd"] = F.mse_loss(me["hfd"], them["hfd"].detach())
        if self.region:
            distance = (me["region"] - them["region"].detach()).pow(2).mean(1)  # [B, h, w]
            ones = torch.ones_like(distance)
            total, count = region_means(distance, ones, self.region_grid)
            terms["region"] = (total / count * me["region_taught"]).sum() / shared["regions"]
            self.log(f"train/flow/region_{other}_to_{step}", me["region_taught"].sum() / shared["regions"])
        if self.logit_transfer != "none":
            kl = kl_per_pixel(them["logits"], me["logits"], self.temperature)
            if self.logit_transfer == "all":
                terms["logits"] = (kl * valid).sum() / valid.sum().clamp(min=1)
            else:
                terms["logits"] = (kl * me["taught"]).sum() / shared["selected"]
                self.log(f"train/flow/{other}_to_{step}", me["taught"].sum() / valid.sum().clamp(min=1))
        return terms

    # ----- evaluation --------------------------------------------------------------------------
    def configure_metrics(self) -> MetricCollection:
        kwargs = {"ignore_index": self.ignore_index}
        metrics: dict[str, Any] = {}
        for part in PARTS:
            metrics[f"{part}_miou"] = MulticlassJaccardIndex(self.num_classes, average="macro", **kwargs)
            metrics[f"{part}_acc"] = MulticlassAccuracy(self.num_classes, average="micro", **kwargs)
        return MetricCollection(metrics)

    def combine_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """``mean_miou``: both students' mIoU averaged, which selects the checkpoint they share."""
        return {"mean_miou": (values["cnn_miou"] + values["vit_miou"]) / 2}

    def setup(self, stage: str) -> None:
        self.require_data_agrees("num_classes", "ignore_index")
        super().setup(stage)

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        images, mask = batch["image"], batch["mask"]
        metrics, out = self.stage_metrics[stage], {}
        for part in PARTS:
            logits = self.student[part](images)
            metrics[f"{part}_miou"].update(logits, mask)
            metrics[f"{part}_acc"].update(logits, mask)
            out[f"{part}_loss"] = F.cross_entropy(logits, mask, ignore_index=self.ignore_index)
        return out

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])
