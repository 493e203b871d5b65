"""Find, download, verify and load zoo weights. Safetensors only; nothing on this path unpickles.

A weights *source* is ``zoo:NAME`` (a zoo entry) or a path to a ``.safetensors`` file. The full
sha256 is checked before a byte is parsed; a mismatch names both hashes. Remote entries
(``weights.url`` + pinned ``weights.revision``) download to ``<cache>/<entry>-<sha8>.safetensors``
and are verified before use, so a pre-filled cache works offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from zoo import outputs, registry, specs

SPEC_KEY = "distillzoo.spec"
# First bytes of the formats that unpickle on load: a raw pickle (protocol 2+) and torch.save's zip.
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")


@dataclass
class Weights:
    """Tensors of a weights source, the constructor spec and metadata stored with them, and their provenance."""

    tensors: dict[str, torch.Tensor]
    spec: dict[str, Any] | None
    source: str
    sha256: str
    path: Path
    metadata: dict[str, str] = field(default_factory=dict)


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILLZOO_CACHE", Path.home() / ".cache" / "distillzoo")) / "weights"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str, label: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(f"weights for {label!r} failed sha256: expected {expected}, got {actual} ({path})")


def cache_name(entry: registry.Entry) -> str:
    return f"{entry.name}-{entry.sha256[:8]}.safetensors"


def download_deadline_s() -> float:
    """The total time a download may take (``$DISTILLZOO_DOWNLOAD_TIMEOUT``, default 1800 s): a server that
    trickles a byte at a time never trips the per-read timeout, so the whole transfer has a deadline too."""
    return float(os.environ.get("DISTILLZOO_DOWNLOAD_TIMEOUT", 1800))


def download(url: str, dest: Path, expected: str, label: str) -> Path:
    """Fetch ``url`` into ``dest`` through a temporary file within the deadline; keep it only if the sha256
    matches. Errors name the entry and the URL; a failed download leaves no partial file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    deadline = time.monotonic() + download_deadline_s()
    try:
        try:
            with os.fdopen(fd, "wb") as handle, urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"took longer than {download_deadline_s():.0f} s")
        except (OSError, ValueError) as err:  # URLError, HTTPError, timeouts are OSErrors
            raise OSError(f"downloading weights for zoo entry {label!r} from {url} failed: {err}") from err
        verify(Path(tmp), expected, label)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def entry_file(entry: registry.Entry) -> Path:
    """A verified local file for the entry: the repo copy, else the cache, else a download."""
    local = entry.weights.file
    candidates = [registry.confined_weights_file(entry.path, str(local))] if local else []
    candidates.append(cache_dir() / cache_name(entry))
    for path in candidates:
        if path.is_file():
            verify(path, entry.sha256, entry.name)
            return path
    url = entry.weights.url
    if not url:
        tried = ", ".join(str(p) for p in candidates)
        raise FileNotFoundError(
            f"weights for zoo entry {entry.name!r} are not here (looked at {tried}) and it has no url"
        )
    url = url.format(revision=entry.weights.revision or "")
    return download(url, cache_dir() / cache_name(entry), entry.sha256, entry.name)


def check_safetensors(path: Path) -> None:
    """Refuse pickles and anything that is not a complete safetensors file, naming the problem."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(PICKLE_MAGIC):
        raise ValueError(
            f"{path} looks like a pickle or torch.save file; distillzoo refuses to unpickle weights. "
            "Convert it to safetensors (python cli.py zoo export for Lightning checkpoints)."
        )
    size = path.stat().st_size
    if len(head) < 8:
        raise ValueError(f"{path} is not a safetensors file: {size} bytes, shorter than the 8-byte header")
    header_len = int.from_bytes(head, "little")
    if header_len > size - 8:
        raise ValueError(
            f"{path} is not a complete safetensors file: header claims {header_len} bytes, file has {size}"
        )


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a valid safetensors file: {err}") from err
    return tensors, metadata


def resolve(source: str) -> Weights:
    """Load a weights source (``zoo:NAME`` or a ``.safetensors`` path), verified before parsing."""
    if source.startswith("zoo:"):
        entry = registry.get(source[4:])
        path = entry_file(entry)
        sha = entry.sha256
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            raise IsADirectoryError(f"weights file {path} is a folder; give a .safetensors file inside it")
        if not path.is_file():
            scheme = re.match(r"([A-Za-z]{1,5}):(?!//)", source)
            hint = f"; did you mean zoo:{source[scheme.end() :]}?" if scheme else ""
            raise FileNotFoundError(f"weights file {path} does not exist{hint}")
        sha = sha256_file(path)
    tensors, metadata = read_safetensors(path)
    spec = stored_spec(metadata, path)
    return Weights(tensors=tensors, spec=spec, source=source, sha256=sha, path=path, metadata=metadata)


build = specs.build  # only @exportable classes of the project's own packages are ever built


def load_into(module: nn.Module, weights: Weights) -> nn.Module:
    """Copy ``weights`` into ``module``; a name or shape mismatch lists every offending tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights.tensors))
    unexpected = sorted(set(weights.tensors) - set(own))
    mismatched = [
        f"{k}: weights {tuple(weights.tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(weights.tensors))
        if own[k].shape != weights.tensors[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + "; ".join(mismatched))
        if missing:
            parts.append("missing in weights: " + ", ".join(missing))
        if unexpected:
            parts.append("not in model: " + ", ".join(unexpected))
        raise ValueError(f"weights {weights.source} do not fit {type(module).__name__}: " + " | ".join(parts))
    module.load_state_dict(weights.tensors, strict=True)
    return module


def stored_spec(metadata: dict[str, str], path: Path) -> dict[str, Any] | None:
    """The network spec a weights file carries in its metadata, or None; malformed JSON names the file."""
    if SPEC_KEY not in metadata:
        return None
    try:
        spec = json.loads(metadata[SPEC_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"weights file {path}: metadata {SPEC_KEY!r} is not valid JSON ({err})") from err
    if not isinstance(spec, dict):
        raise ValueError(f"weights file {path}: metadata {SPEC_KEY!r} must be a mapping, got {type(spec).__name__}")
    return spec


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


def entry_spec(entry: registry.Entry, stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The network spec of an entry: the one its weights carry, which its metafile's ``student`` must equal
    (a card must describe the network that is loaded); either alone where the other is absent."""
    if stored is not None and entry.spec is not None and _plain(stored) != _plain(entry.spec):
        ours, theirs = _plain(entry.spec), _plain(stored)
        keys = sorted(k for k in set(ours.get("init_args", {})) | set(theirs.get("init_args", {}))
                      if ours.get("init_args", {}).get(k) != theirs.get("init_args", {}).get(k))  # fmt: skip
        if ours.get("class_path") != theirs.get("class_path"):
            keys.insert(0, "class_path")
        raise ValueError(
            f"zoo entry {entry.name!r}: the metafile's student differs from the spec stored in its weights "
            f"(at {', '.join(keys)}); the card would describe another network than the one loaded"
        )
    return stored if stored is not None else entry.spec


def check_entry(entry: registry.Entry) -> Path:
    """Everything ``zoo verify`` checks: the weights file is inside the weights folder, has the entry's
    sha256 and is a complete safetensors file, and a model entry's spec agrees with its metafile and names an
    allow-listed network (resolved, not built)."""
    path = entry_file(entry)
    tensors, metadata = read_safetensors(path)
    if entry.kind == "teacher-outputs":
        outputs.from_tensors(tensors, metadata, f"zoo:{entry.name}")
    elif entry.kind == "model":
        spec = entry_spec(entry, stored_spec(metadata, path))
        if spec is None:
            raise ValueError(f"zoo entry {entry.name!r} has no network spec, in its weights or its metafile")
        specs.resolve_class(spec.get("class_path"))
    return path


def load(source: str) -> Any:
    """Build the network a weights source describes, load its weights and return it in eval mode;
    for a ``kind: dataset`` zoo entry, the dataset its ``loader`` class builds from the tensors, and for a
    ``kind: teacher-outputs`` entry its :class:`zoo.outputs.TeacherOutputs`."""
    weights = resolve(source)
    kind = registry.get(source[4:]).kind if source.startswith("zoo:") else "model"
    if kind == "dataset":  # the entry names its loader, allow-listed as networks are
        return specs.resolve_loader(registry.get(source[4:]).meta.loader).from_tensors(weights.tensors)
    if kind == "teacher-outputs":
        return outputs.from_tensors(weights.tensors, weights.metadata, source)
    spec = weights.spec
    if source.startswith("zoo:"):
        spec = entry_spec(registry.get(source[4:]), weights.spec)
    if spec is None:
        raise ValueError(f"{source} carries no constructor spec ({SPEC_KEY} metadata); build the module yourself")
    label = source if source == str(weights.path) else f"{source}, {weights.path}"
    module = load_into(build(spec, label), weights)
    module.weights_source = {"source": source, "sha256": weights.sha256}
    module.register_forward_pre_hook(FiniteInputCheck(source), with_kwargs=True)
    return module.eval()


class FiniteInputCheck:
    """Forward pre-hook of a loaded network: a floating-point input with NaN or inf (a tensor argument, or
    the ``x``/``edge_attr`` of a PyG ``Data``/``Batch``) raises ValueError naming the weights source and the
    count, instead of the network returning NaN without a word. One ``isfinite`` per input tensor; a class,
    not a closure, so the module still pickles (``ddp_spawn``)."""

    GRAPH_ATTRS = ("x", "edge_attr")

    def __init__(self, source: str) -> None:
        self.source = source

    def _tensors(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
        found = []
        for name, arg in [*((f"argument {i}", a) for i, a in enumerate(args)), *kwargs.items()]:
            if isinstance(arg, torch.Tensor):
                found.append((str(name), arg))
            elif not isinstance(arg, (str, bytes, int, float, type(None))):  # a graph: its feature tensors
                for attr in self.GRAPH_ATTRS:
                    value = getattr(arg, attr, None)
                    if isinstance(value, torch.Tensor):
                        found.append((f"{name}.{attr}", value))
        return [(n, t) for n, t in found if t.is_floating_point() or t.is_complex()]

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for name, tensor in self._tensors(args, kwargs):
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                raise ValueError(
                    f"{self.source} ({type(module).__name__}) was given {bad} non-finite value(s) (NaN/inf) of "
                    f"{tensor.numel()} in its input ({name}, shape {tuple(tensor.shape)}); its output would be NaN"
                )


def read_outputs(
    source: str, ids: Sequence[str] | None = None, teacher_sha256: str | None = None
) -> outputs.TeacherOutputs:
    """The teacher outputs (:mod:`zoo.outputs`) of ``source`` (``zoo:NAME`` or a path), verified, restricted
    to ``ids`` in that order when given; with ``teacher_sha256``, a file made by another teacher is refused
    naming both hashes."""
    weights = resolve(source)  # verified against the entry's sha256 before a byte is parsed
    found = outputs.from_tensors(weights.tensors, weights.metadata, source)
    if teacher_sha256 is not None and found.teacher_sha256 != teacher_sha256:
        raise ValueError(
            f"{source} holds the outputs of another teacher: made by {found.teacher} (sha256 {found.teacher_sha256}), "
            f"expected sha256 {teacher_sha256}"
        )
    if ids is None:
        return found
    return dataclasses.replace(found, outputs=found.rows(ids), ids=list(ids), samples_sha256=outputs.ids_sha256(ids))
