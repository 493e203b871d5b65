"""The frozen teacher wrapper every distillation method uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo import export, store


class Teacher(nn.Module):
    """A frozen, always-eval, no-grad teacher with a provenance manifest.

    Wraps ``network`` (or builds it from the constructor spec stored with ``weights``) and loads
    ``weights`` (``zoo:NAME`` or a ``.safetensors`` path, sha256-verified; or the Lightning ``.ckpt`` of an
    earlier evidence arm or stage, whose student becomes the teacher, as ``{after}`` gives it). Its parameters never
    require grad, ``train(True)`` leaves it in eval so BatchNorm statistics and dropout never
    move, and ``forward`` runs under ``torch.no_grad()`` (not ``inference_mode``, whose tensors
    cannot be saved for the student's backward). Optional ``mean``/``std`` re-normalise the
    student's input to the teacher's own statistics, as timm's ``DistillationTeacher`` does.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        weights: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if network is None and weights is None:
            raise ValueError("Teacher needs a network, weights (zoo:NAME or a .safetensors path), or both")
        sha256 = None
        if weights is not None and str(weights).endswith(".ckpt"):
            resolved = export.checkpoint_weights(weights)  # one read and one hash; a mismatch names tensors
            network = network if network is not None else store.build(resolved.spec, str(weights))
            store.load_into(network, resolved)
            sha256 = resolved.sha256
        elif weights is not None:
            if network is None:
                network = store.load(weights)
                sha256 = network.weights_source["sha256"]
            else:
                resolved = store.resolve(weights)
                store.load_into(network, resolved)
                sha256 = resolved.sha256
        self.network = network
        self.manifest: dict[str, Any] = {"source": weights or "in-memory", "sha256": sha256}
        if (mean is None) != (std is None):
            raise ValueError("Teacher: give both mean and std, or neither")
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", None if mean is None else torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(std).view(shape), persistent=False)
        self.network.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        # Lightning calls model.train() at the start of every epoch; a teacher never leaves eval.
        return super().train(False)

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            if self.mean is not None:
                x = (x - self.mean) / self.std
            return self.network(x, *args, **kwargs)


def as_teachers(teacher: nn.Module | dict[str, nn.Module] | None) -> Teacher | nn.ModuleDict | None:
    """Normalise the ``teacher`` argument: a Teacher, a ModuleDict of Teachers, or None."""
    if teacher is None or isinstance(teacher, Teacher):
        return teacher
    if isinstance(teacher, (dict, nn.ModuleDict)):
        if not teacher:
            raise ValueError("an empty set of teachers was given; pass None for no teacher")
        return nn.ModuleDict({name: as_teachers(t) for name, t in teacher.items()})
    return Teacher(network=teacher)
