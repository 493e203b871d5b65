"""G2SD: "Generic-to-Specific Distillation of Masked Autoencoders" (Huang et al., CVPR 2023, arXiv 2302.14771),
following pengzhiliang/G2SD ``models_mae.py``, ``engine_distill.py``, ``models_vit.py``, ``engine_finetune_dis.py``.

Generic stage (:class:`GenericDistill`): a frozen MAE teacher and a small MAE student with a lightweight
decoder see the same random mask, drawn from one noise tensor. The teacher's decoder runs only up to block
``teacher_layer`` (4 of 8 in the official runs). Its hidden state there, with CLS and before
``decoder_norm``, is normalised by a LayerNorm without affine (eps 1e-6). That is the target for the
student's decoder output (every block, no ``decoder_norm``) after an MLP head, under a Smooth-L1 loss
(beta 2) over every token, visible and masked. There is no pixel loss.

Specific stage (:class:`SpecificDistill`): the student's encoder, from the generic stage, gets a DeiT-style
distillation token. The token is appended after the positional embedding is added, so it has no position
(:class:`DistilledViT`), and it has its own head. The loss is 1/2 CE of the CLS head to the labels plus 1/2
CE of the distillation head to the hard predictions of a fine-tuned teacher. Inference averages the two
heads. With ``teacher=None`` both heads learn the labels: plain fine-tuning, the no-teacher arm.

Specific stage for a dense task (:class:`SegmentSpecificDistill`): where the specific task is semantic
segmentation the official code (``G2SD_seg_dis``, ``configs/distill/distill_cwd.py``) drops the distillation
token and distils the teacher segmenter's logits by channel-wise distillation (Shu et al., ICCV 2021; tau 1,
weight 10) beside the student's own cross-entropy. The student is a :class:`ViTSegmenter` whose encoder comes
from the generic stage; the teacher is the same kind of network fine-tuned on the task (the module with
``teacher=None`` trains it).
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

from modules.core import DistillModule, make_projector
from modules.core.losses import kd_kl
from modules.dmae import MAEPretrain
from modules.nets import MaskedAutoencoder, TimmViT, random_mask
from modules.nets.probes import SegmentationProbe
from modules.nets.vit import check_image_size
from zoo import export
from zoo.specs import exportable


def generic_loss(student: Tensor, teacher_hidden: Tensor, beta: float = 2.0) -> Tensor:
    """G2SD's generic term: ``smooth_l1(student, layer_norm(teacher_hidden) without affine, beta)``, mean over
    every element. student [B, T, D] (already through the MLP head), teacher_hidden [B, T, D] -> scalar."""
    if student.shape != teacher_hidden.shape:
        raise ValueError(f"student {list(student.shape)} and teacher {list(teacher_hidden.shape)} tokens differ")
    target = F.layer_norm(teacher_hidden, teacher_hidden.shape[-1:], eps=1e-6)
    return F.smooth_l1_loss(student, target, beta=beta)


class GenericDistill(MAEPretrain):
    """G2SD's generic stage (``models_mae.py`` ``forward_distill``): ``student`` and ``teacher`` are
    ``MaskedAutoencoder`` networks over one patch grid; ``teacher_layer`` counts teacher decoder blocks
    (1-based: 4 = after four blocks). The MLP head maps the student's decoder width to the teacher's (hidden
    = out = the teacher's width, GELU, the official ``Mlp``). Term ``generic``; validation reports it under
    a fixed mask (``val/generic``). With ``teacher=None`` it is MAE pre-training (the no-teacher arm)."""

    def __init__(
        self,
        student: MaskedAutoencoder | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        mask_ratio: float = 0.75,
        teacher_layer: int = 4,
        beta: float = 2.0,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student, teacher, init_weights, mask_ratio, loss_weights, optimizer, lr_scheduler)
        self.beta = beta
        if self.teacher is not None:
            network = self.teacher.network
            if not isinstance(network, MaskedAutoencoder):
                got = type(network).__name__
                raise TypeError(f"G2SD's teacher must be a MaskedAutoencoder (it reads the decoder), got {got}")
            self.check_teacher_grid(network.encoder)
            if not 1 <= teacher_layer <= network.decoder.depth:
                raise ValueError(f"teacher_layer must be in 1..{network.decoder.depth}, got {teacher_layer}")
            self.teacher_layer = teacher_layer
            width = self.student.decoder.decoder_embed.out_features
            target = network.decoder.decoder_embed.out_features
            self.projectors["decoder"] = make_projector("mlp", width, target, hidden_dim=target)

    def generic_terms(self, images: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """One noise tensor, so one mask, for teacher and student (the official shared ``noise``)."""
        mask = random_mask(images.shape[0], self.student.encoder.num_patches, self.mask_ratio, noise=noise)
        latent, _ = self.student.encoder(images, mask)
        hidden = self.student.decoder.forward_hidden(latent, mask, self.student.decoder.depth)
        teacher = self.teacher.network
        with torch.no_grad():
            t_latent, _ = teacher.encoder(images, mask)
            target = teacher.decoder.forward_hidden(t_latent, mask, self.teacher_layer)
        return {"generic": generic_loss(self.projectors["decoder"](hidden), target, self.beta)}

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.teacher is None:
            return super().distill_loss(batch)
        images = batch["image"]
        noise = torch.rand(images.shape[0], self.student.encoder.num_patches, device=images.device)
        return self.generic_terms(images, noise)

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        if self.teacher is None:
            return super().evaluate(batch, stage)
        return self.generic_terms(batch["image"], self.eval_noise(batch))


@exportable
class DistilledViT(nn.Module):
    """A ViT classifier with a distillation token (``models_vit.py`` with ``distillation=True``): the token is
    appended after the positional embedding is added (so, unlike DeiT's, it has no position) and read out of
    the final norm by ``head_dist``. ``forward`` averages the two heads (``use_distoken``, how G2SD reports
    accuracy); ``both`` returns (cls logits, dist logits) for training. ``vit_kwargs`` are ``TimmViT``'s
    (``timm_kwargs`` with ``num_classes``, ``global_pool="token"``; ``mean``/``std``). Images in [0, 1]."""

    def __init__(self, vit_kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = TimmViT(**vit_kwargs)
        vit = self.backbone.vit
        if vit.cls_token is None or vit.num_classes < 1 or vit.global_pool != "token":
            raise ValueError(
                "DistilledViT needs a CLS token, num_classes >= 1 and global_pool='token' (G2SD's student)"
            )
        self.dist_token = nn.Parameter(torch.zeros(1, 1, vit.embed_dim))
        self.head_dist = nn.Linear(vit.embed_dim, vit.num_classes)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
        nn.init.zeros_(self.head_dist.bias)

    @property
    def num_classes(self) -> int:
        return self.head_dist.out_features

    def reset_classes(self, num_classes: int) -> None:
        """Fresh CLS and distillation heads for ``num_classes``, recorded in the export spec."""
        self.backbone.reset_classes(num_classes)
        self.head_dist = nn.Linear(self.backbone.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
        nn.init.zeros_(self.head_dist.bias)
        self.init_args = dict(self.init_args, vit_kwargs=dict(self.init_args["vit_kwargs"],
                              timm_kwargs=self.backbone.init_args["timm_kwargs"]))  # fmt: skip

    def both(self, images: Tensor) -> tuple[Tensor, Tensor]:
        vit = self.backbone.vit
        x = vit._pos_embed(vit.patch_embed(self.backbone.normalize(images)))  # CLS + positions
        x = torch.cat([x, self.dist_token.expand(x.shape[0], -1, -1)], dim=1)  # no position for it
        x = vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(x))))
        return vit.head(vit.head_drop(x[:, 0])), self.head_dist(x[:, -1])

    def forward(self, images: Tensor) -> Tensor:
        cls, dist = self.both(images)
        return (cls + dist) / 2


def load_encoder(student: nn.Module, source: str, owner: str | None = None) -> list[str]:
    """Copy the encoder of a ``MaskedAutoencoder`` (``zoo:NAME``, a safetensors path, or the Lightning
    ``.ckpt`` of a pre-training stage) into ``student``'s ViT (a ``TimmViT`` or a ``DistilledViT``), as MAE
    fine-tuning starts from the pre-trained encoder; heads, the distillation token and a global-pool
    ``fc_norm`` stay fresh. Returns the fresh tensors' names (printed, with ``owner``, as a run's log says)."""
    mae = export.load_network(source)
    if not isinstance(mae, MaskedAutoencoder):
        raise TypeError(f"{source} is a {type(mae).__name__}, not a MaskedAutoencoder whose encoder to fine-tune")
    vit = student.backbone.vit if isinstance(student, DistilledViT) else student.vit
    state = {k: v for k, v in mae.encoder.vit.state_dict().items() if not k.startswith("head")}
    if getattr(vit, "fc_norm", None) is not None and not isinstance(vit.fc_norm, nn.Identity):
        state = {k: v for k, v in state.items() if not k.startswith("norm.")}  # global pool: a fresh fc_norm
    own = vit.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise ValueError(f"the encoder of {source} does not fit the student ViT: {'; '.join(wrong)}")
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"the encoder of {source} has tensors the student ViT lacks: {unexpected}")
    if owner is not None:
        print(f"{owner}: encoder from {source}; fresh: {', '.join(missing) or 'none'}")
    return list(missing)


class SpecificDistill(DistillModule):
    """G2SD's specific stage and plain fine-tuning (``engine_finetune_dis.py``): ``student`` a
    ``DistilledViT`` (or a ``TimmViT`` classifier, trained with CE alone), ``teacher`` a fine-tuned classifier
    (frozen). ``init_encoder`` (``zoo:NAME`` or a path of a ``MaskedAutoencoder``) starts the student's
    encoder from a pre-training stage. Terms ``cls`` (CE of the CLS head to the labels, ``smoothing`` as the
    recipe says) and ``dist`` (CE of the distillation head to the teacher's argmax), weighted 1/2 each as
    official; without a teacher ``dist`` learns the labels. Metric ``acc`` (top-1 of the averaged heads)."""

    def __init__(
        self,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        init_encoder: str | None = None,
        smoothing: float = 0.0,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        weights = {"cls": 0.5, "dist": 0.5} | dict(loss_weights or {})
        super().__init__(student, teacher, init_weights, weights, optimizer, lr_scheduler)
        if init_encoder is not None:
            load_encoder(self.student, init_encoder, owner=type(self).__name__)
        self.smoothing = smoothing
        if not isinstance(self.student, DistilledViT):
            self.loss_weights = {"cls": 1.0} | dict(loss_weights or {})  # one head: plain fine-tuning

    def setup(self, stage: str) -> None:
        """Fit the student to the datamodule before anything is built on it: a folder with another class count
        gets fresh heads (logged), an image size the ViT was not made for fails naming both."""
        datamodule = self.attached_datamodule
        classes = getattr(datamodule, "num_classes", None) if getattr(datamodule, "labels", True) else None
        if isinstance(classes, int) and classes != self.student.num_classes:
            if self.teacher is not None:
                raise ValueError(
                    f"{type(self).__name__}: the teacher predicts {self.student.num_classes} classes, the data at "
                    f"{getattr(datamodule, 'root', '?')} has {classes}; distil on the teacher's classes, or fine-tune "
                    "without a teacher"
                )
            rank_zero_info(
                f"{type(self).__name__}: the student's head has {self.student.num_classes} classes, the data at "
                f"{getattr(datamodule, 'root', None) or 'the embedded default'} {classes}: the head is replaced"
            )
            self.student.reset_classes(classes)
        vit = self.student.backbone if isinstance(self.student, DistilledViT) else self.student
        check_image_size(type(self).__name__, vit, datamodule)
        super().setup(stage)

    def heads(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        if isinstance(self.student, DistilledViT):
            return self.student.both(images)
        return self.student(images), None

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images, labels = batch["image"], batch["label"]
        cls, dist = self.heads(images)
        terms = {"cls": F.cross_entropy(cls, labels, label_smoothing=self.smoothing)}
        if dist is not None:
            if self.teacher is not None:
                hard = self.teacher(images).argmax(dim=-1)  # hard-label distillation (DeiT's, as official)
                terms["dist"] = F.cross_entropy(dist, hard)
            else:
                terms["dist"] = F.cross_entropy(dist, labels, label_smoothing=self.smoothing)
        return terms

    def configure_metrics(self) -> MetricCollection:
        classes = self.student.num_classes
        return MetricCollection({"acc": MulticlassAccuracy(classes, average="micro")})

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        logits = self.student(batch["image"])
        self.stage_metrics[stage]["acc"].update(logits, batch["label"])
        return {"loss": F.cross_entropy(logits, batch["label"])}

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])


def channel_wise_divergence(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """Channel-wise distillation (Shu et al., ICCV 2021), G2SD's specific term for segmentation
    (``G2SD_seg_dis/.../losses/cwd.py`` on the decode head's logits): each class channel's map is turned into
    a distribution over positions, ``softmax(logits / tau)`` over h*w, and the student's is pulled to the
    teacher's by KL, times tau^2, averaged over images and channels. student, teacher [B, C, h, w] -> scalar.
    The official code sums the cross-entropy ``-p_T log p_S`` instead, which differs from the KL by the
    teacher's entropy, a constant: the same gradient, and 0 here when the maps agree."""
    if student.shape != teacher.shape:
        raise ValueError(f"channel_wise_divergence: student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
    return kd_kl(student.flatten(2), teacher.flatten(2), temperature=tau)


@exportable
class ViTSegmenter(nn.Module):
    """A ViT with a linear segmentation head, trained end to end: G2SD's specific-stage student for a dense task,
    and its fine-tuned teacher. ``vit_kwargs`` are ``TimmViT``'s (headless: ``num_classes`` is forced to 0; any
    input size that is a multiple of the patch, the positional embedding interpolated); the head is the dense
    probe's BatchNorm + 1x1 conv on the last layer's patch map (:class:`~modules.nets.probes.SegmentationProbe`).
    The official runs put an UperNet head on blocks 4, 6, 8 and 12 of a ViT-S; one linear head on the last
    block is our CPU scale-down. Images in [0, 1] -> logits [B, num_classes, H, W]."""

    def __init__(self, vit_kwargs: dict[str, Any], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        kwargs = dict(vit_kwargs)
        kwargs["timm_kwargs"] = dict(kwargs.get("timm_kwargs") or {}) | {"num_classes": 0}
        self.backbone = TimmViT(**(kwargs | {"dynamic_img_size": True}))
        self.head = SegmentationProbe(self.backbone.embed_dim, num_classes, dropout)

    @property
    def num_classes(self) -> int:
        return self.head.conv.out_channels

    def reset_classes(self, num_classes: int) -> None:
        """A fresh head for ``num_classes``, recorded in the export spec."""
        self.head = SegmentationProbe(self.backbone.embed_dim, num_classes, self.head.dropout.p)
        self.init_args = dict(self.init_args, num_classes=num_classes)

    def logit_map(self, images: Tensor) -> Tensor:
        """Logits at the patch grid [B, num_classes, h, w] (what channel-wise distillation compares)."""
        return self.head(self.backbone.dense_features(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone.dense_features(images), size=images.shape[-2:])


class SegmentSpecificDistill(DistillModule):
    """G2SD's specific stage where the task is segmentation (``G2SD_seg_dis``, ``distill_cwd.py``): ``student`` a
    :class:`ViTSegmenter` whose encoder ``init_encoder`` starts from a pre-training stage (a ``MaskedAutoencoder``:
    ``zoo:NAME``, a path or a stage's ``.ckpt``), ``teacher`` a fine-tuned segmenter (frozen). Terms ``ce``
    (cross-entropy of the upsampled logits to the labels, ``ignore_index`` left out; weight 1) and ``cwd``
    (:func:`channel_wise_divergence` of the patch-grid logits, ``tau`` 1, weight 10 as official; a teacher on
    another grid is resized bilinearly to the student's). ``teacher=None`` is plain fine-tuning, which is
    also how the teacher is trained. Batches are the segmentation datamodule's ``{"image", "mask"}``; metrics
    ``miou`` (the classes, ignore index excluded) and pixel ``acc``."""

    def __init__(
        self,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        init_encoder: str | None = None,
        ignore_index: int = 11,
        tau: float = 1.0,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if tau <= 0:
            raise ValueError(f"SegmentSpecificDistill: tau must be > 0, got {tau}")
        weights = {"ce": 1.0, "cwd": 10.0} | dict(loss_weights or {})
        super().__init__(student, teacher, init_weights, weights, optimizer, lr_scheduler)
        if not isinstance(self.student, ViTSegmenter):
            kind = type(self.student).__name__
            raise TypeError(f"SegmentSpecificDistill: the student must be a ViTSegmenter, got {kind}")
        teacher_classes = getattr(getattr(self.teacher, "network", None), "num_classes", None)
        if teacher_classes is not None and teacher_classes != self.student.num_classes:
            raise ValueError(
                f"SegmentSpecificDistill: the teacher segments {teacher_classes} classes, the student "
                f"{self.student.num_classes}; channel-wise distillation pairs the classes one to one"
            )
        if init_encoder is not None:
            load_encoder(self.student.backbone, init_encoder, owner=type(self).__name__)
        self.ignore_index, self.tau = ignore_index, tau

    @property
    def num_classes(self) -> int:
        return self.student.num_classes

    def setup(self, stage: str) -> None:
        """The data's classes must be the student's, except in plain fine-tuning, where a folder with another
        class count gets a fresh head (logged); the ignore index must agree."""
        datamodule = self.attached_datamodule
        classes = getattr(datamodule, "num_classes", None)
        if isinstance(classes, int) and classes != self.num_classes and self.teacher is None:
            rank_zero_info(
                f"{type(self).__name__}: the student's head has {self.num_classes} classes, the data "
                f"{classes}: the head is replaced"
            )
            self.student.reset_classes(classes)
        self.require_data_agrees("num_classes", "ignore_index")
        super().setup(stage)

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images, mask = batch["image"], batch["mask"]
        maps = self.student.logit_map(images)
        logits = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        terms = {"ce": F.cross_entropy(logits, mask, ignore_index=self.ignore_index)}
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher.network.logit_map(images)
            if target.shape[-2:] != maps.shape[-2:]:
                target = F.interpolate(target, size=maps.shape[-2:], mode="bilinear", align_corners=False)
            terms["cwd"] = channel_wise_divergence(maps, target, self.tau)
        return terms

    def configure_metrics(self) -> MetricCollection:
        kwargs: dict[str, Any] = {"ignore_index": self.ignore_index}
        return MetricCollection({
            "miou": MulticlassJaccardIndex(self.num_classes, average="macro", **kwargs),
            "acc": MulticlassAccuracy(self.num_classes, average="micro", **kwargs),
        })  # fmt: skip

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        images, mask = batch["image"], batch["mask"]
        logits = self.student(images)
        for metric in self.stage_metrics[stage].values():
            metric.update(logits, mask)
        return {"loss": F.cross_entropy(logits, mask, ignore_index=self.ignore_index)}

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])
