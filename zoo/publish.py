"""``zoo publish NAME``: rebuild an entry from its metafile's ``publish`` block, end to end.

The block names what becomes the entry (:class:`zoo.schema.Publish`): an evidence arm, whose arms are
run first over the seeds (resumable, :mod:`zoo.evidence`) and whose seed-0 checkpoint is exported, or
one fit at seed 0 for a teacher. A dataset entry publishes the training set of its arm's datamodule (a
distilled set). Sanity gates that fail stop the publish before anything is exported. A kept checkpoint
lost with its machine is refitted (CPU fits are deterministic at the thread count each run records, and resume
exactly, their checkpoints keeping the random state) and its test metrics are compared with the
recorded seed-0 run. The fit and the datamodule builder come from the CLI, so the zoo imports no method.
Figures and cards are the CLI's next steps (``cli.py zoo publish``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo import evidence, export, registry, schema

BuildData = Callable[[schema.Fit], Any]  # arm -> its datamodule, composed exactly as its fit would be


def keep_dir(name: str) -> Path:
    """Where the seed-0 checkpoints of ``name``'s publish are kept (gitignored; lost with the machine)."""
    return registry.REPO_ROOT / "runs" / "publish" / name


def _checkpoint(arm: schema.Arm, fit: evidence.Fit, keep: Path, recorded: schema.Run | None) -> Path:
    """The kept seed-0 checkpoint of ``arm``, refitted when it is missing (at the recorded run's thread count);
    a refit whose test metrics differ from the recorded seed-0 run is reported (the published weights must be
    the run the card describes)."""
    ckpt = evidence.kept_checkpoint(keep, arm)
    if ckpt.is_file():
        return ckpt
    print(f"[publish] {ckpt} is missing: refitting {arm.arm!r} at seed 0", flush=True)
    with evidence.threads_of(recorded):
        tests = fit(arm, 0, keep)[0]  # (tests, best val[, per-sample scores])
    if recorded is not None:
        drift = {k: (recorded.test[k], v) for k, v in tests.items() if abs(recorded.test.get(k, v) - v) > 1e-4}
        if drift:
            raise ValueError(
                f"the refit of {arm.arm!r} at seed 0 does not reproduce the recorded run ({drift}); rerun its "
                "evidence with --fresh so that the card describes the published weights (a run recorded before "
                "its thread count was, or resumed before fits kept their random state, may not be reproducible)"
            )
    if not ckpt.is_file():
        raise FileNotFoundError(f"the fit of {arm.arm!r} kept no checkpoint at {ckpt}")
    return ckpt


def publish(
    name: str,
    fit: evidence.Fit,
    build_data: BuildData,
    jobs: int = 1,
    keep: Path | None = None,
    fresh: bool = False,
    command: str | None = None,
) -> Path:
    """Run ``name``'s publish block; returns the published weights file."""
    entry = registry.get(name, pending=True)
    plan = entry.meta.publish
    if plan is None:
        raise ValueError(f"zoo entry {name!r} has no publish block: it is not rebuilt by zoo publish")
    if plan.script is not None:
        raise ValueError(f"zoo entry {name!r} is published by {' '.join(plan.script)} (cli.py zoo publish runs it)")
    keep = keep or keep_dir(name)
    if plan.fit is not None:
        arm = schema.Arm(arm=name, config=plan.fit.config, args=plan.fit.args)
        return export.export(_checkpoint(arm, fit, keep, None), name, overwrite=True)
    assert plan.arm is not None and entry.meta.evidence is not None  # the schema checked both
    results = evidence.run(name, plan.seeds, fit, jobs=jobs, keep=keep, command=command, fresh=fresh)
    failed = [g for g in results.get("gates", []) if g["status"] == "fail"]
    if failed:
        details = "; ".join(f"{g['gate']}: {g['detail']}" for g in failed)
        raise ValueError(f"not publishing {name!r}: sanity gate(s) failed ({details})")
    arm = entry.meta.evidence.arm(plan.arm)
    if entry.kind == "dataset":
        datamodule = build_data(schema.Fit(config=arm.config, args=arm.args))
        datamodule.setup("fit")
        stats = {k: round(v, 5) if isinstance(v, float) else v for k, v in getattr(datamodule, "stats", {}).items()}
        fields = {"distilled_set": stats}
        return export.export_dataset(datamodule.train_set, name, fields, entry.meta.loader, overwrite=True)
    if plan.export == "after":  # the network the arm measures, e.g. the student a dense probe reads
        assert arm.after is not None  # the schema checked it
        kept = evidence.kept_source(name, entry.meta, arm.after, 0, fit, keep)  # a lost one is refitted, checked
        return export.export(kept, name, overwrite=True, part=plan.part)
    return export.export(arm_checkpoint(name, arm.arm, fit, keep), name, overwrite=True, part=plan.part)


def arm_checkpoint(name: str, arm_name: str, fit: evidence.Fit, keep: Path | None = None) -> Path:
    """The kept seed-0 checkpoint of evidence arm ``arm_name`` of entry ``name`` (in ``keep``, default
    :func:`keep_dir`), refitted when it was lost with the machine (its source stage first, where it starts from
    one) and checked against the recorded seed-0 run: for export, and for figures that show an arm's fit."""
    meta = registry.get(name, pending=True).meta
    if meta.evidence is None:
        raise ValueError(f"zoo entry {name!r} has no evidence arms")
    arm, keep = meta.evidence.arm(arm_name), keep or keep_dir(name)
    mine = evidence.arm_fingerprint(meta.evidence, arm)  # a run of the arm as it was before a change is no check
    seed0 = next((r for r in meta.results.runs.get(arm.arm, []) if r.seed == 0 and r.fingerprint == mine), None)
    if arm.after is not None and not evidence.kept_checkpoint(keep, arm).is_file():
        arm = evidence.with_source(name, meta, arm, 0, fit, keep)  # a lost stage is refitted first
    return _checkpoint(arm, fit, keep, seed0)
