"""Student-side projectors that map student features to the teacher's width, sized from shapes."""

from __future__ import annotations

from typing import Literal

from torch import nn

ProjectorKind = Literal["linear", "conv1x1", "mlp", "identity"]


def make_projector(kind: ProjectorKind, in_dim: int, out_dim: int, hidden_dim: int | None = None) -> nn.Module:
    """A projector from ``in_dim`` to ``out_dim`` channels.

    ``linear`` acts on the last dim ([..., in] -> [..., out]); ``conv1x1`` on channels of
    [B, in, H, W] maps (1x1 conv + BatchNorm, as FitNets-style regressors); ``mlp`` is
    Linear-GELU-Linear with ``hidden_dim`` (default ``out_dim``); ``identity`` needs equal dims.
    """
    if kind == "identity":
        if in_dim != out_dim:
            raise ValueError(f"identity projector needs equal widths, got student {in_dim} and teacher {out_dim}")
        return nn.Identity()
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "conv1x1":
        return nn.Sequential(nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=False), nn.BatchNorm2d(out_dim))
    if kind == "mlp":
        hidden = hidden_dim or out_dim
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
    raise ValueError(f"unknown projector kind {kind!r}; expected linear, conv1x1, mlp or identity")


def projector_for(
    student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], kind: ProjectorKind | None = None
) -> nn.Module:
    """Size a projector from example feature shapes: channels-first 4-D maps get ``conv1x1``,
    token or vector features ``linear``; equal widths with no ``kind`` give ``identity``."""
    spatial = len(student_shape) == 4
    in_dim = student_shape[1] if spatial else student_shape[-1]
    out_dim = teacher_shape[1] if spatial else teacher_shape[-1]
    if kind is None:
        kind = "identity" if in_dim == out_dim else ("conv1x1" if spatial else "linear")
    return make_projector(kind, in_dim, out_dim)
