"""``zoo evidence NAME``: run an entry's arms over seeds and write mean ± std rows into its metafile.

An entry's ``evidence`` block lists the arms, each a recipe (one or more YAML configs) plus CLI
overrides; every arm x seed is one in-process ``cli.py fit --test_after_fit true`` run, and the
test metric of the best-validation checkpoint is collected. Rows are written by this code only.
"""

from __future__ import annotations

import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from zoo import registry


def arm_slug(arm: dict[str, Any]) -> str:
    """A file name for an arm: its name in lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", arm["arm"].lower()).strip("-")


def fit_and_test(arm: dict[str, Any], seed: int, keep: Path | None = None) -> tuple[dict[str, float], float | None]:
    """Every test metric of one arm x seed, and the validation score that selected its checkpoint;
    with ``keep``, seed 0's tested checkpoint is copied to ``keep/<arm slug>.ckpt`` (for export or figures)."""
    import cli  # the CLI imports the zoo; import it late to keep the zoo importable on its own

    with tempfile.TemporaryDirectory(prefix="distillzoo-evidence-") as workdir:
        args = ["fit", *(f"--config={c}" for c in arm["config"]), *arm.get("args", [])]
        args += [
            f"--seed_everything={seed}",
            "--test_after_fit=true",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={workdir}",
        ]
        result = cli.main(args)
        if keep is not None and seed == 0 and result.best_ckpt:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.best_ckpt, keep / f"{arm_slug(arm)}.ckpt")
    return {k: float(v) for k, v in result.test_metrics.items()}, result.best_val


def run_arm(arm: dict[str, Any], seed: int, metric: str) -> tuple[float, float | None]:
    """Test ``metric`` of one arm x seed, and the validation score that selected its checkpoint."""
    tests, best_val = fit_and_test(arm, seed)
    return _pick(tests, metric, arm), best_val


def _pick(tests: dict[str, float], metric: str, arm: dict[str, Any]) -> float:
    if metric not in tests:
        raise KeyError(f"arm {arm['arm']!r} logged no {metric!r}; it logged {sorted(tests)}")
    return tests[metric]


def _timed(arm: dict[str, Any], seed: int, keep: Path | None = None) -> tuple[dict[str, float], float | None, float]:
    tic = time.perf_counter()
    tests, best_val = fit_and_test(arm, seed, keep)
    return tests, best_val, time.perf_counter() - tic


def summarise(values: list[float], scale: float, val: list[float | None] | None = None, top_k: int = 0) -> dict:
    """Mean and sample std over all runs; with ``top_k``, also over the ``top_k`` runs with the best
    validation score (the official Mirage report), so both selection rules are shown."""
    scaled = [v * scale for v in values]
    row = {
        "mean": round(statistics.fmean(scaled), 2),
        "std": round(statistics.stdev(scaled), 2) if len(scaled) > 1 else 0.0,
    }
    row.update(n=len(scaled), values=[round(v, 2) for v in scaled])
    if top_k and val and None not in val:
        best = sorted(range(len(scaled)), key=lambda i: -val[i])[:top_k]
        top = [scaled[i] for i in best]
        row.update(top_k=top_k, top_mean=round(statistics.fmean(top), 2), top_std=round(statistics.pstdev(top), 2))
    return row


def run(
    name: str, seeds: int, only: list[str] | None = None, jobs: int = 1, keep: Path | None = None
) -> dict[str, Any]:
    """Run the arms of entry ``name`` (all, or those named in ``only``) and update its results.

    ``metric`` names the headline test metric; ``metrics`` (optional) lists more, each summarised in
    the row's ``metrics`` mapping when every run of the arm logged it. ``jobs`` > 1 runs arm x seed fits
    in that many spawned processes (one GPU holds several small runs at once); the rows are the same as
    with ``jobs=1``. ``keep`` keeps each arm's seed-0 checkpoint (see :func:`fit_and_test`).
    """
    entry = registry.get(name)
    spec = entry.raw.get("evidence")
    if not spec or not spec.get("arms"):
        raise ValueError(f"zoo entry {name!r} has no evidence.arms to run")
    metric, scale = spec.get("metric", "test/acc"), float(spec.get("scale", 1.0))
    extra = [m for m in spec.get("metrics", []) if m != metric]
    arms = [a for a in spec["arms"] if only is None or a["arm"] in only]
    if only and len(arms) != len(only):
        unknown = set(only) - {a["arm"] for a in arms}
        raise KeyError(f"unknown arm(s) {sorted(unknown)} for {name!r}; arms: {[a['arm'] for a in spec['arms']]}")
    results = dict(entry.raw.get("results") or {})
    rows = {r["arm"]: r for r in results.get("rows", [])}
    start = time.perf_counter()
    runs = [(arm, seed) for arm in arms for seed in range(seeds)]
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(pool.map(_timed, *zip(*runs), [keep] * len(runs)))
    else:
        outcomes = [_timed(arm, seed, keep) for arm, seed in runs]
    for (arm, seed), (tests, best_val, _) in zip(runs, outcomes):
        test = _pick(tests, metric, arm)
        print(f"[evidence] {name} | {arm['arm']} | seed {seed}: {metric} = {test:.4f} (val {best_val})", flush=True)
    for i, arm in enumerate(arms):
        mine = outcomes[i * seeds : (i + 1) * seeds]
        values = [_pick(tests, metric, arm) for tests, _, _ in mine]
        row = summarise(values, scale, [v for _, v, _ in mine], int(spec.get("top_k", 0)))
        # An extra metric some arm never logs (a conflict rate without two sources) is left out of its row.
        logged = [m for m in extra if all(m in tests for tests, _, _ in mine)]
        if logged:
            row["metrics"] = {m: summarise([tests[m] for tests, _, _ in mine], 1.0) for m in logged}
        rows[arm["arm"]] = {
            "arm": arm["arm"],
            **row,
            "seconds_per_run": round(statistics.fmean(s for *_, s in mine), 1),
        }
    order = [a["arm"] for a in spec["arms"]]
    results.update(
        command=f"python cli.py zoo evidence {name} --seeds {seeds}" + (f" --jobs {jobs}" if jobs > 1 else ""),
        metric=metric,
        selection=spec.get("selection", "test metric at the best-validation checkpoint"),
        rows=[rows[a] for a in order if a in rows],
        hardware=f"{platform.machine()} CPU x{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        # A run of some arms adds its time to what the earlier runs of the other arms took.
        wall_time_s=round(time.perf_counter() - start + (float(results.get("wall_time_s", 0)) if only else 0.0), 1),
    )
    raw = dict(entry.raw)
    raw["results"] = results
    registry.write_entry(raw, entry.path.parent)
    return results
