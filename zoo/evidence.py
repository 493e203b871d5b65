"""``zoo evidence NAME``: run an entry's arms over seeds and write mean ± std rows into its metafile.

An entry's ``evidence`` block lists the arms, each a recipe (one or more YAML configs) plus CLI
overrides. Every arm x seed is one fit whose test metrics (at the best-validation checkpoint) are
recorded; the fit itself is the CLI's (``cli.evidence_fit``), handed in by the caller, so the zoo
never imports the CLI. Rows are written by this code only.

Resumable: each finished run is written into the metafile at once (``results.runs``, with a
fingerprint of the arm's recipe files and overrides), so a killed or time-limited session loses at
most the runs in flight, and the next ``zoo evidence`` call skips every run already recorded for an
unchanged arm. Arms that share seeds also get a paired row: the mean per-seed difference of the
headline metric to the entry's ``baseline`` arm with a 95% t-interval. A fit that also returns per-sample
test scores (a third item, metric -> values in test-set order) has them recorded with its run, and rows
whose arms both have them get the difference paired per test sample too (averaged over the shared seeds,
the interval over samples), which seed-to-seed variance shared by the arms cannot hide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from zoo import registry, schema
from zoo.files import atomic_write_bytes

# fit(arm, seed, keep) -> (test metrics, validation score of the tested checkpoint[, per-sample test scores])
Fit = Callable[[schema.Arm, int, Path | None], tuple]
# tests, best val, seconds, per-sample scores, the torch threads the fit ran on
Outcome = tuple[dict[str, float], float | None, float, dict[str, list[float]], int]

# two-sided 95% Student-t quantiles by degrees of freedom (df > 30: the normal 1.96)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
T95 |= {11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


STAGE_ROOT = registry.REPO_ROOT / "runs" / "stages"  # kept stage checkpoints, per entry


def arm_slug(arm: schema.Arm) -> str:
    """A file name for an arm: its name in lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", arm.arm.lower()).strip("-")


def kept_checkpoint(keep: Path, arm: schema.Arm) -> Path:
    """Where ``zoo evidence --keep`` / ``zoo publish`` keep ``arm``'s seed-0 tested checkpoint (its curve beside it,
    ``.metrics.csv``)."""
    return keep / f"{arm_slug(arm)}.ckpt"


def fingerprint(arm: schema.Arm, root: Path = registry.REPO_ROOT) -> str:
    """sha256 (16 hex) of the arm's configs, overrides and the parsed content of each config file (so an
    edited comment does not count as a change): a recorded run counts for resuming only while this is
    unchanged. Code changes are not seen; an arm whose code changed is rerun with ``--fresh``."""
    digest = hashlib.sha256(json.dumps({"config": arm.config, "args": arm.args}, sort_keys=True).encode())
    for config in arm.config:
        path = root / config
        content = yaml.safe_load(path.read_text()) if path.is_file() else config
        digest.update(json.dumps(content, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def arm_fingerprint(spec: schema.Evidence, arm: schema.Arm) -> str:
    """An arm's fingerprint, which for an arm that starts after a stage covers the stage's too (a changed
    pre-training stage reruns every arm built on it)."""
    own = fingerprint(arm)
    if arm.after is None:
        return own
    named = spec.stage(arm.after) if arm.after in {s.arm for s in spec.stages} else spec.arm(arm.after)
    return hashlib.sha256((own + fingerprint(named)).encode()).hexdigest()[:16]


def shared_runs(spec: schema.Evidence, arm: schema.Arm) -> list[dict]:
    """The runs of ``arm`` recorded by the entry it names in ``runs_from`` (one grid, shown by two entries);
    that entry's arm must be this very arm (same fingerprint, stage included), or nothing is shown."""
    other = registry.get(str(arm.runs_from), pending=True)
    theirs = other.meta.evidence.arm(arm.arm) if other.meta.evidence else None
    if theirs is None:
        raise ValueError(f"arm {arm.arm!r}: zoo entry {arm.runs_from!r} has no evidence to share")
    mine = arm_fingerprint(spec, arm)
    if arm_fingerprint(other.meta.evidence, theirs) != mine:
        raise ValueError(
            f"arm {arm.arm!r} differs from the arm of the same name in {arm.runs_from!r} (configs, overrides or "
            "stage), so its runs cannot be shared; make them the same, or drop runs_from and fit it here"
        )
    return [_as_record(r) for r in other.meta.results.runs.get(arm.arm, []) if r.fingerprint == mine]


def _as_record(run: schema.Run) -> dict:
    """A recorded run as the metafile writes it: no empty per-sample scores for modules that keep none."""
    record = dataclasses.asdict(run)
    if not record.get("samples"):
        record.pop("samples", None)
    return record


def stage_checkpoint(name: str, stage: schema.Arm, seed: int) -> Path:
    """Where the tested checkpoint of ``stage`` at ``seed`` is kept for the arms that start from it
    (gitignored: a lost one is refitted, CPU fits being deterministic)."""
    return STAGE_ROOT / name / f"{arm_slug(stage)}-{fingerprint(stage)}-seed{seed}.ckpt"


def _after(arm: schema.Arm, checkpoint: Path) -> schema.Arm:
    """``arm`` with ``{after}`` in its overrides replaced by its stage's checkpoint."""
    return dataclasses.replace(arm, args=[a.replace("{after}", str(checkpoint)) for a in arm.args])


def kept_source(name: str, meta: schema.Meta, source_name: str, seed: int, fit: Fit, keep: Path | None = None) -> Path:
    """The kept checkpoint of ``source_name`` (a stage, or an arm others start from) at ``seed``, refitting a lost
    one first (a new machine keeps no checkpoints); a refit whose test metrics differ from the recorded run is
    deleted and refused, since what starts from it would not be what the card describes."""
    spec = meta.evidence
    assert spec is not None
    staged = source_name in {s.arm for s in spec.stages}
    source = spec.stage(source_name) if staged else spec.arm(source_name)
    checkpoint = stage_checkpoint(name, source, seed)
    if checkpoint.is_file():
        return checkpoint
    print(f"[evidence] {checkpoint} is missing: refitting {source.arm!r} at seed {seed}", flush=True)
    runs = (meta.results.stage_runs if staged else meta.results.runs).get(source.arm, [])
    mine = fingerprint(source) if staged else arm_fingerprint(spec, source)
    run = next((r for r in runs if r.seed == seed and r.fingerprint == mine), None)
    with threads_of(run):
        tests = _timed_kept(fit, source, seed, None if staged else keep, checkpoint)[0]
    recorded = run.test if run is not None else {}
    drift = {k: (recorded[k], v) for k, v in tests.items() if k in recorded and abs(recorded[k] - v) > 1e-4}
    if drift:
        checkpoint.unlink()
        raise ValueError(
            f"the refit of {source.arm!r} at seed {seed} does not reproduce its recorded run ({drift}); rerun "
            f"the evidence of {name!r} with --fresh"
        )
    return checkpoint


def with_source(
    name: str, meta: schema.Meta, arm: schema.Arm, seed: int, fit: Fit, keep: Path | None = None
) -> schema.Arm:
    """``arm`` with ``{after}`` filled in by its source's kept checkpoint at ``seed`` (:func:`kept_source`)."""
    assert arm.after is not None
    return _after(arm, kept_source(name, meta, arm.after, seed, fit, keep))


def _timed_kept(fit: Fit, stage: schema.Arm, seed: int, keep: Path | None, checkpoint: Path) -> Outcome:
    """One fit (a stage, or an arm others start from) whose tested checkpoint is kept at ``checkpoint``
    (``fit(..., keep_as=checkpoint)``)."""
    outcome = _timed(fit, stage, seed, keep, keep_as=checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"the fit of stage {stage.arm!r} kept no checkpoint at {checkpoint}")
    return outcome


def _pick(tests: dict[str, float], metric: str, arm: schema.Arm) -> float:
    if metric not in tests:
        raise KeyError(f"arm {arm.arm!r} logged no {metric!r}; it logged {sorted(tests)}")
    return tests[metric]


def _timed(fit: Fit, arm: schema.Arm, seed: int, keep: Path | None, **kw: Any) -> Outcome:
    tic, threads = time.perf_counter(), torch.get_num_threads()
    tests, best_val, *samples = fit(arm, seed, keep, **kw)
    return tests, best_val, time.perf_counter() - tic, samples[0] if samples else {}, threads


def _worker_init(threads: int) -> None:
    """A ``--jobs`` worker: its share of the cores, and (on Linux) killed with the evidence process. A worker
    that outlived a killed parent would go on writing the checkpoints a resumed grid reads back."""
    torch.set_num_threads(threads)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)


@contextlib.contextmanager
def threads_of(run: schema.Run | None) -> Iterator[None]:
    """Fit at the number of torch threads a recorded run ran on, where it says (a CPU fit is deterministic
    only at a fixed thread count: reductions split differently), then go back to this process's own."""
    before = torch.get_num_threads()
    if run is not None and run.threads:
        torch.set_num_threads(run.threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def summarise(
    values: list[float], scale: float, val: list[float | None] | None = None, top_k: int = 0, digits: int = 2
) -> dict:
    """Mean and sample std over all runs, rounded to ``digits`` decimals; with ``top_k``, also over the ``top_k``
    runs with the best validation score (the official Mirage report), so both selection rules are shown."""
    scaled = [v * scale for v in values]
    row = {
        "mean": round(statistics.fmean(scaled), digits),
        "std": round(statistics.stdev(scaled), digits) if len(scaled) > 1 else 0.0,
    }
    row.update(n=len(scaled), values=[round(v, digits) for v in scaled])
    if top_k and val and None not in val:
        best = sorted(range(len(scaled)), key=lambda i: -val[i])[:top_k]
        top = [scaled[i] for i in best]
        row.update(
            top_k=top_k, top_mean=round(statistics.fmean(top), digits), top_std=round(statistics.pstdev(top), digits)
        )
    return row


def paired_difference(diffs: list[float], digits: int = 3) -> dict[str, float]:
    """Mean of paired differences with a two-sided 95% Student-t interval (needs two or more pairs), rounded to
    ``digits`` decimals."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    half = T95.get(n - 1, T95[max(k for k in T95 if k <= n - 1)] if n - 1 <= 30 else 1.96)
    half *= statistics.stdev(diffs) / math.sqrt(n)
    return {"mean": round(mean, digits), "lo": round(mean - half, digits), "hi": round(mean + half, digits), "n": n}


def paired_samples(mine: list[dict], base: list[dict], metric: str, seeds: int) -> tuple[list[float], int] | None:
    """Per test sample, the difference of ``metric`` between two arms' runs averaged over the seeds both
    recorded per-sample scores for (the same test samples in the same order), and that seed count; None
    when no seed has them in both, or their sample counts differ."""

    def scores(runs: list[dict]) -> dict[int, list[float]]:
        return {r["seed"]: r["samples"][metric] for r in runs if r["seed"] < seeds and metric in r.get("samples", {})}

    a, b = scores(mine), scores(base)
    shared = sorted(s for s in a if s in b and len(a[s]) == len(b[s]))
    if not shared or len({len(a[s]) for s in shared}) != 1 or len(a[shared[0]]) < 2:
        return None
    diffs = [statistics.fmean(a[s][i] - b[s][i] for s in shared) for i in range(len(a[shared[0]]))]
    return diffs, len(shared)


def _arm_for(spec: schema.Evidence, gate: schema.Gate, key: str) -> str | None:
    """The arm a comparison gate names: ``arm``/``than`` by name, else ``role``/``than_role`` by role."""
    named = gate.arm if key == "arm" else gate.than
    if named:
        return named
    role = (gate.role or "reference") if key == "arm" else (gate.than_role or "baseline")
    return spec.with_role(role)


def arm_seeds(arm: schema.Arm | None, seeds: int) -> int:
    """How many seeds ``arm`` runs when the evidence runs ``seeds``: fewer where the arm says so (a diagnostic)."""
    return seeds if arm is None or arm.seeds is None else min(seeds, arm.seeds)


def check_gates(spec: schema.Evidence, rows: list[dict], seeds: int) -> list[dict[str, Any]]:
    """Evaluate the metafile's sanity gates on the rows: ``floor`` (every arm's mean of ``metric`` is at
    least ``value``), ``compare`` (arm ``arm`` beats arm ``than`` on ``metric`` by ``margin``, ``better``
    higher or lower; ``than_metric`` compares ``metric`` of ``arm`` with another metric of ``than``, e.g. the
    jointly trained teacher's PSNR with the student alone's) and ``beats_input`` (arm ``arm``'s ``metric``
    beats its own ``input_metric``, e.g. a teacher's PSNR against the PSNR of the image it is given). An
    arm's ``waive: {gate name: why}`` waives a gate for it, and the card prints why. A gate whose arms have
    not all run ``seeds`` seeds is pending."""

    def mean(row: dict, metric: str) -> float | None:
        if metric == spec.metric:
            return row["mean"] / spec.scale
        return (row.get("metrics") or {}).get(metric, {}).get("mean")

    by_arm, arms = {r["arm"]: r for r in rows}, {a.arm: a for a in spec.arms}
    outcomes = []
    for gate in spec.gates:
        name, metric = gate.name, gate.metric
        if gate.kind == "floor":
            involved = list(arms)
        elif gate.kind == "compare":
            involved = [_arm_for(spec, gate, "arm"), _arm_for(spec, gate, "than")]
        else:  # beats_input; the schema allows no other kind
            involved = [_arm_for(spec, gate, "arm")]
        waived = {a: arms[a].waive[name] for a in involved if a in arms and name in arms[a].waive}
        if any(a not in by_arm or by_arm[a]["n"] < arm_seeds(arms.get(a), seeds) for a in involved if a not in waived):
            outcomes.append({"gate": name, "status": "pending", "detail": "not every arm has run yet"})
            continue
        if gate.kind == "floor":
            if gate.value is None:
                raise ValueError(f"evidence gate {name!r}: a floor gate needs a value")
            low = [f"{a} {mean(by_arm[a], metric):.2f}" for a in involved if a not in waived
                   and mean(by_arm[a], metric) is not None and mean(by_arm[a], metric) < gate.value]  # fmt: skip
            status, detail = ("fail", f"{metric} below {gate.value}: " + "; ".join(low)) if low else ("pass", "")
        else:  # compare and beats_input: one mean must beat another by the margin
            a = involved[0]
            if gate.kind == "beats_input" and not gate.input_metric:
                raise ValueError(f"evidence gate {name!r}: a beats_input gate needs an input_metric")
            b, other = (
                (a, gate.input_metric) if gate.kind == "beats_input" else (involved[1], gate.than_metric or metric)
            )
            if a in waived or b in waived:
                status, detail = "waived", ""
            else:
                va, vb = (None if v is None else round(v, 3) for v in (mean(by_arm[a], metric), mean(by_arm[b], other)))
                sign = 1 if gate.better == "higher" else -1
                ok = va is not None and vb is not None and sign * (va - vb) > gate.margin
                status = "pass" if ok else "fail"
                detail = f"{a}: {metric} {va} vs {b}: {other} {vb} ({gate.better} is better, margin {gate.margin})"
        outcome: dict[str, Any] = {"gate": name, "status": status, "detail": detail}
        if waived:
            outcome["waived"] = waived
        outcomes.append(outcome)
    return outcomes


def run(
    name: str,
    seeds: int,
    fit: Fit,
    only: list[str] | None = None,
    jobs: int = 1,
    keep: Path | None = None,
    command: str | None = None,
    fresh: bool = False,
    rows_only: bool = False,
) -> dict[str, Any]:
    """Run the arms of entry ``name`` (all, or those named in ``only``) and update its results.

    ``metric`` names the headline test metric; ``metrics`` (optional) lists more, each summarised in
    the row's ``metrics`` mapping when every run of the arm logged it. ``jobs`` > 1 runs arm x seed fits
    in that many spawned processes (``fit`` must then be a module-level function); the rows are the same
    as with ``jobs=1``. ``keep`` keeps each arm's seed-0 checkpoint. Runs already recorded for an
    unchanged arm are not rerun (see the module docstring) unless ``fresh``. ``rows_only`` fits nothing: the
    rows and gates are rebuilt from the runs recorded so far (partial rows say how many seeds they hold).
    """
    entry = registry.get(name, pending=True)
    spec = entry.meta.evidence
    if spec is None or not spec.arms:
        raise ValueError(f"zoo entry {name!r} has no evidence.arms to run")
    for arm_name in only or []:
        spec.arm(arm_name)  # an unknown arm fails naming the arms there are
    arms = [a for a in spec.arms if only is None or a.arm in only]
    raw = dict(entry.raw)
    raw["results"] = dict(raw.get("results") or {})
    prints = {a.arm: arm_fingerprint(spec, a) for a in spec.arms}
    stage_prints = {a.arm: fingerprint(a) for a in spec.stages}
    # runs of arms that changed since they were recorded no longer count
    recorded = {
        arm: [_as_record(r) for r in rs if r.fingerprint == prints.get(arm)]
        for arm, rs in entry.meta.results.runs.items()
    }
    stages_recorded = {
        stage: [_as_record(r) for r in rs if r.fingerprint == stage_prints.get(stage)]
        for stage, rs in entry.meta.results.stage_runs.items()
    }
    for arm in spec.arms:  # arms another entry fits: its recorded runs, if that arm is the same one
        if arm.runs_from is not None:
            recorded[arm.arm] = shared_runs(spec, arm)
    if fresh:
        for arm in arms:
            recorded.pop(arm.arm, None)
    done = {(arm, r["seed"]) for arm, rs in recorded.items() for r in rs}
    todo = [
        (arm, seed)
        for arm in arms
        for seed in range(arm_seeds(arm, seeds))
        if (arm.arm, seed) not in done and not arm.runs_from
    ]
    if rows_only:
        todo = []
    if done and todo:
        print(f"[evidence] {name}: {len(done)} run(s) already recorded, {len(todo)} to go", flush=True)

    default_command = f"python cli.py zoo evidence {name} --seeds {seeds}"

    def record(arm: schema.Arm, seed: int, outcome: Outcome) -> None:
        tests, best_val, seconds, samples, threads = outcome
        headline = arm.metric or spec.metric
        print(f"[evidence] {name} | {arm.arm} | seed {seed}: {headline} = {_pick(tests, headline, arm):.4f} "
              f"(val {best_val}, {seconds:.0f} s)", flush=True)  # fmt: skip
        run_ = {"seed": seed, "fingerprint": prints[arm.arm], "test": tests, "best_val": best_val, "threads": threads}
        if samples:
            run_["samples"] = {k: [round(float(v), 4) for v in vs] for k, vs in samples.items()}
        runs = [r for r in recorded.get(arm.arm, []) if r["seed"] != seed]  # a refit replaces its run
        recorded[arm.arm] = [*runs, run_ | {"seconds": round(seconds, 1)}]
        _write(raw, spec, recorded, seeds, command or default_command, entry.path.parent, stages_recorded)

    def record_stage(stage: schema.Arm, seed: int, outcome: Outcome) -> None:
        tests, best_val, seconds, _, threads = outcome
        print(f"[evidence] {name} | stage {stage.arm} | seed {seed}: {tests} ({seconds:.0f} s)", flush=True)
        runs = [r for r in stages_recorded.get(stage.arm, []) if r["seed"] != seed]  # a refit replaces its run
        run_ = {"seed": seed, "fingerprint": stage_prints[stage.arm], "test": tests, "best_val": best_val}
        run_["threads"] = threads
        stages_recorded[stage.arm] = [*runs, run_ | {"seconds": round(seconds, 1)}]
        _write(raw, spec, recorded, seeds, command or default_command, entry.path.parent, stages_recorded)

    # What the remaining arms start from (a stage, or another arm), fitted first, once per seed, and kept
    # (runs/stages/); then every other arm, with {after} filled in.
    stage_names = {a.arm for a in spec.stages}

    def source(n: str) -> schema.Arm:
        return spec.stage(n) if n in stage_names else spec.arm(n)

    def kept(n: str, k: int) -> Path:
        return stage_checkpoint(name, source(n), k)

    starts = {a.after for a in spec.arms if a.after is not None}
    first = [(source(n), k) for n, k in sorted({(a.after, k) for a, k in todo if a.after}) if not kept(n, k).is_file()]
    first += [(a, k) for a, k in todo if a.arm in starts and (a.arm, k) not in {(f.arm, j) for f, j in first}]
    in_first = {(f.arm, j) for f, j in first}
    second = [(_after(a, kept(a.after, k)) if a.after else a, k) for a, k in todo if (a.arm, k) not in in_first]

    def run_first(item: tuple[schema.Arm, int]) -> tuple:
        f, k = item
        return _timed_kept(fit, f, k, None if f.arm in stage_names else keep, kept(f.arm, k))

    def record_item(item: tuple[schema.Arm, int], outcome: tuple) -> None:  # a stage's fit or an arm's
        (record_stage if item[0].arm in stage_names else record)(item[0], item[1], outcome)

    failed: list[str] = []

    def attempt(item: tuple[schema.Arm, int], outcome: Callable[[], tuple]) -> None:
        """Record a finished fit (a stage's or an arm's); a fit that raised is reported now and the grid goes on."""
        try:
            result = outcome()
        except Exception as err:  # noqa: BLE001 - any fit's failure; raised again, together, at the end
            failed.append(f"{item[0].arm!r} seed {item[1]}: {type(err).__name__}: {err}")
            print(f"[evidence] {name} | {item[0].arm} | seed {item[1]}: FAILED, {type(err).__name__}: {err}",
                  flush=True)  # fmt: skip
            return
        record_item(item, result)

    if jobs > 1 and len(first) + len(second) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        share = max(1, (os.cpu_count() or 1) // jobs)  # each fit its share of the cores, none oversubscribed
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_worker_init, initargs=(share,)) as pool:
            staged = {
                pool.submit(_timed_kept, fit, f, k, None if f.arm in stage_names else keep, kept(f.arm, k)): (f, k)
                for f, k in first
            }
            for future in as_completed(staged):
                attempt(staged[future], future.result)
            futures = {pool.submit(_timed, fit, arm, seed, keep): (arm, seed) for arm, seed in second}
            for future in as_completed(futures):
                attempt(futures[future], future.result)
    else:
        for item in first:
            attempt(item, lambda item=item: run_first(item))
        for arm, seed in second:
            attempt((arm, seed), lambda arm=arm, seed=seed: _timed(fit, arm, seed, keep))
    if failed:
        raise RuntimeError(f"{len(failed)} fit(s) failed (every other run is recorded): " + "; ".join(failed))
    if not first and not second:  # nothing fitted: the rows are rebuilt, the recorded command and hardware kept
        owners = {arm.runs_from for arm in spec.arms}
        if len(owners) == 1 and None not in owners:  # every run was fitted by the other entry's command, there
            fitted_by = registry.get(str(owners.pop()), pending=True).meta.results
            raw.setdefault("results", {}).update(command=fitted_by.command, hardware=fitted_by.hardware)
        _write(raw, spec, recorded, seeds, command or default_command, entry.path.parent, stages_recorded, True)
    return raw["results"]


def _write(
    raw: dict,
    spec: schema.Evidence,
    recorded: dict[str, list[dict]],
    seeds: int,
    command: str,
    directory: Path,
    stages: dict[str, list[dict]] | None = None,
    unfitted: bool = False,
) -> None:
    """Rebuild the rows from every recorded run and write the metafile atomically. A call with fewer seeds
    than were recorded (``--seeds 1`` for a new arm of a 3-seed entry) keeps every recorded seed in the rows.
    ``unfitted`` (the call fitted nothing, as ``--rows-only``) keeps the recorded ``command`` and ``hardware``:
    they describe the fits, not this call."""
    seeds = max([seeds] + [r["seed"] + 1 for runs in recorded.values() for r in runs])
    metric, scale = spec.metric, spec.scale
    extra = [m for m in spec.metrics if m != metric]
    results = raw["results"]
    rows = []
    by_arm = {a.arm: a for a in spec.arms}
    for arm_name, arm in by_arm.items():
        mine = sorted((r for r in recorded.get(arm_name, []) if r["seed"] < seeds), key=lambda r: r["seed"])
        if not mine:
            continue
        row = {"arm": arm_name} | ({"metric": arm.metric} if arm.metric else {})
        own_scale = arm.scale if arm.scale is not None else scale
        row |= summarise([_pick(r["test"], arm.metric or metric, arm) for r in mine], own_scale,
                         [r["best_val"] for r in mine], spec.top_k, spec.digits)  # fmt: skip
        row["seeds"] = [r["seed"] for r in mine]
        # An extra metric some arm never logs (a conflict rate without two sources) is left out of its row.
        logged = [m for m in extra if all(m in r["test"] for r in mine)]
        if logged:
            # unscaled (a cosine, a share, a loss): four decimals, so a std of 0.002 is not shown as 0.0
            row["metrics"] = {m: summarise([r["test"][m] for r in mine], 1.0, digits=4) for m in logged}
        row["seconds_per_run"] = round(statistics.fmean(r["seconds"] for r in mine), 1)
        rows.append(row)
    baseline = spec.with_role("baseline")

    def headline(arm: str | None) -> dict[int, float | None]:
        return {r["seed"]: r["test"].get(metric) for r in recorded.get(arm, []) if r["seed"] < seeds}

    pair_digits = max(3, spec.digits + 1)  # one decimal finer than the rows, as the card shows them
    for row in rows:
        against = spec.arm(row["arm"]).paired_against or baseline
        if row["arm"] == against or against is None or row.get("metric"):  # pairs share the headline
            continue
        mine, base = headline(row["arm"]), headline(against)
        shared = sorted(s for s in mine if s in base and mine[s] is not None and base[s] is not None)
        if len(shared) >= 2:
            diffs = [(mine[s] - base[s]) * scale for s in shared]
            row["paired"] = {"against": against, **paired_difference(diffs, pair_digits)}
        per_sample = paired_samples(recorded.get(row["arm"], []), recorded.get(against, []), metric, seeds)
        if per_sample is not None:
            diffs, n_seeds = per_sample
            row["paired_samples"] = {
                "against": against,
                **paired_difference([d * scale for d in diffs], pair_digits),
                "seeds": n_seeds,
            }
    hardware = f"{platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}, "
    hardware += f"python {sys.version.split()[0]}"
    hardware += f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    if unfitted:
        command, hardware = results.get("command") or command, results.get("hardware") or hardware
    results.update(
        command=command,
        metric=metric,
        selection=spec.selection,
        rows=rows,
        hardware=hardware,
        run_time_s=round(sum(r["seconds"] for rs in recorded.values() for r in rs), 1),  # summed over runs
        runs={arm: sorted(rs, key=lambda r: r["seed"]) for arm, rs in recorded.items() if arm in by_arm},
    )
    names = {a.arm for a in spec.stages}
    stage_runs = {k: sorted(v, key=lambda r: r["seed"]) for k, v in (stages or {}).items() if k in names and v}
    if stage_runs:
        results["stage_runs"] = stage_runs
    else:
        results.pop("stage_runs", None)
    if spec.gates:
        results["gates"] = check_gates(spec, rows, seeds)
    else:  # gates removed from the metafile: no stale verdict stays on the card
        results.pop("gates", None)
    results.pop("wall_time_s", None)
    _write_keeping_edits(raw, directory)


def _write_keeping_edits(raw: dict, directory: Path) -> None:
    """Write the grid's ``results`` into the metafile as it is on disk now, so prose edited while a grid of many
    hours ran (a card's findings) is kept. An edit that does not parse or validate is saved beside it as
    ``<name>.yaml.edited`` and the metafile gets the grid's copy (its last good merge): the run is never lost to a
    half-done edit."""
    path = directory / f"{raw['name']}.yaml"
    if not path.is_file():
        registry.write_entry(raw, directory)
        return
    text = path.read_text()
    try:
        on_disk = yaml.safe_load(text)
        if not isinstance(on_disk, dict) or on_disk.get("name") != raw["name"]:
            raise ValueError("it is not this entry's metafile any more")
        merged = {**on_disk, "results": raw["results"]}
        registry.write_entry(merged, directory)
        raw.clear()
        raw.update(merged)  # the grid's copy from now on: a later broken edit falls back to this one
    except (yaml.YAMLError, ValueError) as err:
        atomic_write_bytes(path.with_name(path.name + ".edited"), text.encode())
        print(
            f"zoo evidence: {path} was edited during the grid and does not load ({err}); the edit is saved as "
            f"{path.name}.edited and the metafile holds the grid's copy with the new results",
            file=sys.stderr,
        )
        registry.write_entry(raw, directory)
