"""Losses shared by two or more methods: pure functions, tensors in, tensor out.

A loss used by a single method lives in that method's file (for example FF-G2M's edge losses in
``modules/graph_mlp.py``); the ones here are the common vocabulary of the distillation literature.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor


def _check_same_shape(loss: str, student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{loss}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}")


def _check_reduction(loss: str, reduction: str, allowed: tuple[str, ...]) -> None:
    if reduction not in allowed:
        raise ValueError(f"{loss}: reduction must be one of {allowed}, got {reduction!r}")


def kd_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    scale_t2: bool = True,
    reduction: Literal["batchmean", "none"] = "batchmean",
) -> Tensor:
    """Knowledge-distillation KL (Hinton et al. 2015): ``KL(softmax(t/T) || softmax(s/T))`` over the last dim.

    student_logits [..., C], teacher_logits [..., C] -> scalar with ``reduction="batchmean"`` (the sum over
    classes averaged over the rows, PyTorch's ``KLDivLoss(reduction="batchmean")`` for [N, C]), or the
    per-row KL [...] with ``"none"``. ``scale_t2`` multiplies by T^2 so that gradients keep their size
    across temperatures, as Hinton's KD does; FF-G2M's HFD term and UNIEGO's SPD do not.
    """
    _check_same_shape("kd_kl", student_logits, teacher_logits)
    _check_reduction("kd_kl", reduction, ("batchmean", "none"))
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    rows = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1)
    loss = rows.mean() if reduction == "batchmean" else rows
    return loss * temperature**2 if scale_t2 else loss


def cosine_distance(
    student: Tensor, teacher: Tensor, dim: int = -1, reduction: Literal["mean", "none"] = "mean"
) -> Tensor:
    """``1 - cos(student, teacher)`` along ``dim``: its mean, or every value with ``reduction="none"``.

    student [..., D, ...], teacher of the same shape -> scalar, or the shape without ``dim``.
    """
    _check_same_shape("cosine_distance", student, teacher)
    _check_reduction("cosine_distance", reduction, ("mean", "none"))
    distance = 1.0 - F.cosine_similarity(student, teacher, dim=dim)
    return distance.mean() if reduction == "mean" else distance


def feature_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between features of the same shape (FitNets-style hint loss) -> scalar."""
    _check_same_shape("feature_mse", student, teacher)
    return F.mse_loss(student, teacher)


def feature_smooth_l1(student: Tensor, teacher: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth-L1 (Huber with threshold ``beta``) between features of the same shape -> scalar."""
    _check_same_shape("feature_smooth_l1", student, teacher)
    return F.smooth_l1_loss(student, teacher, beta=beta)


__all__ = ["cosine_distance", "feature_mse", "feature_smooth_l1", "kd_kl"]
