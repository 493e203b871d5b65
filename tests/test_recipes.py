"""Every recipe and every zoo entry's evidence arm builds (TorchGeo's trainer tests): the CLI composes the
configs and overrides into a model, a datamodule and a trainer exactly as ``fit`` would, with
``lightning_main(run=False)``; and every ``tiny`` recipe fits a batch with ``--trainer.fast_dev_run``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import cli
import zoo
from zoo import registry

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").glob("*/*.yaml"))
# Recipes whose zoo teacher exists only at a scale an overlay sets: DMS inherits the teacher's encoder and
# generator, so the student must have the published teacher's (CPU-scale) shape.
COMPANIONS = {"recipes/codec/distill.yaml": ["recipes/codec/cpu.yaml"]}
# Recipes layered on another that carries the trainer and data (--config ce.yaml --config spd.yaml).
BASES = {"recipes/uniego/naive.yaml": ["recipes/uniego/ce.yaml"], "recipes/uniego/spd.yaml": ["recipes/uniego/ce.yaml"]}


def is_overlay(recipe: str) -> bool:
    """An overlay (cpu.yaml, views36.yaml) changes a full recipe; it names no model class itself."""
    model = (yaml.safe_load((ROOT / recipe).read_text()) or {}).get("model") or {}
    return "class_path" not in model


# Overlays laid over another recipe than the first full one of their folder.
OVERLAY_BASES = {
    "recipes/dmae/cpu.yaml": "recipes/dmae/teacher.yaml",
    "recipes/dmae/paper.yaml": "recipes/dmae/distill.yaml",
    "recipes/g2sd/paper.yaml": "recipes/g2sd/generic.yaml",
    "recipes/g2sd/paper_specific.yaml": "recipes/g2sd/specific.yaml",
    "recipes/g2sd/segment_teacher.yaml": "recipes/g2sd/segment.yaml",
}


def overlay_base(recipe: str) -> str:
    """The full recipe an overlay lays over: the first of its folder that is not an overlay or tiny."""
    if recipe in OVERLAY_BASES:
        return OVERLAY_BASES[recipe]
    folder = Path(recipe).parent
    return next(r for r in RECIPES if Path(r).parent == folder and not is_overlay(r) and "tiny" not in r)


def build(configs: list[str], args: list[str] = ()) -> cli.DistillCLI:
    """The CLI's objects, and the model's epoch metrics built as ``setup`` builds them (a metric name torchmetrics
    refuses fails here, not hours into a grid)."""
    built = cli.lightning_main([*(f"--config={c}" for c in configs), *args], run=False)
    if callable(getattr(built.model, "configure_metrics", None)):
        built.model.configure_metrics()
    return built


def recipe_cases() -> list:
    cases = []
    for recipe in RECIPES:
        layered = [*BASES.get(recipe, []), recipe, *COMPANIONS.get(recipe, [])]
        configs = [overlay_base(recipe), recipe] if is_overlay(recipe) else layered
        cases.append(pytest.param(configs, id=recipe))
    return cases


def arm_cases() -> list:
    """Every stage and arm of every entry, published or pending; an arm that starts after a stage is built without the
    overrides that take the stage's checkpoint ({after}), which exists only once the stage has run."""
    cases = []
    for name in [*zoo.list(), *registry.list_pending()]:
        evidence = registry.get(name, pending=True).meta.evidence
        for arm in [*evidence.stages, *evidence.arms] if evidence else []:
            if arm.after is not None:
                arm = dataclasses.replace(arm, args=[a for a in arm.args if "{after}" not in a])
            cases.append(pytest.param(arm, id=f"{name}: {arm.arm}"))
    return cases


@pytest.mark.parametrize("configs", recipe_cases())
def test_recipe_builds(configs):
    built = build(configs)
    assert built.model is not None and built.datamodule is not None and built.trainer is not None


@pytest.mark.parametrize("arm", arm_cases())
def test_evidence_arm_builds(arm):
    built = build(arm.config, arm.args)
    assert built.model is not None and built.datamodule is not None


@pytest.mark.parametrize("recipe", [r for r in RECIPES if "tiny" in Path(r).name])
def test_tiny_recipe_fits_one_batch(recipe, tmp_path):
    result = cli.main(
        ["fit", f"--config={recipe}", "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}"]
    )
    assert result.trainer.state.finished and result.trainer.global_step >= 1
