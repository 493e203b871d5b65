"""Opening a PyG dataset from the user's raw files, safely: the raw files are copied into the project cache
(``zoo.files.cache_root()/data/<family>/<content key>``), where PyG writes and reads ``processed/``, so a
user's ``processed/`` folder is never unpickled; pickled raw files (Planetoid's) are read by a restricted
unpickler that builds numpy arrays, scipy sparse matrices, lists and dicts and nothing else. A failed open
without the raw files becomes a FileNotFoundError naming what is missing and where."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import types
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
    """The root to hand a PyG dataset class: always a folder of the project cache, never the user's root.

    A user's ``processed/`` folder is never opened (PyG unpickles what it finds there), so the ``files`` of
    ``root/name/raw`` are copied into ``zoo.files.cache_root()/data/<family>/<key>/<name>/raw``, each to a
    temporary name and then renamed (``zoo.files.atomic_write_bytes``), and PyG processes them there. ``key``
    is the sha256 (16 hex) of the raw files' names and bytes, so other raw files get their own processed copy
    and a stale one is never reused; with no raw files (PyG will download) the key is ``download``.

    Args:
        root: the dataset root the user gave (``<root>/<name>/raw`` holds the raw files).
        name: the dataset name, the folder under ``root``.
        family: the cache folder of the dataset family, e.g. ``"planetoid"`` or ``"tu"``.
        files: the raw file names to copy.

    Returns:
        ``zoo.files.cache_root()/data/<family>/<key>``.
    """
    src = root / name / "raw"
    present = [f for f in files if (src / f).is_file()]
    digest = hashlib.sha256()
    for file in present:
        digest.update(file.encode() + b"\0" + hashlib.sha256((src / file).read_bytes()).digest())
    key = digest.hexdigest()[:16] if present else "download"
    family_root = cache_root() / "data" / family / key
    dst = family_root / name / "raw"
    for file in present:
        if not (dst / file).is_file():
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
    diagnose: Callable[[Path], str | None] | None = None,
) -> tuple[Any, Path]:
    """Open a PyG dataset from ``root/name/raw`` through :func:`writable_dataset_root`.

    ``open_dataset(dataset_root)`` builds the PyG dataset (it downloads when the raw files are absent
    and the user has network). If the ``checked_files`` (default: ``needed_files``) were not all there
    and opening fails, the error becomes a FileNotFoundError naming ``what``, the missing ``needed_files``
    and where they were looked for. If they were there but PyG cannot parse them (truncated, another
    format), the error becomes a ValueError naming the folder and, through ``diagnose(raw_dir)``, the first
    bad file and why (PyG's own error, an IndexError or a "Ran out of input", names neither); a pickle the
    restricted unpickler refuses stays a :class:`RefusedPickle`.

    Returns:
        (the dataset, its raw folder).
    """
    given = Path(root).expanduser()
    dataset_root = writable_dataset_root(given, name, family, copy_files)
    raw_dir = dataset_root / name / "raw"
    if (given, name) not in _ANNOUNCED_COPIES:
        rank_zero_info(f"loading {name} from a processed copy of {given / name / 'raw'} in {raw_dir.parent}")
        _ANNOUNCED_COPIES.add((given, name))
    had_raw = all((raw_dir / f).is_file() for f in (needed_files if checked_files is None else checked_files))
    try:
        return open_dataset(str(dataset_root)), raw_dir
    except Exception as err:
        if had_raw:
            if isinstance(err, RefusedPickle) or not isinstance(err, RAW_PARSE_ERRORS):
                raise
            problem = (diagnose(raw_dir) if diagnose is not None else None) or f"{type(err).__name__}: {err}"
            raise ValueError(
                f"dataset {name!r}: cannot process the raw files in {given / name / 'raw'}: {problem}; "
                "are they complete and in the dataset's standard format?"
            ) from err
        missing = [f for f in needed_files if not (raw_dir / f).is_file()]
        source = given / name / "raw"
        where = f"{source} (processed in {raw_dir})"
        raise FileNotFoundError(
            f"{what} in {where}; missing {', '.join(missing)}, and downloading them failed "
            f"({type(err).__name__}: {err})"
        ) from err


# pickled globals a Planetoid raw file may name (numpy arrays, scipy CSR matrices, the adjacency defaultdict)
SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"),
    ("collections", "defaultdict"), ("__builtin__", "list"), ("builtins", "list"),
}  # fmt: skip


# what PyG's readers raise on a raw file that is truncated or in another format
RAW_PARSE_ERRORS = (
    ValueError, TypeError, IndexError, KeyError, RuntimeError, EOFError, UnicodeDecodeError, pickle.UnpicklingError,
)  # fmt: skip


class RefusedPickle(pickle.UnpicklingError):
    """A raw file's pickle names a global outside :data:`SAFE_GLOBALS` (it could run code)."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`SAFE_GLOBALS`; any other global (``os.system``, ``eval``, ...) is
    refused with an UnpicklingError naming it, before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise RefusedPickle(f"refusing to unpickle {module}.{name}: raw data files may only hold arrays")
        if module == "__builtin__":
            module = "builtins"
        return super().find_class(module.replace("numpy.core.", "numpy._core."), name)


def restricted_pickle_load(file: Any, encoding: str = "ASCII", **_: Any) -> Any:
    return RestrictedUnpickler(file, encoding=encoding).load()


@contextlib.contextmanager
def restricted_pyg_pickles() -> Any:
    """While active, PyG's Planetoid reader unpickles raw files with :class:`RestrictedUnpickler`."""
    from torch_geometric.io import planetoid

    original = planetoid.pickle
    planetoid.pickle = types.SimpleNamespace(load=restricted_pickle_load, UnpicklingError=pickle.UnpicklingError)
    try:
        yield
    finally:
        planetoid.pickle = original
