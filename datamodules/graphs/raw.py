"""Opening a PyG dataset from the user's raw files: when the given root is read-only, the raw files are copied
first into the project cache (``zoo.files.cache_root()/data/<family>``), where PyG can write ``processed/``;
a failed open without the raw files becomes a FileNotFoundError naming what is missing and where."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info

from zoo.files import atomic_write_bytes, cache_root

__all__ = ["is_writable_dir", "open_raw_dataset", "writable_dataset_root"]


def is_writable_dir(path: Path) -> bool:
    """Whether files can be created under ``path`` (or its nearest existing ancestor).

    A directory with no write bit counts as read-only even for root, who would otherwise bypass it:
    a data copy marked read-only must not get a ``processed/`` folder written into it.
    """
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    if not path.is_dir():
        return False
    return os.access(path, os.W_OK | os.X_OK) and bool(stat.S_IMODE(path.stat().st_mode) & 0o222)


def writable_dataset_root(root: Path, name: str, family: str, files: Sequence[str]) -> Path:
    """The root to hand a PyG dataset class: ``root`` when ``root/name`` is writable, else the cache.

    When ``root/name`` is read-only, the ``files`` of ``root/name/raw`` that exist there and are not yet in
    ``zoo.files.cache_root()/data/<family>/<name>/raw`` are copied there, each to a temporary name and then
    renamed (``zoo.files.atomic_write_bytes``), so a concurrent reader never sees half a file; PyG then writes
    ``processed/`` beside the copy.

    Args:
        root: the dataset root the user gave (``<root>/<name>/raw`` holds the raw files).
        name: the dataset name, the folder under ``root``.
        family: the cache folder of the dataset family, e.g. ``"planetoid"`` or ``"tu"``.
        files: the raw file names to copy.

    Returns:
        ``root``, or ``zoo.files.cache_root()/data/<family>``.
    """
    if is_writable_dir(root / name):
        return root
    family_root = cache_root() / "data" / family
    src, dst = root / name / "raw", family_root / name / "raw"
    for file in files:
        if not (dst / file).is_file() and (src / file).is_file():
            atomic_write_bytes(dst / file, (src / file).read_bytes())
    return family_root


_ANNOUNCED_COPIES: set[tuple[Path, str]] = set()


def open_raw_dataset(
    root: str,
    name: str,
    family: str,
    copy_files: Sequence[str],
    needed_files: Sequence[str],
    open_dataset: Callable[[str], Any],
    what: str,
    checked_files: Sequence[str] | None = None,
) -> tuple[Any, Path]:
    """Open a PyG dataset from ``root/name/raw`` through :func:`writable_dataset_root`.

    ``open_dataset(dataset_root)`` builds the PyG dataset (it downloads when the raw files are absent
    and the user has network). If the ``checked_files`` (default: ``needed_files``) were not all there
    and opening fails, the error becomes a FileNotFoundError naming ``what``, the missing ``needed_files``
    and where they were looked for.

    Returns:
        (the dataset, its raw folder).
    """
    given = Path(root).expanduser()
    dataset_root = writable_dataset_root(given, name, family, copy_files)
    raw_dir = dataset_root / name / "raw"
    if dataset_root != given and (given, name) not in _ANNOUNCED_COPIES:
        rank_zero_info(f"{given / name} is read-only; loading {name} from the copy in {raw_dir}")
        _ANNOUNCED_COPIES.add((given, name))
    had_raw = all((raw_dir / f).is_file() for f in (needed_files if checked_files is None else checked_files))
    try:
        return open_dataset(str(dataset_root)), raw_dir
    except Exception as err:
        if had_raw:
            raise
        missing = [f for f in needed_files if not (raw_dir / f).is_file()]
        source = given / name / "raw"
        where = str(raw_dir) if source == raw_dir else f"{raw_dir} (or the read-only {source})"
        raise FileNotFoundError(
            f"{what} in {where}; missing {', '.join(missing)}, and downloading them failed "
            f"({type(err).__name__}: {err})"
        ) from err
