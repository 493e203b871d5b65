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


REQUIRED_KEYS = ("name", "method", "task", "weights")
# every key a metafile may have, per block; an unknown one (a misspelt optional field would silently vanish
# from the card) is refused with the closest valid names
KNOWN_KEYS = {
    "": {"name", "method", "task", "kind", "paper", "summary", "recipe", "data", "input", "license", "weights",
         "student", "teacher", "evidence", "results", "sweep", "distilled_set", "findings", "scaled_down", "figures",
         "published_model"},
    "weights": {"file", "sha256", "url", "revision"},
    "evidence": {"title", "metric", "metrics", "scale", "top_k", "selection", "arms", "gates"},
    "evidence.arms": {"arm", "config", "args", "role", "budget", "waive"},
}  # fmt: skip


def _check_keys(path: Path, where: str, block: Any) -> None:
    if not isinstance(block, dict):
        raise ValueError(f"zoo entry {path}: {where or 'the file'} must be a mapping, got {type(block).__name__}")
    unknown = sorted(set(block) - KNOWN_KEYS[where])
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), sorted(KNOWN_KEYS[where]), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid: {', '.join(sorted(KNOWN_KEYS[where]))}"
        label = f"{where}.{key}" if where else key
        raise ValueError(f"zoo entry {path}: unknown key {label!r}{hint}")


@dataclass
class Entry:
    """A parsed zoo metafile. ``raw`` keeps every field (results, paper, figures ...) in file order."""

    name: str
    method: str
    task: str
    kind: str
    spec: dict[str, Any] | None
    weights: dict[str, Any]
    path: Path
    raw: dict[str, Any] = field(repr=False)

    @property
    def sha256(self) -> str:
        return str(self.weights["sha256"])


def entries_dir() -> Path:
    return Path(os.environ.get("DISTILLZOO_ENTRIES", ENTRIES_DIR))


def parse_entry(path: Path) -> Entry:
    """Read and validate one metafile; errors name the file and the missing or bad field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"zoo entry {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"zoo entry {path} must be a mapping, got {type(raw).__name__}")
    _check_keys(path, "", raw)
    for block in ("weights", "evidence"):
        if block in raw:
            _check_keys(path, block, raw[block])
    for arm in (raw.get("evidence") or {}).get("arms") or []:
        _check_keys(path, "evidence.arms", arm)
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise ValueError(f"zoo entry {path} lacks required field(s): {', '.join(missing)}")
    name = str(raw["name"])
    if name != path.stem:
        raise ValueError(f"zoo entry {path} has name {name!r}; the file must be named {name}.yaml")
    weights = raw["weights"]
    if not isinstance(weights, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(weights.get("sha256", ""))):
        raise ValueError(f"zoo entry {path}: weights.sha256 must be 64 lowercase hex digits")
    return Entry(
        name=name,
        method=str(raw["method"]),
        task=str(raw["task"]),
        kind=str(raw.get("kind", "model")),
        spec=raw.get("student"),
        weights=weights,
        path=path,
        raw=raw,
    )


def list_entries() -> list[str]:
    """Names of all entries, sorted."""
    directory = entries_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def get(name: str) -> Entry:
    """The entry called ``name``; an unknown name fails with the closest known names."""
    if name.startswith("zoo:"):
        name = name[4:]
    check_name(name)
    path = entries_dir() / f"{name}.yaml"
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
    atomic_write_bytes(path, text.encode())
    parse_entry(path)
    return path
