"""The metafile schema: every block of ``zoo/entries/<name>.yaml`` as a typed, frozen dataclass.

:func:`parse` turns the YAML mapping into a :class:`Metafile`, checking each key and type on the way:
an unknown key is refused with the closest valid names (a misspelt optional field would otherwise
vanish from the card), a wrong type or a malformed hash names the key and what was expected. Every
reader of a metafile (cards, evidence, figures, scripts) reads these objects, never the raw mapping;
writers edit the mapping and :func:`zoo.registry.write_entry` validates it again before it lands.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

SHA256 = {"pattern": r"[0-9a-f]{64}", "expected": "64 lowercase hex digits"}
NAME = {"pattern": r"[a-z0-9][a-z0-9.-]*", "expected": "lowercase letters, digits, '-' or '.'"}


def _field(default: Any = None, **meta: Any) -> Any:
    return field(default=default, metadata=meta)


def _many(factory: Any) -> Any:
    return field(default_factory=factory)


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class WeightsRef:
    """Where the weights are: a file inside the weights folder, or a URL at a pinned revision."""

    sha256: str = _field(**SHA256)
    file: str | None = None
    url: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class NetworkSpec:
    """A network as the allow-listed class and its recorded constructor arguments (``zoo.specs``)."""

    class_path: str
    init_args: dict[str, Any] = _many(dict)

    def plain(self) -> dict[str, Any]:
        return {"class_path": self.class_path, "init_args": dict(self.init_args)}


@dataclass(frozen=True)
class TeacherRef:
    weights: str
    sha256: str | None = _field(**SHA256)


@dataclass(frozen=True)
class Input:
    """The input contract: what the field's standard reader returns, which the network takes as is.

    ``shape`` uses names for free sizes (``[B, 1, 16, 15]``, ``[N, 1433]`` for node features); ``range``
    bounds the values the reader gives (``[0, 1]`` images, ``[-1, 1]`` waveforms); ``units`` names a
    physical unit (``HU``); ``inside`` says what normalisation the network holds, so no step is needed
    between the reader and ``zoo.load(name)``; ``call`` shows the call."""

    reader: str
    type: Literal["graph", "graphs", "waveform", "image", "ct", "view"]
    shape: list[int | str]
    call: str
    dtype: str = "float32"
    range: list[float] | None = None
    units: str | None = None
    sample_rate: int | None = None
    inside: str | None = None

    def check(self, x: Any, what: str = "input") -> None:
        """Raise ValueError naming both sides when tensor ``x`` breaks the contract: its rank, a fixed size,
        its dtype or its value range (named sizes such as ``B`` are free)."""
        problems = []
        if len(x.shape) != len(self.shape):
            problems.append(f"rank {len(x.shape)} (shape {list(x.shape)}) instead of {len(self.shape)}")
        else:
            problems += [f"size {got} at dim {i} instead of {want}" for i, (want, got) in
                         enumerate(zip(self.shape, x.shape)) if isinstance(want, int) and want != got]  # fmt: skip
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype != self.dtype:
            problems.append(f"dtype {dtype} instead of {self.dtype}")
        if self.range and x.numel():
            low, high = float(x.min()), float(x.max())
            if low < self.range[0] or high > self.range[1]:
                problems.append(f"values in [{low:g}, {high:g}] outside [{self.range[0]:g}, {self.range[1]:g}]")
        if problems:
            raise ValueError(f"{what} breaks the entry's input contract ({self.describe()}): " + "; ".join(problems))

    def describe(self) -> str:
        shape = "[" + ", ".join(map(str, self.shape)) + "]"
        parts = [f"{self.type} {shape} {self.dtype}"]
        if self.range:
            parts.append(f"in [{self.range[0]:g}, {self.range[1]:g}]" + (f" {self.units}" if self.units else ""))
        elif self.units:
            parts.append(f"in {self.units}")
        if self.sample_rate:
            parts.append(f"at {self.sample_rate} Hz")
        text = " ".join(parts) + f", straight from {self.reader}; call: `{self.call}`"
        return text + (f"; inside the network: {self.inside}" if self.inside else "")


@dataclass(frozen=True)
class Arm:
    """One evidence arm: recipe files plus CLI overrides, fitted once per seed."""

    arm: str
    config: list[str]
    args: list[str] = _many(list)
    role: Literal["reference", "baseline", "distilled", "baseline-official"] | None = None
    budget: str | None = None
    waive: dict[str, str] = _many(dict)  # gate name -> why the gate does not apply to this arm
    after: str | None = None  # a stage (Evidence.stages) this arm starts from, at the same seed: {after} in args
    runs_from: str | None = None  # an entry that fits this same arm: its recorded runs are shown here, not refitted
    metric: str | None = None  # another headline for this arm (a dense probe's test/miou): its own table
    scale: float | None = None  # that metric's scale (default the evidence's)
    paired_against: str | None = None  # the arm its paired difference is taken against (default the baseline)
    seeds: int | None = None  # fewer seeds than the evidence's: a one-seed diagnostic (the card's n column shows it)


@dataclass(frozen=True)
class Gate:
    """A sanity gate (``zoo.evidence.check_gates``): ``floor``, ``compare`` or ``beats_input``."""

    name: str
    kind: Literal["floor", "compare", "beats_input"]
    metric: str
    value: float | None = None
    better: Literal["higher", "lower"] = "higher"
    margin: float = 0.0
    arm: str | None = None
    than: str | None = None
    role: str | None = None
    than_role: str | None = None
    input_metric: str | None = None
    than_metric: str | None = (
        None  # compare: the other arm's metric, when not ``metric`` (a teacher's against a student's)
    )


@dataclass(frozen=True)
class Evidence:
    arms: list[Arm]
    metric: str = "test/acc"
    metrics: list[str] = _many(list)
    scale: float = 1.0
    top_k: int = 0
    digits: int = 2  # decimals of the headline rows: 2 for a percentage or dB, 3 for a fraction such as AbsRel
    selection: str = "test metric at the best-validation checkpoint"
    title: str | None = None
    gates: list[Gate] = _many(list)
    # pre-training fits that arms start from (``after``); each runs once per seed and is shared by its arms
    stages: list[Arm] = _many(list)

    def arm(self, name: str) -> Arm:
        found = next((a for a in self.arms if a.arm == name), None)
        if found is None:
            raise KeyError(f"unknown arm {name!r}; arms: {[a.arm for a in self.arms]}")
        return found

    def stage(self, name: str) -> Arm:
        found = next((a for a in self.stages if a.arm == name), None)
        if found is None:
            raise KeyError(f"unknown stage {name!r}; stages: {[a.arm for a in self.stages]}")
        return found

    def with_role(self, role: str) -> str | None:
        return next((a.arm for a in self.arms if a.role == role), None)


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float = 0.0
    n: int = 1
    values: list[float] = _many(list)


@dataclass(frozen=True)
class Paired:
    against: str
    mean: float
    lo: float
    hi: float
    n: int
    seeds: int | None = None  # per-sample pairs: the seeds each sample's difference is averaged over


@dataclass(frozen=True)
class Row:
    arm: str
    mean: float
    metric: str | None = None  # set when the arm reports another headline than the evidence's
    std: float | None = None
    n: int | None = None
    values: list[float] = _many(list)
    seeds: list[int] = _many(list)
    metrics: dict[str, Summary] = _many(dict)
    seconds_per_run: float | None = None
    top_k: int = 0
    top_mean: float | None = None
    top_std: float | None = None
    paired: Paired | None = None
    paired_samples: Paired | None = None  # the same difference paired per test sample (n = samples)


@dataclass(frozen=True)
class Run:
    seed: int
    fingerprint: str
    test: dict[str, float]
    best_val: float | None = None
    seconds: float = 0.0
    samples: dict[str, list[float]] = _many(dict)  # metric -> per test sample, in the test set's order
    threads: int | None = None  # torch threads of the fit (a CPU refit reproduces it only at the same count)


@dataclass(frozen=True)
class GateOutcome:
    gate: str
    status: Literal["pass", "fail", "pending", "waived"]
    detail: str = ""
    waived: dict[str, str] = _many(dict)


@dataclass(frozen=True)
class PaperRow:
    arm: str
    value: str | float
    source: str = ""


@dataclass(frozen=True)
class Archived:
    """Rows of an earlier release kept on the card because they still inform (e.g. official settings)."""

    rows: list[Row]
    command: str | None = None


@dataclass(frozen=True)
class SweepResult:
    command: str
    rows: list[dict[str, float | int]]
    chosen_support: float
    rule: str


@dataclass(frozen=True)
class Results:
    """Written by ``zoo evidence`` (and the sweep script), never by hand."""

    command: str | None = None
    metric: str | None = None
    selection: str | None = None
    rows: list[Row] = _many(list)
    runs: dict[str, list[Run]] = _many(dict)
    stage_runs: dict[str, list[Run]] = _many(dict)  # the stages' own test metrics (e.g. pre-training losses)
    gates: list[GateOutcome] = _many(list)
    paper_rows: list[PaperRow] = _many(list)
    archived: dict[str, Archived] = _many(dict)
    hardware: str | None = None
    run_time_s: float | None = None
    wall_time_s: float | None = None
    sweep: SweepResult | None = None


@dataclass(frozen=True)
class SweepData:
    name: str
    depth: int
    root: str


@dataclass(frozen=True)
class Sweep:
    config: list[str]
    data: SweepData
    args: list[str] = _many(list)


@dataclass(frozen=True)
class Fit:
    """One fit: recipe files plus CLI overrides (an arm without a name)."""

    config: list[str]
    args: list[str] = _many(list)


@dataclass(frozen=True)
class Publish:
    """How ``zoo publish NAME`` rebuilds the entry. ``arm``: run the evidence (``seeds`` seeds, resumable)
    and publish that arm's seed-0 fit (a model entry's weights) or that arm's training data (a ``dataset``
    entry's distilled set). ``fit``: one fit at seed 0 (a teacher, which has no evidence of its own).
    ``script``: a project script (``scripts/NAME.py`` and its arguments) that computes and publishes the
    entry from other entries (precomputed teacher outputs, a soup of networks). ``figures``: scripts under
    ``scripts/`` with their arguments, run afterwards; ``{keep}`` is the folder of the kept seed-0
    checkpoints, ``{name}`` the entry. ``export: after`` publishes what the arm starts from (the stage a
    dense-probe arm measures) instead of the arm's own fit. ``part``: for a fit of several students (two
    collaborating students), the one this entry publishes."""

    arm: str | None = None
    fit: Fit | None = None
    script: list[str] | None = None
    seeds: int = 3
    figures: list[list[str]] = _many(list)
    # "after": publish the network the arm starts from (its stage's seed-0 fit), as a probe arm measures it
    export: Literal["arm", "after"] = "arm"
    part: str | None = None


@dataclass(frozen=True)
class PublishedModel:
    """The published weights' own score on the reader's raw test data, checked by ``check``."""

    metric: str
    value: float
    data: str
    check: str
    note: str | None = None


@dataclass(frozen=True)
class Metafile:
    name: str = _field(**NAME)
    method: str = ""
    task: str = ""
    weights: WeightsRef | None = None
    kind: Literal["model", "dataset", "teacher-outputs"] = "model"
    loader: str | None = None  # a dataset entry's @stored_dataset class (e.g. datamodules.graphs.stored.GraphSet)
    paper: Paper | None = None
    summary: str | None = None
    recipe: str | None = None
    data: dict[str, str | int | float] = _many(dict)
    input: Input | None = None
    license: str | None = None
    student: NetworkSpec | None = None
    teacher: dict[str, TeacherRef] = _many(dict)
    evidence: Evidence | None = None
    results: Results = _many(Results)
    sweep: Sweep | None = None
    distilled_set: dict[str, float | int] = _many(dict)
    published_model: PublishedModel | None = None
    publish: Publish | None = None
    findings: str | None = None
    scaled_down: str | None = None
    figures: list[str] = _many(list)


REQUIRED = ("name", "method", "task", "weights")


class SchemaError(ValueError):
    """A metafile that does not match the schema; the message names the file, the key and what was expected."""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked against type ``tp``; raises SchemaError naming ``where`` on a mismatch."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(option, value, where)
            except SchemaError as err:
                errors.append(err)
        # a single non-null option: its own message is the precise one (e.g. an unknown key deep inside)
        options = [o for o in typing.get_args(tp) if o is not type(None)]
        if len(options) == 1 and value is not None:
            raise errors[[o for o in typing.get_args(tp)].index(options[0])]
        raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r:.80}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise SchemaError(f"{where}: expected {_type_name(tp)}, got {value!r:.80}")
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r:.80}")
        return [_convert(typing.get_args(tp)[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r:.80}")
        item = typing.get_args(tp)[1]
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise SchemaError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r:.80}")


def _build(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(f"{where or 'the file'}: expected {_type_name(cls)}, got {type(value).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in value if k not in fields]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, sorted(fields), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(sorted(fields))}"
        label = f"{where}.{key}" if where else key
        raise SchemaError(f"unknown key {label!r}; {hint}")
    kwargs = {}
    for name, f in fields.items():
        here = f"{where}.{name}" if where else name
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in value:
            if no_default:
                raise SchemaError(f"{here}: required, missing")
            continue
        kwargs[name] = converted = _convert(hints[name], value[name], here)
        pattern = f.metadata.get("pattern")
        if pattern and converted is not None and not re.fullmatch(pattern, converted):
            raise SchemaError(f"{here}: expected {f.metadata['expected']}, got {converted!r:.80}")
    return cls(**kwargs)


def parse(raw: Any, pending: bool = False) -> Metafile:
    """The typed metafile of a YAML mapping; SchemaError names the key and what was expected. A ``pending``
    metafile (``zoo/pending/``: an entry whose evidence is still running) has no weights yet."""
    if not isinstance(raw, dict):
        raise SchemaError(f"expected a mapping at the top level, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw and not (pending and k == "weights")]
    if missing:
        raise SchemaError(f"lacks required field(s): {', '.join(missing)}")
    meta = _build(Metafile, raw, "")
    if (meta.kind == "dataset") != (meta.loader is not None):
        raise SchemaError("loader: a dataset entry names its @stored_dataset class, and only a dataset entry has one")
    if meta.evidence is not None:
        if not 0 <= meta.evidence.digits <= 6:
            raise SchemaError(f"evidence.digits: expected 0 to 6 decimals, got {meta.evidence.digits}")
        stages = [a.arm for a in meta.evidence.stages]
        names = stages + [a.arm for a in meta.evidence.arms]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # runs are recorded, kept and started from by name: one name, one fit
            raise SchemaError(f"evidence: {twice} named twice among the stages and arms; each needs its own name")
        for arm in meta.evidence.stages:
            if arm.after is not None:
                raise SchemaError(f"evidence.stages: stage {arm.arm!r} has an after; stages start from nothing")
        arms = {a.arm: a for a in meta.evidence.arms}
        for arm in meta.evidence.arms:
            if arm.after is not None and arm.after not in stages and arm.after not in arms:
                raise SchemaError(f"evidence.arms: {arm.arm!r} starts after {arm.after!r}, not a stage of {stages}")
            if arm.after in arms and (arm.after == arm.arm or arms[arm.after].after is not None):
                raise SchemaError(
                    f"evidence.arms: {arm.arm!r} starts after the arm {arm.after!r}, which must be another arm "
                    "that starts from nothing"
                )
            if arm.after is not None and not any("{after}" in a for a in arm.args):
                raise SchemaError(f"evidence.arms: {arm.arm!r} after a stage: no arg takes {{after}}")
            if arm.paired_against is not None and arm.paired_against not in arms.keys() - {arm.arm}:
                raise SchemaError(
                    f"evidence.arms: {arm.arm!r} is paired against {arm.paired_against!r}, not another arm of "
                    f"{sorted(arms)}"
                )
            if arm.seeds is not None and (arm.seeds < 1 or arm.role is not None):
                raise SchemaError(
                    f"evidence.arms: {arm.arm!r} has seeds {arm.seeds}: fewer seeds (at least 1) are for a "
                    "diagnostic arm, not one with a role (the comparison the card stands on runs every seed)"
                )
    plan = meta.publish
    if plan is not None:
        if sum(x is not None for x in (plan.arm, plan.fit, plan.script)) != 1:
            raise SchemaError("publish: give exactly one of arm (an evidence arm), fit (one fit at seed 0) or script")
        if plan.export == "after" and (
            plan.arm is None or meta.evidence is None or meta.evidence.arm(plan.arm).after is None
        ):
            raise SchemaError("publish.export: 'after' needs an evidence arm that starts after a stage or arm")
        if plan.arm is not None and (meta.evidence is None or plan.arm not in [a.arm for a in meta.evidence.arms]):
            arms = [a.arm for a in meta.evidence.arms] if meta.evidence else []
            raise SchemaError(f"publish.arm: {plan.arm!r} is not one of the evidence arms {arms}")
        commands = [(f"publish.figures[{i}]", f) for i, f in enumerate(plan.figures)]
        for where, command in commands + ([("publish.script", plan.script)] if plan.script is not None else []):
            if not command or not re.fullmatch(r"scripts/[A-Za-z0-9_]+\.py", command[0]):
                raise SchemaError(f"{where}: expected [scripts/NAME.py, args...], got {command!r}")
    return meta
