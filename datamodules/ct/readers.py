"""CT slice readers: DICOM series (one patient per folder) and DeepLesion's 16-bit PNGs, both to HU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_deeplesion_png", "read_dicom_folder", "read_dicom_series"]

DEEPLESION_OFFSET = 32768  # DeepLesion PNGs store HU + 32768 as uint16


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm" and p.is_file())


def _number(ds: Any, keyword: str, index: int | None = None) -> float | None:
    """A numeric tag value (an element of a multi-valued one with ``index``), or None if absent or empty."""
    value = ds.get(keyword)
    try:
        return float(value[index] if index is not None else value)
    except (TypeError, ValueError, IndexError):
        return None


def _read_dicom_slice(path: Path) -> tuple[np.ndarray, float | None, float | None]:
    """(HU float32 [H, W], InstanceNumber, ImagePositionPatient z) of one DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, force=False)
    except (InvalidDicomError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable DICOM file: {err}") from err
    if "PixelData" not in ds:
        raise ValueError(f"{path} has no pixel data (no PixelData element); is it an image?")
    missing = [tag for tag in ("RescaleSlope", "RescaleIntercept") if _number(ds, tag) is None]
    if missing:
        raise ValueError(f"{path} lacks {' and '.join(missing)}: its pixel values cannot be converted to HU")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many kinds here (missing codec, bad length, ...)
        syntax = getattr(ds.get("file_meta"), "TransferSyntaxUID", "unknown")
        raise ValueError(f"{path}: cannot decode its pixel data (transfer syntax {syntax}): {err}") from err
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D slice, pixel data has shape {pixels.shape}")
    hu = pixels.astype(np.float64) * _number(ds, "RescaleSlope") + _number(ds, "RescaleIntercept")
    return hu.astype(np.float32), _number(ds, "InstanceNumber"), _number(ds, "ImagePositionPatient", 2)


def read_dicom_series(folder: Path) -> list[tuple[Path, np.ndarray]]:
    """(file, HU) of every ``*.dcm`` directly in ``folder``, ordered as in :func:`read_dicom_folder`."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder {folder} does not exist")
    files = _dicom_files(folder)
    if not files:
        raise FileNotFoundError(f"no *.dcm files in {folder}")
    read = [(path, *_read_dicom_slice(path)) for path in files]
    if all(r[2] is not None for r in read):
        read.sort(key=lambda r: (r[2], r[0].name))
    elif all(r[3] is not None for r in read):
        read.sort(key=lambda r: (r[3], r[0].name))
    return [(path, hu) for path, hu, _, _ in read]


def read_dicom_folder(path: str | Path) -> list[np.ndarray]:
    """The slices (float32 [H, W] in HU) of the ``*.dcm`` files directly in ``path`` (one series).

    Each file is read with ``pydicom.dcmread(force=False)``; HU = ``pixel_array * RescaleSlope +
    RescaleIntercept``. Slices are ordered by InstanceNumber when every file has one, else by the z of
    ImagePositionPatient when every file has it, else by file name.

    Raises:
        FileNotFoundError: ``path`` is not a folder or holds no ``*.dcm`` file.
        ValueError (naming the file): not DICOM, no PixelData, no RescaleSlope/RescaleIntercept, undecodable
        or not a single 2-D frame.
    """
    return [hu for _, hu in read_dicom_series(Path(path))]


def read_deeplesion_png(path: str | Path) -> np.ndarray:
    """One DeepLesion slice: a 16-bit grayscale PNG storing HU + 32768. Returns float32 [H, W] HU.

    Raises:
        FileNotFoundError: no such file. ValueError (naming the file): unreadable, not uint16 (e.g. an 8-bit
        PNG, which cannot hold HU) or not single-channel.
    """
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PNG file {path} does not exist")
    try:
        pixels = iio.imread(path)
    except Exception as err:  # imageio's plugins raise many kinds
        raise ValueError(f"cannot read {path} as a PNG: {err}") from err
    if pixels.dtype != np.uint16:
        raise ValueError(
            f"{path} has {pixels.dtype} pixels; DeepLesion slices are 16-bit PNGs storing HU + {DEEPLESION_OFFSET}"
        )
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 2-D image, got shape {pixels.shape}")
    return (pixels.astype(np.float32) - DEEPLESION_OFFSET).astype(np.float32)
