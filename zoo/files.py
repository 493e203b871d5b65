"""File utilities both sides of the layers may import (modules, datamodules, the zoo, the CLI): atomic
writes and the project's cache folder. Nothing here knows about entries, methods or datasets."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    """``$DISTILLZOO_CACHE``, else ``~/.cache/distillzoo``: downloads, processed datasets, simulations."""
    return Path(os.environ.get("DISTILLZOO_CACHE", "~/.cache/distillzoo")).expanduser()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``: a reader
    sees the old file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; published files are world-readable
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) while the block runs; if another process
    or thread holds it, raise BlockingIOError naming ``what`` at once instead of waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise BlockingIOError(
                f"{what} is already in progress (lock {path}); try again when it has finished"
            ) from err
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
