"""Turn a Lightning checkpoint into student-only safetensors plus a zoo metafile, atomically."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from zoo import files, registry, specs, store


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(registry.REPO_ROOT))
    except ValueError:
        return str(path.resolve())


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A Lightning checkpoint opened with ``torch.load(weights_only=True)`` (``mmap``: tensors not read, for a
    cheap check), or FileNotFoundError/ValueError naming the file and what it is instead: torch's own
    message for a foreign file is a paragraph about ``weights_only`` that names neither."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"  # torch.save's format; mmap needs it
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipped)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, UnicodeDecodeError) as err:
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\s*\n|$)", str(err), re.S)
        detail = reason.group(1) if reason else (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"{path} is not a Lightning checkpoint that opens with torch.load(weights_only=True) (a torch.save "
            f"file of tensors and plain data): {detail}"
        ) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict", {}), dict):
        inner = type(checkpoint.get("state_dict")).__name__ if isinstance(checkpoint, dict) else ""
        got = f"its state_dict is a {inner}" if inner else f"it holds a {type(checkpoint).__name__}"
        raise ValueError(f"{path} is not a Lightning checkpoint: {got}, expected a mapping with a state_dict mapping")
    return checkpoint


def student_tensors(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", {})
    tensors = {k.removeprefix("student."): v for k, v in state.items() if k.startswith("student.")}
    if not tensors:
        raise ValueError("the checkpoint holds no 'student.*' tensors; is it a distillzoo DistillModule checkpoint?")
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def lock_path(entry_path: Path) -> Path:
    """The lock file of one entry: in the cache, keyed by the entry's full path, so it never litters the zoo."""
    key = hashlib.sha256(str(entry_path.resolve()).encode()).hexdigest()[:16]
    return files.cache_root() / "locks" / f"{entry_path.stem}-{key}.lock"


def publish(
    name: str,
    tensors: dict[str, torch.Tensor],
    fields: dict[str, Any],
    metadata: dict[str, str] | None = None,
    weights_dir: Path | None = None,
    entries_dir: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<weights_dir>/<name>-<sha8>.safetensors`` and ``<entries_dir>/<name>.yaml`` atomically.

    One export of a name runs at a time (a lock file per name; a second one at once is refused), it sweeps
    the temporaries a killed export of the name left, and a rerun after a kill between the two files finds
    the weights already written with the right sha256 and accepts them: after a kill at any point the zoo
    holds the old entry or the new one, never a mixture, and the rerun succeeds.

    ``fields`` are merged over an existing entry's (which keeps its paper, results ...); an existing
    entry or weights file is refused unless ``overwrite``. ``metadata`` must have at most one key:
    safetensors orders several keys at random, and the file's bytes (hence its sha256 and name) must
    depend on the content alone, so that re-exporting the same thing is a no-op.
    """
    registry.check_name(name)
    entries_dir = entries_dir or registry.entries_dir()
    with files.exclusive_lock(lock_path(entries_dir / f"{name}.yaml"), f"an export of zoo entry {name!r}"):
        return _publish_locked(name, tensors, fields, metadata, weights_dir, entries_dir, overwrite)


def _publish_locked(
    name: str,
    tensors: dict[str, torch.Tensor],
    fields: dict[str, Any],
    metadata: dict[str, str] | None,
    weights_dir: Path | None,
    entries_dir: Path,
    overwrite: bool,
) -> Path:
    if metadata and len(metadata) > 1:
        raise ValueError("give at most one safetensors metadata key, or the file bytes are not reproducible")
    weights_dir = weights_dir or registry.weights_dir()
    # temporaries of a killed earlier export of this name (we hold its lock, so nobody else is writing them)
    for stale in [*weights_dir.glob(f".{name}-*.tmp"), *entries_dir.glob(f".{name}.yaml.*.tmp")]:
        stale.unlink(missing_ok=True)
    entry_path = entries_dir / f"{name}.yaml"
    if entry_path.exists() and not overwrite:
        raise FileExistsError(f"zoo entry {entry_path} exists; pass --overwrite to replace it")
    blob = save(tensors, metadata=metadata)
    sha = hashlib.sha256(blob).hexdigest()
    weights_path = weights_dir / f"{name}-{sha[:8]}.safetensors"
    # the same bytes already there (a rerun after a kill between the weights and the metafile) are accepted
    same = weights_path.is_file() and store.sha256_file(weights_path) == sha
    if weights_path.exists() and not same and not overwrite:
        raise FileExistsError(f"{weights_path} exists with other contents; pass --overwrite to replace it")

    raw: dict[str, Any] = {}
    old_file = None
    pending = registry.pending_dir() / f"{name}.yaml"  # an entry whose evidence ran before it had weights
    if entry_path.exists():
        old = registry.parse_entry(entry_path)
        raw, old_file = dict(old.raw), old.weights.file
    elif pending.is_file():
        raw = dict(registry.parse_entry(pending).raw)
    raw.update(fields)
    raw["name"] = name
    missing = [k for k in ("method", "task") if k not in raw]
    if missing:
        raise ValueError(f"exporting a new entry needs {', '.join(missing)} (give them in --meta YAML)")
    raw["weights"] = {"file": _rel(weights_path), "sha256": sha, "url": None, "revision": None}
    ordered = {k: raw[k] for k in ("name", "method", "task") if k in raw} | raw

    if not same:
        files.atomic_write_bytes(weights_path, blob)
    try:
        registry.write_entry(ordered, entries_dir)
    except BaseException:
        if not same:
            weights_path.unlink(missing_ok=True)
        raise
    pending.unlink(missing_ok=True)  # published: the metafile now lives among the entries
    if old_file:
        try:  # only a file inside the weights folder is ever deleted
            old_path = registry.confined_weights_file(entry_path, str(old_file))
        except ValueError:
            old_path = None
        if old_path is not None and old_path != weights_path.resolve():
            old_path.unlink(missing_ok=True)
    return weights_path


def checkpoint_student(
    ckpt: str | Path, checkpoint: dict[str, Any] | None = None, part: str | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The student's constructor spec and tensors of a distillzoo Lightning checkpoint (``weights_only``; give
    ``checkpoint`` when it is already read). A checkpoint of several students (``parts``, two collaborating
    students) needs ``part``: that student's spec and its ``student.<part>.`` tensors.

    Raises:
        ValueError: naming the checkpoint, without a spec, with ``part`` missing or unknown, or with ``part``
            given for a one-student checkpoint.
    """
    checkpoint = read_checkpoint(ckpt) if checkpoint is None else checkpoint
    info = checkpoint.get("distillzoo") or {}
    info = info if isinstance(info, dict) else {}
    parts = info.get("parts")
    tensors = student_tensors(checkpoint)
    if isinstance(parts, dict) and parts:
        if part not in parts:
            what = "names no part" if part is None else f"names part {part!r}, which it does not hold"
            raise ValueError(
                f"{ckpt} holds {len(parts)} students ({', '.join(sorted(parts))}) and the export {what}; pick one "
                "(zoo export --part NAME)"
            )
        prefix = f"{part}."
        return parts[part], {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    if part is not None:
        raise ValueError(f"{ckpt} holds one student, not parts; export it without --part (got {part!r})")
    spec = info.get("student_spec")
    if spec is None:
        raise ValueError(f"{ckpt} has no student constructor spec (checkpoint['distillzoo']['student_spec'])")
    return spec, tensors


def checkpoint_weights(ckpt: str | Path, part: str | None = None) -> store.Weights:
    """The student (or the student ``part``) of a distillzoo Lightning checkpoint as ``store.Weights``, to load
    into a network built elsewhere with ``store.load_into`` (a mismatch names every offending tensor)."""
    spec, tensors = checkpoint_student(ckpt, part=part)
    return store.Weights(tensors, spec, str(ckpt), store.sha256_file(Path(ckpt)), Path(ckpt))


def load_student(ckpt: str | Path, part: str | None = None) -> torch.nn.Module:
    """The student network (or the student ``part``) of a distillzoo Lightning checkpoint, rebuilt from its spec
    and loaded strictly, in eval mode: how a second training stage starts from the first stage's checkpoint."""
    return _rebuilt(ckpt, *checkpoint_student(ckpt, part=part)).eval()


def load_network(source: str | Path) -> torch.nn.Module:
    """The network of ``source``: ``zoo:NAME`` or a ``.safetensors`` path (sha256-verified), or the Lightning
    ``.ckpt`` of an earlier stage or evidence arm (its student, opened ``weights_only``)."""
    return load_student(source) if str(source).endswith(".ckpt") else store.load(str(source))


def _rebuilt(ckpt: str | Path, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network of ``spec`` with a checkpoint's student ``tensors`` loaded strictly."""
    return store.load_into(store.build(spec, str(ckpt)), store.Weights(tensors, spec, str(ckpt), "", Path(ckpt)))


def export(
    ckpt: str | Path,
    name: str,
    meta: dict[str, Any] | None = None,
    weights_dir: Path | None = None,
    entries_dir: Path | None = None,
    overwrite: bool = False,
    part: str | None = None,
) -> Path:
    """Publish the student of a Lightning checkpoint (or its student ``part``, for a checkpoint of several) as zoo
    entry ``name`` (see :func:`publish`).

    The checkpoint is opened with ``weights_only=True``; only ``student.*`` tensors leave it (the
    teacher is never exported). The student is rebuilt from the spec and loaded strictly before
    anything is written.
    """
    checkpoint = read_checkpoint(ckpt)
    info = checkpoint.get("distillzoo") or {}
    spec, tensors = checkpoint_student(ckpt, checkpoint, part)
    _rebuilt(ckpt, spec, tensors)  # refuses tensors that do not fit the spec before anything is written
    fields = dict(meta or {}, student=spec)
    teachers = info.get("teachers") or {}
    if teachers:
        fields["teacher"] = {k: {"weights": t.get("source"), "sha256": t.get("sha256")} for k, t in teachers.items()}
    metadata = {store.SPEC_KEY: json.dumps(spec, sort_keys=True)}
    return publish(name, tensors, fields, metadata, weights_dir, entries_dir, overwrite)


def export_dataset(
    items: list,
    name: str,
    meta: dict[str, Any],
    loader: str,
    weights_dir: Path | None = None,
    entries_dir: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Publish a dataset (e.g. a distilled set of PyG graphs) as a ``kind: dataset`` entry whose tensors the
    ``@stored_dataset`` class ``loader`` (a class path, e.g. ``datamodules.graphs.stored.GraphSet``) writes
    and reads back; the entry names it, so the zoo itself knows no field."""
    tensors = specs.resolve_loader(loader).to_tensors(items)
    fields = dict(meta, kind="dataset", loader=loader)
    return publish(name, tensors, fields, None, weights_dir, entries_dir, overwrite)


def export_outputs(
    outputs: dict[str, torch.Tensor],
    ids: list[str],
    teacher: str,
    teacher_sha256: str,
    name: str,
    meta: dict[str, Any],
    weights_dir: Path | None = None,
    entries_dir: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Publish one teacher's precomputed named outputs for samples ``ids`` as a ``kind: teacher-outputs`` entry."""
    from zoo.outputs import to_tensors

    tensors, metadata = to_tensors(outputs, ids, teacher, teacher_sha256)
    fields = dict(meta, kind="teacher-outputs")
    return publish(name, tensors, fields, metadata, weights_dir, entries_dir, overwrite)
