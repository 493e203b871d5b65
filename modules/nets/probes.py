"""Frozen-backbone dense probes: the linear heads that measure how much a ViT's patch tokens know about
segmentation and depth (DINOv2's linear evaluation, used by PH-Reg and G2SD's dense-probe arm).

A head takes a [B, D, h, w] feature map (``tokens_to_map`` turns ViT tokens into one) and returns an output
at the input's resolution. ``DenseProbe`` puts a head on a frozen backbone so only the head trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.core import Teacher
from zoo.specs import exportable


def tokens_to_map(tokens: Tensor, num_prefix_tokens: int, grid: Sequence[int], concat_cls: bool = False) -> Tensor:
    """ViT tokens [B, num_prefix_tokens + h*w, D] (prefix first, patches in raster order, as timm orders them)
    -> patch feature map [B, D, h, w]. With ``concat_cls`` the first prefix token (timm's CLS position) is
    broadcast to every cell and concatenated, [B, 2D, h, w], as DINOv2's depth probe reads [patch ⊕ CLS]."""
    h, w = int(grid[0]), int(grid[1])
    b, n, d = tokens.shape
    if n != num_prefix_tokens + h * w:
        raise ValueError(
            f"{n} tokens are not {num_prefix_tokens} prefix tokens + a {h}x{w} grid ({num_prefix_tokens + h * w})"
        )
    patches = tokens[:, num_prefix_tokens:].transpose(1, 2).reshape(b, d, h, w)
    if not concat_cls:
        return patches
    if num_prefix_tokens < 1:
        raise ValueError("concat_cls needs a CLS token, but the tokens have no prefix")
    return torch.cat([patches, tokens[:, 0, :, None, None].expand(-1, -1, h, w)], dim=1)


def _upsample(x: Tensor, size: Sequence[int] | None) -> Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


@exportable
class SegmentationProbe(nn.Module):
    """The linear segmentation probe of DINOv2 (``BNHead`` in ``dinov2/eval/segmentation``) that PH-Reg
    evaluates with (``evaluation/segmentation/.../decode_head/head.py``): BatchNorm2d then a 1×1 conv from
    ``in_dim`` to ``num_classes`` on last-layer patch features [B, in_dim, h, w]; the logits are upsampled
    bilinearly to ``size`` (the input's H, W). ``dropout`` before the conv (0 in DINOv2's linear config)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.conv = nn.Conv2d(in_dim, num_classes, kernel_size=1)

    def forward(self, features: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """[B, in_dim, h, w] -> logits [B, num_classes, *size] (or at h, w without ``size``)."""
        return _upsample(self.conv(self.dropout(self.bn(features))), size)


@exportable
class DepthProbe(nn.Module):
    """The linear depth probe of DINOv2 (``BNHead`` / ``DepthBaseDecodeHead.depth_pred`` in ``dinov2/eval/depth``,
    the NYUv2 linear protocol PH-Reg follows): BatchNorm2d and a 1×1 conv on patch features (``in_dim`` doubles with
    ``tokens_to_map(concat_cls=True)``). Output: one depth channel [B, 1, H, W], upsampled bilinearly, always
    positive. With ``bins > 1`` (DINOv2: 256) the conv scores ``bins`` uniformly spaced depths in
    [``min_depth``, ``max_depth``] and depth is their weighted mean with weights ``relu(score) + 0.1``
    normalised to sum to one (DINOv2's "linear" bin normalisation), so depth stays inside the range.
    With ``bins == 1`` the conv regresses depth directly as ``min_depth + softplus(z)`` (softplus rather than
    DINOv2's ReLU, so no pixel's gradient dies). Bilinear upsampling mixes positive values convexly, so
    both stay positive (and the binned one in range) at full resolution."""

    def __init__(self, in_dim: int, bins: int = 256, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        super().__init__()
        if bins < 1:
            raise ValueError(f"DepthProbe: bins must be >= 1, got {bins}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"DepthProbe: need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.bn = nn.BatchNorm2d(in_dim)
        self.conv = nn.Conv2d(in_dim, bins, kernel_size=1)
        self.register_buffer("bin_centres", torch.linspace(min_depth, max_depth, bins), persistent=False)

    def forward(self, features: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """[B, in_dim, h, w] -> depth [B, 1, *size] (or at h, w without ``size``)."""
        scores = self.conv(self.bn(features))
        if scores.shape[1] == 1:
            depth = self.min_depth + F.softplus(scores)
        else:
            weights = torch.relu(scores) + 0.1
            weights = weights / weights.sum(dim=1, keepdim=True)
            depth = torch.einsum("bkhw,k->bhw", weights, self.bin_centres.to(weights.dtype))[:, None]
        return _upsample(depth, size)


class DenseProbe(nn.Module):
    """A probe head on a frozen backbone, the frozen linear-evaluation protocol of DINOv2 that PH-Reg reports:
    the backbone is wrapped in ``modules.core.Teacher`` (no grad, always eval, BatchNorm and dropout never
    move), its final-norm tokens (``backbone.forward_features``, e.g. ``TimmViT`` or ``MAEEncoder``) are
    reshaped with ``tokens_to_map`` on ``backbone.grid_for(image size)`` and ``backbone.num_prefix_tokens``,
    and ``head`` (``SegmentationProbe`` / ``DepthProbe``) returns its output at the input's resolution. Only
    the head trains; export the head, since the backbone is its own entry."""

    def __init__(self, backbone: nn.Module, head: nn.Module, concat_cls: bool = False) -> None:
        super().__init__()
        for attr in ("forward_features", "grid_for", "num_prefix_tokens"):
            if not hasattr(backbone, attr):
                raise TypeError(f"DenseProbe: the backbone {type(backbone).__name__} has no {attr!r}")
        self.backbone = backbone if isinstance(backbone, Teacher) else Teacher(network=backbone)
        self.head = head
        self.concat_cls = concat_cls

    def features(self, images: Tensor) -> Tensor:
        """The frozen backbone's patch feature map [B, D (or 2D), h, w]."""
        net = self.backbone.network
        with torch.no_grad():
            tokens = net.forward_features(images)
        return tokens_to_map(tokens, net.num_prefix_tokens, net.grid_for(images.shape[-2:]), self.concat_cls)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images), size=images.shape[-2:])
