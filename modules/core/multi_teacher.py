"""Several teachers as one first-class object: each with its own feature source, normalisation and
projector, and with missing teacher features masked out of the loss.

A teacher's features come either from a frozen network run on the batch (``Teacher``, given the
batch key of its input) or precomputed, one row per training sample, read from the batch
(``batch["features"][name]``, as UNIEGO's official code stores one feature file per teacher). A row
of zeros (or ``batch["mask"][name]`` False) means the teacher has nothing for that sample; it is
left out of that teacher's loss instead of pulling the student towards zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from modules.core.losses import cosine_distance
from modules.core.projectors import ProjectorKind, make_projector
from modules.core.teacher import Teacher


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-sample ``values`` [B] over ``mask`` [B] (bool); 0 (keeping the graph) if none is valid."""
    if values.shape != mask.shape:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must have the same shape")
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def masked_cosine_distance(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid rows of ``1 - cos(student_i, teacher_i)``; student, teacher [B, D], mask [B]."""
    return masked_mean(cosine_distance(student, teacher, reduction="none"), mask)


class TeacherSet(nn.Module):
    """K teachers for one student. ``sources`` maps each teacher's name to a ``Teacher`` (run on
    ``batch[input_keys[name]]``) or to ``None`` (precomputed: ``batch["features"][name]``);
    ``dims`` gives each teacher's feature width; ``student_dim`` the student's. Each teacher gets
    its own projector (student -> teacher width) and optional ``mean``/``std`` normalisation of its
    features. ``targets(batch)`` -> {name: (features, mask)}; ``cosine_losses(student_features,
    batch)`` -> {name: masked 1 - cos(P_k s, f_k)}.
    """

    def __init__(
        self,
        sources: Mapping[str, Teacher | None],
        dims: Mapping[str, int],
        student_dim: int,
        projector: ProjectorKind = "linear",
        input_keys: Mapping[str, str] | None = None,
        mean: Mapping[str, Sequence[float]] | None = None,
        std: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("TeacherSet needs at least one teacher")
        missing = sorted(set(sources) - set(dims))
        if missing:
            raise ValueError(f"no feature width given for teacher(s) {missing}; dims has {sorted(dims)}")
        self.names = list(sources)
        self.networks = nn.ModuleDict({k: t for k, t in sources.items() if t is not None})
        self.input_keys = dict(input_keys or {})
        unkeyed = sorted(set(self.networks) - set(self.input_keys))
        if unkeyed:
            raise ValueError(f"teacher network(s) {unkeyed} need input_keys naming their input in the batch")
        self.projectors = nn.ModuleDict({k: make_projector(projector, student_dim, dims[k]) for k in self.names})
        for k in self.names:
            m, s = (mean or {}).get(k), (std or {}).get(k)
            if (m is None) != (s is None):
                raise ValueError(f"teacher {k!r}: give both mean and std, or neither")
            self.register_buffer(f"mean_{k}", None if m is None else torch.as_tensor(m, dtype=torch.float32))
            self.register_buffer(f"std_{k}", None if s is None else torch.as_tensor(s, dtype=torch.float32))

    def targets(self, batch: Mapping[str, Any]) -> dict[str, tuple[Tensor, Tensor]]:
        out = {}
        for k in self.names:
            if k in self.networks:
                feats = self.networks[k](batch[self.input_keys[k]])
                mask = torch.ones(feats.shape[0], dtype=torch.bool, device=feats.device)
            else:
                try:
                    feats = batch["features"][k]
                except KeyError as err:
                    raise KeyError(f"precomputed teacher {k!r} has no batch['features'][{k!r}]") from err
                mask = batch.get("mask", {}).get(k)
                if mask is None:
                    mask = feats.abs().sum(-1) > 0  # an all-zero row is a missing feature
            m, s = getattr(self, f"mean_{k}"), getattr(self, f"std_{k}")
            if m is not None:
                feats = (feats - m) / s
            out[k] = (feats.float(), mask.bool())
        return out

    def cosine_losses(self, student_features: Tensor, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        return {
            k: masked_cosine_distance(self.projectors[k](student_features), f, mask)
            for k, (f, mask) in self.targets(batch).items()
        }
