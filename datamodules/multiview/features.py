"""Files a multi-view datamodule reads besides the datasets: one precomputed feature file per teacher
(safetensors with the sample ids, the official UNIEGO code's format) and a list file of student inputs
(CSV ``id,path,label,split``) with their reader."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from datamodules.splits import SPLITS
from zoo.files import atomic_write_bytes

__all__ = ["read_list_file", "read_student_input", "read_teacher_features", "write_teacher_features"]

IMAGE_SUFFIXES, VIDEO_SUFFIXES = (".png", ".jpg", ".jpeg"), (".mp4", ".avi")
STUDENT_SUFFIXES = (*IMAGE_SUFFIXES, ".npy", *VIDEO_SUFFIXES)


def write_teacher_features(path: str | Path, features: Tensor, ids: Sequence[str]) -> None:
    """Atomically write one teacher's features [N, d] for the samples ``ids`` (in that order) as safetensors:
    tensor ``features`` (float32) and metadata ``{"ids": json list}``. All-zero rows mean "missing"."""
    from safetensors.torch import save

    if features.dim() != 2 or features.shape[0] != len(ids):
        raise ValueError(f"features must be [len(ids)={len(ids)}, d], got {tuple(features.shape)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids must be unique; {len(ids) - len(set(ids))} duplicates")
    tensors = {"features": features.detach().to("cpu", torch.float32).contiguous()}
    atomic_write_bytes(Path(path), save(tensors, metadata={"ids": json.dumps(list(ids))}))


def read_teacher_features(path: str | Path, ids: Sequence[str]) -> Tensor:
    """Read a file of :func:`write_teacher_features` as float32 [N, d], checking that its ids are ``ids`` in
    order (ValueError naming the file and the first mismatching row, or the two row counts); ``zoo:NAME``
    reads the ``features`` of a teacher-outputs entry for ``ids`` (other samples are refused by hash)."""
    from safetensors import SafetensorError, safe_open

    if str(path).startswith("zoo:"):  # a teacher-outputs entry: verified, rows served by sample id
        from zoo import store

        return store.read_outputs(str(path), ids).outputs["features"].float()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher feature file {path} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            stored = json.loads((f.metadata() or {})["ids"])
            features = f.get_tensor("features").float()
    except (SafetensorError, KeyError, OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a teacher feature file (tensor 'features', metadata 'ids'): {err}") from err
    if not isinstance(stored, list) or not all(isinstance(i, str) for i in stored):
        raise ValueError(f"{path}: metadata 'ids' must be a JSON list of sample id strings, got {str(stored)[:60]}")
    finite = torch.isfinite(features)
    if not bool(finite.all()):  # all-zero rows mean "missing"; NaN would train to NaN
        rows = (~finite).any(1).nonzero().view(-1)
        raise ValueError(
            f"{path} has {int((~finite).sum())} non-finite values (NaN/inf) in {rows.numel()} rows, first row "
            f"{int(rows[0])} (id {stored[int(rows[0])]!r}); write missing rows as zeros"
        )
    if features.dim() != 2 or features.shape[0] != len(stored):
        raise ValueError(f"{path} has features {tuple(features.shape)} but {len(stored)} ids")
    if len(stored) != len(ids):
        raise ValueError(f"{path} has {len(stored)} rows but the sample list has {len(ids)}")
    for row, (got, want) in enumerate(zip(stored, ids)):
        if got != want:
            raise ValueError(
                f"{path} row {row} is id {got!r} but the sample list has {want!r} there; "
                "teacher features must follow the list's order"
            )
    return features


# ---------------------------------------------------------------------- list-file inputs


def read_student_input(path: str | Path) -> Tensor:
    """One student input: ``.png/.jpg`` -> grayscale float [1, H, W] in [0, 1]; ``.npy`` -> its array as float32;
    ``.mp4/.avi`` -> float [T, C, H, W] in [0, 1] (torchvision's ``read_video`` where it exists, else
    torchcodec)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student input {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in STUDENT_SUFFIXES:
        raise ValueError(f"{path}: unsupported student input suffix {suffix!r} (png, jpg, npy, mp4, avi)")
    try:
        return _decode_student_input(path, suffix)
    except (RuntimeError, ValueError, OSError, EOFError) as err:  # torchvision/numpy name neither the file nor why
        raise ValueError(f"cannot read student input {path}: {err}") from err


def _decode_student_input(path: Path, suffix: str) -> Tensor:
    if suffix in IMAGE_SUFFIXES:
        from torchvision.io import ImageReadMode, read_image

        return read_image(str(path), ImageReadMode.GRAY).float() / 255
    if suffix == ".npy":
        array = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        finite = torch.isfinite(array)
        if not bool(finite.all()):
            raise ValueError(f"it has {int((~finite).sum())} non-finite values (NaN/inf) of {array.numel()}")
        return array
    if suffix in VIDEO_SUFFIXES:
        import torchvision.io

        if hasattr(torchvision.io, "read_video"):
            frames = torchvision.io.read_video(str(path), pts_unit="sec", output_format="TCHW")[0]
        else:
            try:
                from torchcodec.decoders import VideoDecoder
            except ImportError as err:
                raise ImportError(f"reading {path} needs torchcodec (`pip install torchcodec`)") from err
            frames = VideoDecoder(str(path))[:]
        return frames.float() / 255
    raise AssertionError(suffix)  # read_student_input checked the suffix


def read_list_file(list_file: Path) -> tuple[list[str], list[Path], Tensor, dict[str, Tensor]]:
    """(ids, paths, labels, split -> indices) of a CSV list with header ``id,path,label,split``; a missing
    file, a missing column, a label that is not an integer, an unknown split or an input suffix the reader
    cannot read raise naming the file and the row's id."""
    if not list_file.is_file():
        raise FileNotFoundError(f"list file {list_file} does not exist")
    with open(list_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"id", "path", "label", "split"} <= set(rows[0]):
        raise ValueError(f"{list_file} must be a CSV with header id,path,label,split and at least one row")
    bad = next((r for r in rows if None in r.values()), None)  # DictReader fills a short row with None
    if bad is not None:
        raise ValueError(f"{list_file}: the row of id {bad['id']!r} has fewer than the 4 columns id,path,label,split")
    bad = next((r for r in rows if r["split"] not in SPLITS), None)
    if bad is not None:
        raise ValueError(f"{list_file}: id {bad['id']!r} has split {bad['split']!r}, expected one of {SPLITS}")
    bad = next((r for r in rows if not r["label"].strip().lstrip("-").isdigit()), None)
    if bad is not None:
        raise ValueError(f"{list_file}: id {bad['id']!r} has label {bad['label']!r}, expected an integer class")
    bad = next((r for r in rows if Path(r["path"]).suffix.lower() not in STUDENT_SUFFIXES), None)
    if bad is not None:  # found now, not when a batch containing it is first drawn
        raise ValueError(
            f"{list_file}: id {bad['id']!r} has path {bad['path']!r}, whose suffix the reader cannot read "
            f"({', '.join(s.lstrip('.') for s in STUDENT_SUFFIXES)})"
        )
    ids = [r["id"] for r in rows]
    paths = [list_file.parent / r["path"] for r in rows]
    split = {s: torch.tensor([i for i, r in enumerate(rows) if r["split"] == s], dtype=torch.long) for s in SPLITS}
    return ids, paths, torch.tensor([int(r["label"]) for r in rows]), split
