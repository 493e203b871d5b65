"""Losses shared by two or more methods: pure functions, tensors in, tensor out.

A loss used by a single method lives in that method's file (for example FF-G2M's edge losses in
``modules/graph_mlp.py``); the ones here are the common vocabulary of the distillation literature.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _check_same_shape(loss: str, student: Tensor, teacher: Tensor) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{loss}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}")


def kd_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, scale_t2: bool = True) -> Tensor:
    """Knowledge-distillation KL (Hinton et al. 2015): ``KL(softmax(t/T) || softmax(s/T))``.

    student_logits [N, C], teacher_logits [N, C] -> scalar. The sum over classes is averaged over
    the N rows (PyTorch's ``KLDivLoss(reduction="batchmean")``). ``scale_t2`` multiplies by T^2 so
    that gradients keep their size across temperatures, as Hinton's KD does; FF-G2M's HFD term
    does not, so it passes ``scale_t2=False``.
    """
    _check_same_shape("kd_kl", student_logits, teacher_logits)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return loss * temperature**2 if scale_t2 else loss


def cosine_distance(student: Tensor, teacher: Tensor, dim: int = -1) -> Tensor:
    """Mean of ``1 - cos(student, teacher)`` along ``dim``.

    student [..., D], teacher [..., D] (same shape) -> scalar.
    """
    _check_same_shape("cosine_distance", student, teacher)
    return (1.0 - F.cosine_similarity(student, teacher, dim=dim)).mean()


def feature_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between features of the same shape (FitNets-style hint loss) -> scalar."""
    _check_same_shape("feature_mse", student, teacher)
    return F.mse_loss(student, teacher)


def feature_smooth_l1(student: Tensor, teacher: Tensor, beta: float = 1.0) -> Tensor:
    """Smooth-L1 (Huber with threshold ``beta``) between features of the same shape -> scalar."""
    _check_same_shape("feature_smooth_l1", student, teacher)
    return F.smooth_l1_loss(student, teacher, beta=beta)


__all__ = ["cosine_distance", "feature_mse", "feature_smooth_l1", "kd_kl"]
