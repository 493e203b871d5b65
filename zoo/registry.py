"""Zoo entries: one YAML metafile per published entry under ``zoo/entries/``.

The metafile is the single source of an entry's card (MMRazor's ``metafile.yml`` idea): what the
weights are, how they were made, and the evidence rows written by ``zoo evidence``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo import schema
from zoo.files import atomic_write_bytes

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRIES_DIR = Path(__file__).resolve().parent / "entries"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]*")  # matched in full (re.fullmatch): no trailing newline


def check_name(name: str) -> str:
    """``name`` if it is a valid entry name (lowercase letters, digits, '-', '.'; no '..'), else ValueError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(f"zoo entry name {name!r} must be lowercase letters, digits, '-' or '.' (no '..', no '/')")
    return name


def weights_dir() -> Path:
    """The folder every entry's weights file must lie in: ``$DISTILLZOO_WEIGHTS``, else ``checkpoints/``."""
    return Path(os.environ.get("DISTILLZOO_WEIGHTS", REPO_ROOT / "checkpoints"))


def confined_weights_file(entry_path: Path, file: str) -> Path:
    """The entry's ``weights.file`` resolved inside :func:`weights_dir` or the repository's published
    ``checkpoints/``; anything else is refused."""
    path = Path(file)
    path = (path if path.is_absolute() else REPO_ROOT / path).resolve()
    roots = {weights_dir().resolve(), (REPO_ROOT / "checkpoints").resolve()}
    if not any(path.is_relative_to(root) for root in roots):
        folders = " or ".join(sorted(map(str, roots)))
        raise ValueError(f"zoo entry {entry_path}: weights.file {file!r} lies outside the weights folder {folders}")
    return path


@dataclass
class Entry:
    """A zoo metafile: ``meta`` is the typed, validated content every reader uses; ``raw`` the mapping in file
    order, which writers edit and hand back to :func:`write_entry` (validated again before it lands)."""

    meta: schema.Metafile
    path: Path
    raw: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def pending(self) -> bool:
        """An entry of ``zoo/pending/``: its evidence is running and nothing is published yet."""
        return self.meta.weights is None

    @property
    def weights(self) -> schema.WeightsRef:
        if self.meta.weights is None:
            raise ValueError(
                f"zoo entry {self.name!r} is not published yet: its evidence is still running ({self.path}); "
                f"`python cli.py zoo publish {self.name}` resumes it and publishes the weights"
            )
        return self.meta.weights

    @property
    def sha256(self) -> str:
        return self.weights.sha256

    @property
    def spec(self) -> dict[str, Any] | None:
        """The metafile's ``student`` as a plain spec mapping (``zoo.specs.build`` takes it)."""
        return self.meta.student.plain() if self.meta.student else None


def entries_dir() -> Path:
    return Path(os.environ.get("DISTILLZOO_ENTRIES", ENTRIES_DIR))


def pending_dir() -> Path:
    """Metafiles of entries whose evidence is still running (``zoo evidence`` records into them run by run,
    so a grid that spans sessions keeps its results); ``zoo publish`` moves one into the entries when its
    weights are exported. Beside the entries folder, so a scratch zoo has its own."""
    return entries_dir().parent / "pending"


def _is_pending_dir(directory: Path) -> bool:
    return directory.resolve() == pending_dir().resolve()


def parse_entry(path: Path) -> Entry:
    """Read and validate one metafile against :mod:`zoo.schema`; errors name the file and the bad key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"zoo entry {path} is not valid YAML: {err}") from err
    try:
        meta = schema.parse(raw, pending=_is_pending_dir(path.parent))
    except schema.SchemaError as err:
        raise ValueError(f"zoo entry {path}: {err}") from None
    if meta.name != path.stem:
        raise ValueError(f"zoo entry {path} has name {meta.name!r}; the file must be named {meta.name}.yaml")
    return Entry(meta=meta, path=path, raw=raw)


def list_entries() -> list[str]:
    """Names of all entries, sorted."""
    directory = entries_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def list_pending() -> list[str]:
    """Names of the entries whose evidence is still running (``zoo/pending/``), sorted."""
    directory = pending_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def get(name: str, pending: bool = False) -> Entry:
    """The entry called ``name`` (with ``pending``, also one of ``zoo/pending/``, for the evidence and
    publish commands); an unknown name fails with the closest known names."""
    if name.startswith("zoo:"):
        name = name[4:]
    check_name(name)
    path = entries_dir() / f"{name}.yaml"
    if pending and not path.is_file() and (pending_dir() / f"{name}.yaml").is_file():
        path = pending_dir() / f"{name}.yaml"
    if not path.is_file():
        known = list_entries()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown zoo entry {name!r}{hint} (known: {', '.join(known) or 'none'})")
    return parse_entry(path)


def write_entry(raw: dict[str, Any], directory: Path | None = None) -> Path:
    """Validate and atomically write a metafile; returns its path."""
    name = check_name(str(raw.get("name", "")))
    path = (directory or entries_dir()) / f"{name}.yaml"
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)
    try:  # validated before it is written: a refused metafile never replaces the old one
        schema.parse(yaml.safe_load(text), pending=_is_pending_dir(path.parent))
    except schema.SchemaError as err:
        raise ValueError(f"zoo entry {path}: {err}") from None
    atomic_write_bytes(path, text.encode())
    return path
