"""Precomputed teacher outputs: a sha256-checked safetensors file of one teacher's outputs keyed by sample id.

A method whose teacher is expensive and frozen (UNIEGO's per-view teachers, PH-Reg's test-time-augmented
dense targets, MetricAnything's pseudo-labels) computes its outputs once and trains from the file. The file
records which teacher made it (its source and the sha256 of its weights) and which samples (their ids, and
the sha256 of the id list), so a reader asking for other samples or another teacher is refused with both
hashes named, never served stale rows. Outputs are for the samples as stored, un-augmented: a cache keyed by
sample id is wrong under augmentation (torchdistill's trap), so methods that augment compute targets live.

A zoo entry of ``kind: teacher-outputs`` holds such a file; ``zoo.load(name)`` returns :class:`TeacherOutputs`
and ``zoo.store.read_outputs("zoo:NAME", ids)`` the rows for ``ids``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save
from torch import Tensor

from zoo import files

OUTPUTS_KEY = "distillzoo.outputs"


def ids_sha256(ids: Sequence[str]) -> str:
    """The sha256 of a sample-id list (order included): the identity of the samples a file was made for."""
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


Outputs = dict[str, Tensor]  # named tensors, each with one row per sample (e.g. "features", "logits")


def _nonfinite(outputs: Outputs) -> int:
    return sum(int((~torch.isfinite(t)).sum()) for t in outputs.values() if t.is_floating_point())


@dataclass(frozen=True)
class TeacherOutputs:
    """``outputs`` (name -> [N, ...]) for the samples ``ids`` (row i is sample ids[i]), made by ``teacher``."""

    outputs: Outputs
    ids: list[str]
    teacher: str
    teacher_sha256: str
    samples_sha256: str
    source: str = ""

    def rows(self, ids: Sequence[str]) -> Outputs:
        """The outputs of ``ids`` in that order (any subset or order of the stored samples); an id the file
        does not hold is refused, naming the file's and the request's sample hashes."""
        if list(ids) == self.ids:
            return self.outputs
        index = {sample: i for i, sample in enumerate(self.ids)}
        missing = [sample for sample in ids if sample not in index]
        if missing:
            raise ValueError(
                f"teacher outputs {self.source or '(in memory)'} were made for other samples: {len(missing)} of the "
                f"{len(ids)} requested ids are not in it (first {missing[0]!r}); file samples sha256 "
                f"{self.samples_sha256}, requested {ids_sha256(ids)}"
            )
        rows = torch.tensor([index[sample] for sample in ids])
        return {name: t[rows] for name, t in self.outputs.items()}


def to_tensors(
    outputs: Outputs, ids: Sequence[str], teacher: str, teacher_sha256: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors (``outputs.<name>``) and the one metadata key of a teacher-outputs file (one key: the same
    content always gives the same bytes)."""
    ids = [str(i) for i in ids]
    if not outputs:
        raise ValueError("give at least one named output tensor")
    wrong = {k: tuple(t.shape) for k, t in outputs.items() if t.dim() < 1 or t.shape[0] != len(ids)}
    if wrong:
        raise ValueError(f"every output needs one row per id ({len(ids)} ids); got shapes {wrong}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"sample ids must be unique; {len(ids) - len(set(ids))} duplicates")
    if bad := _nonfinite(outputs):
        raise ValueError(f"teacher {teacher!r} produced {bad} non-finite outputs")
    meta = {"ids": ids, "teacher": teacher, "teacher_sha256": teacher_sha256, "samples_sha256": ids_sha256(ids)}
    tensors = {f"outputs.{k}": t.detach().cpu().contiguous() for k, t in outputs.items()}
    return tensors, {OUTPUTS_KEY: json.dumps(meta, sort_keys=True)}


def write_outputs(path: str | Path, outputs: Outputs, ids: Sequence[str], teacher: str, teacher_sha256: str) -> Path:
    """Atomically write one teacher's named ``outputs`` for samples ``ids`` to ``path``."""
    path = Path(path)
    tensors, metadata = to_tensors(outputs, ids, teacher, teacher_sha256)
    files.atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def from_tensors(tensors: dict[str, Tensor], metadata: dict[str, str], source: str) -> TeacherOutputs:
    """Parse a teacher-outputs file read by :func:`zoo.store.read_safetensors`; errors name ``source``."""
    outputs = {k.removeprefix("outputs."): t for k, t in tensors.items() if k.startswith("outputs.")}
    try:
        meta = json.loads(metadata[OUTPUTS_KEY])
        ids, teacher, teacher_sha, samples_sha = (
            meta[k] for k in ("ids", "teacher", "teacher_sha256", "samples_sha256")
        )
        if not outputs:
            raise KeyError("no 'outputs.<name>' tensor")
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{source} is not a teacher-outputs file (tensors 'outputs.<name>', metadata {OUTPUTS_KEY!r} with ids, "
            f"teacher, teacher_sha256, samples_sha256): {err!r}"
        ) from None
    rows = {t.shape[0] for t in outputs.values()}
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or rows != {len(ids)}:
        raise ValueError(f"{source}: its ids must be a list of strings, one per output row (rows {sorted(rows)})")
    if not isinstance(samples_sha, str) or ids_sha256(ids) != samples_sha:
        raise ValueError(f"{source}: its ids do not hash to the samples sha256 it records ({samples_sha!r})")
    if bad := _nonfinite(outputs):
        raise ValueError(f"{source} holds {bad} non-finite outputs")
    return TeacherOutputs(outputs, ids, str(teacher), str(teacher_sha), samples_sha, source)
