"""DMAE: "Masked Autoencoders Enable Efficient Knowledge Distillers" (Bai et al., CVPR 2023, arXiv 2208.12256),
following UCSC-VLAA/DMAE ``models_mae_distill.py`` and ``engine_distill.py``.

The frozen teacher is an MAE-pretrained ViT. Per batch the teacher draws the random mask (ratio 0.75) and
the student, an MAE of its own, embeds the same visible patches. The loss is MAE's masked-patch pixel loss
of the student plus an L1 distance between the L2-normalised teacher features at an aligned block and the
student's features at its aligned block, projected to the teacher's width by a linear head, over every
visible token and CLS. Both are block outputs before the final norm (official: student block 8 of 12 with
teacher block 17 of 24, 0-based). The paper argues the teacher need only run up to its aligned block; the
official code runs it whole. Here it stops there (``MAEEncoder.forward_until``): the same loss, fewer
FLOPs (``benchmarks/vision_distill_speed.py`` shows how many).

With ``teacher=None`` the same module is MAE pre-training of the student alone: the no-teacher arm, and
how the MAE teacher itself is trained.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from modules.core import DistillModule, make_projector
from modules.nets import MaskedAutoencoder, PatchMask, random_mask
from modules.nets.vit import check_image_size


def dmae_feature_loss(student: Tensor, teacher: Tensor, kind: Literal["l1", "l2"] = "l1") -> Tensor:
    """DMAE's distillation term: ``L1(normalize(teacher), normalize(student))`` over the last dim, mean over
    every element (``nn.L1Loss()`` in the official code; ``l2`` is its MSE option). student, teacher
    [B, T, D] (the student already projected to the teacher's width) -> scalar."""
    if student.shape != teacher.shape:
        raise ValueError(f"student features {list(student.shape)} and teacher features {list(teacher.shape)} differ")
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    return F.l1_loss(s, t) if kind == "l1" else F.mse_loss(s, t)


def aligned_block(index: int, depth: int, who: str) -> int:
    """A 0-based block index (negative counts from the end) checked against ``depth``."""
    if not -depth <= index < depth:
        raise ValueError(f"{who}_block {index} is out of range for a {who} of {depth} blocks")
    return index % depth


class MAEPretrain(DistillModule):
    """MAE pre-training (facebookresearch/mae ``engine_pretrain.py``) of ``student``, a ``MaskedAutoencoder``:
    a random mask at ``mask_ratio`` per batch, the masked-patch pixel loss (term ``pixel``). It is the base of
    DMAE and G2SD's generic stage, which add their teacher's term, and with ``teacher=None`` it is their
    no-teacher arm and how their MAE teacher is trained. Validation and test report the pixel loss under a
    mask fixed by the batch's first sample index (``val/pixel``), so epochs compare."""

    def __init__(
        self,
        student: MaskedAutoencoder | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        mask_ratio: float = 0.75,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student, teacher, init_weights, loss_weights, optimizer, lr_scheduler)
        if not isinstance(self.student, MaskedAutoencoder):
            raise TypeError(
                f"{type(self).__name__}'s student must be a MaskedAutoencoder, got {type(self.student).__name__}"
            )
        patches = self.student.encoder.num_patches
        if not 0.0 <= mask_ratio < 1.0 or round(patches * (1 - mask_ratio)) < 1:
            raise ValueError(
                f"mask_ratio {mask_ratio} leaves no visible patch of {patches}; expected a ratio in [0, 1) that "
                "keeps at least one"
            )
        self.mask_ratio = mask_ratio

    def setup(self, stage: str) -> None:
        datamodule = self.attached_datamodule
        check_image_size(type(self).__name__, self.student.encoder, datamodule)
        super().setup(stage)

    def check_teacher_grid(self, teacher_encoder: Any) -> None:
        """Teacher and student must cut images into the same patches to share a mask."""
        if teacher_encoder.num_patches != self.student.encoder.num_patches:
            raise ValueError(
                f"teacher and student must share the patch grid to share a mask: teacher "
                f"{teacher_encoder.grid_size}, student {self.student.encoder.grid_size}"
            )

    def pixel_terms(self, images: Tensor, mask: PatchMask) -> dict[str, Tensor]:
        return {"pixel": self.student.loss(self.student(images, mask), images, mask)}

    def eval_noise(self, batch: dict[str, Tensor]) -> Tensor:
        """Mask noise fixed by the batch (its first sample index), so validation scores compare across epochs."""
        images = batch["image"]
        seed = int(batch["index"][0]) if "index" in batch else 0
        generator = torch.Generator(device=images.device).manual_seed(seed)
        return torch.rand(images.shape[0], self.student.encoder.num_patches, generator=generator, device=images.device)

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        return self.pixel_terms(images, self.student.encoder.random_mask(images.shape[0], self.mask_ratio))

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        images = batch["image"]
        mask = random_mask(images.shape[0], self.student.encoder.num_patches, self.mask_ratio, self.eval_noise(batch))
        return self.pixel_terms(images, mask)

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])


class DMAE(MAEPretrain):
    """DMAE pre-training (``models_mae_distill.py``): ``student`` a ``MaskedAutoencoder`` trained from scratch,
    ``teacher`` a frozen MAE (a ``MaskedAutoencoder``, e.g. ``Teacher(weights="zoo:NAME")``) over the same
    patch grid. ``student_block`` / ``teacher_block`` are the aligned blocks (0-based; negative counts from
    the end). ``projector``: ``linear`` (the official ``fc-1layer`` default) or ``mlp``. ``distill`` picks
    L1 (official) or L2. Loss terms ``pixel`` and ``distill`` (``loss_weights`` scale them; both 1 as
    official). ``truncate_teacher=False`` runs the whole teacher and its decoder as the official code does:
    the same loss at a higher cost (the benchmark's comparison). Validation and test report the student's
    masked pixel loss (``val/pixel``)."""

    def __init__(
        self,
        student: MaskedAutoencoder | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        mask_ratio: float = 0.75,
        student_block: int = 8,
        teacher_block: int = 17,
        projector: Literal["linear", "mlp"] = "linear",
        distill: Literal["l1", "l2"] = "l1",
        truncate_teacher: bool = True,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student, teacher, init_weights, mask_ratio, loss_weights, optimizer, lr_scheduler)
        self.distill, self.truncate_teacher = distill, truncate_teacher
        encoder = self.student.encoder
        if self.teacher is not None:  # the aligned blocks matter only with a teacher (MAE alone has none)
            self.student_block = aligned_block(student_block, encoder.depth, "student")
            t_encoder = self.teacher_encoder()
            self.check_teacher_grid(t_encoder)
            self.teacher_block = aligned_block(teacher_block, t_encoder.depth, "teacher")
            self.projectors["features"] = make_projector(projector, encoder.embed_dim, t_encoder.embed_dim)

    def teacher_encoder(self) -> Any:
        """The teacher's ``MAEEncoder`` (the teacher may be a whole ``MaskedAutoencoder``)."""
        network = self.teacher.network
        return network.encoder if isinstance(network, MaskedAutoencoder) else network

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.teacher is None:
            return super().distill_loss(batch)
        images = batch["image"]
        teacher = self.teacher_encoder()
        mask = teacher.random_mask(images.shape[0], self.mask_ratio)  # the teacher draws it, as official
        latent, (hidden,) = self.student.encoder(images, mask, [self.student_block])
        terms = {"pixel": self.student.loss(self.student.decoder(latent, mask), images, mask)}
        with torch.no_grad():
            if self.truncate_teacher:
                target = teacher.forward_until(images, mask, self.teacher_block)
            else:  # the official code: every teacher block and the teacher's decoder, whose output goes unused
                t_latent, (target,) = teacher(images, mask, [self.teacher_block])
                if isinstance(self.teacher.network, MaskedAutoencoder):
                    self.teacher.network.decoder(t_latent, mask)
        terms["distill"] = dmae_feature_loss(self.projectors["features"](hidden), target, self.distill)
        return terms
