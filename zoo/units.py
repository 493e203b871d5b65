"""Physical units the zoo's input contracts speak in, shared by datamodules and methods: CT attenuation and
Hounsfield units, and the official GloReDi metric window. Numpy arrays and torch tensors alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

MU_WATER = 0.192  # the official GloReDi code's attenuation of water (per cm); air is 0


def hu_to_mu(hu: Any, clip: bool = True) -> Any:
    """Hounsfield units -> linear attenuation ``mu = HU / 1000 * 0.192 + 0.192`` (water 0.192, air 0).

    Works on numpy arrays and torch tensors (and floats). With ``clip`` (the default) ``mu`` is clipped at 0
    from below: anything darker than air (DeepLesion's -1024 background, its -32768 padding) becomes air.
    """
    mu = hu / 1000 * MU_WATER + MU_WATER
    if not clip:
        return mu
    return mu.clamp(min=0) if torch.is_tensor(mu) else np.maximum(mu, 0)


def mu_to_hu(mu: Any) -> Any:
    """Linear attenuation -> Hounsfield units, the inverse of :func:`hu_to_mu` (``(mu - 0.192) / 0.192 * 1000``)."""
    return (mu - MU_WATER) / MU_WATER * 1000


def hu_window(image: Tensor, width: float = 3000.0, centre: float = 500.0, units: str = "mu") -> Tensor:
    """The official metric window: ``image`` (attenuation ``mu``, or HU with ``units="hu"``) -> HU -> clipped
    to ``[centre - width / 2, centre + width / 2]`` (default [-1000, 2000] HU) -> scaled to [0, 1]. Tensor in
    (any shape), float tensor out."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    if units not in ("mu", "hu"):
        raise ValueError(f"units must be 'mu' or 'hu', got {units!r}")
    image = torch.as_tensor(image).float()
    low = centre - width / 2
    return (((image if units == "hu" else mu_to_hu(image)) - low) / width).clamp(0, 1)
