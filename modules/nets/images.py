"""The base of convolutional image networks that take images in [0, 1], as the readers return them, and normalise
inside (so a zoo-loaded network needs no preprocessing step)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from modules.nets.vit import IMAGENET_MEAN, IMAGENET_STD


class NormalisedInput(nn.Module):
    """Holds ImageNet's mean and std as non-persistent buffers; ``normalize`` checks for RGB [B, 3, H, W]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{type(self).__name__} takes RGB images [B, 3, H, W] in [0, 1], got {list(images.shape)}")
        return (images - self.mean) / self.std
