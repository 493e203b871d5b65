"""MetricAnything reconstruction (modules/metric_depth.py): the released focal-length convention, the prompt
carrying the teacher's scale, prompts, losses and the pooled, unaligned metrics."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from modules.core import Teacher
from modules.metric_depth import (
    MetricDepthDistill,
    MetricDepthStudent,
    PooledDepthMetric,
    PromptDepthNet,
    PromptDepthTeacher,
    depth_metrics,
    sample_prompt,
    silog_loss,
    trimmed_mae_inverse,
)


@pytest.fixture
def student() -> MetricDepthStudent:
    torch.manual_seed(0)
    return MetricDepthStudent(widths=(4, 8), net_size=(16, 16)).eval()


def test_student_depth_follows_the_released_convention_c_times_w_over_f(student):
    images = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        c = student.canonical_inverse(images)[:, 0]
        near, far = student(images, torch.tensor([100.0, 100.0])), student(images, 200.0)
    assert near.shape == (2, 24, 32)
    assert torch.allclose(near, 1 / (c * 32 / 100.0).clamp(1e-3, 1e3))
    assert torch.allclose(far, 2 * near, rtol=1e-5)  # twice the focal length: twice as far


def test_student_without_a_focal_length_raises_unless_a_default_is_passed_explicitly(student):
    images = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="needs the focal length in pixels"):
        student(images)
    with torch.no_grad():
        assert torch.equal(student(images, default_f_px=50.0), student(images, 50.0))
    for bad in (0.0, -3.0, float("nan")):
        with pytest.raises(ValueError, match="f_px must be positive"):
            student(images, bad)
    blind = MetricDepthStudent(widths=(4, 8), focal_conditioning=False).eval()
    with torch.no_grad():
        assert torch.equal(blind(images, 10.0), blind(images, 1000.0)) and torch.equal(
            blind(images), blind(images, 1.0)
        )


def test_the_prompt_carries_the_teachers_metric_scale():
    torch.manual_seed(0)
    teacher = PromptDepthNet(widths=(4, 8)).eval()
    images, depth = torch.rand(2, 3, 16, 16), 1 + 9 * torch.rand(2, 16, 16)
    prompt = sample_prompt(depth, 0.05, torch.Generator().manual_seed(0))
    scaled = prompt.clone()
    scaled[:, 0] /= 3  # the same scene three times as far
    with torch.no_grad():
        assert torch.allclose(teacher(images, scaled), 3 * teacher(images, prompt), rtol=1e-4)
    prompt[1, 1] = 0
    with pytest.raises(ValueError, match="at least one prompt pixel"):
        teacher(images, prompt)


def test_prompts_keep_the_share_of_valid_pixels_and_a_density_that_keeps_none_is_refused():
    depth = torch.ones(2, 20, 20)
    depth[0, :10] = 0  # half invalid
    depth[1] = 0  # no measurement at all: an empty prompt
    prompt = sample_prompt(depth, 0.1, torch.Generator().manual_seed(0))
    kept = prompt[0, 1] > 0
    assert int(kept.sum()) == 20 and not kept[:10].any()
    assert torch.equal(prompt[0, 0][kept], torch.ones(20)) and prompt[1].sum() == 0
    sparse = sample_prompt(depth, 0.004)  # 0.8 of a pixel of the valid half: still one
    assert int(sparse[0, 1].sum()) == 1
    with pytest.raises(ValueError, match="density of 0.001 keeps no pixel of a 20x20 image"):
        sample_prompt(depth, 0.001)


def test_pooled_metrics_weigh_pixels_not_images_and_use_the_official_silog():
    absrel = PooledDepthMetric("absrel")
    absrel.update(torch.full((1, 1), 2.0), torch.ones(1, 1))  # one pixel, relative error 1
    absrel.update(torch.ones(3, 1), torch.ones(3, 1))  # three exact pixels
    assert torch.isclose(absrel.compute(), torch.tensor(0.25))  # pooled; the mean of image means would be 0.5
    pred, target = torch.tensor([2.0, 1.0, 4.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 1.0])  # target 0: invalid
    d = torch.log(torch.tensor([2.0, 1.0, 0.5]))
    expected = {"silog": (d.pow(2).mean() - 0.5 * d.mean().pow(2)).sqrt(), "delta1": torch.tensor(1 / 3),
                "rmse": torch.tensor((1 + 0 + 0.25) / 3).sqrt()}  # fmt: skip
    for kind, value in expected.items():
        metric = PooledDepthMetric(kind)
        metric.update(pred, target)
        assert torch.isclose(metric.compute(), value.float(), atol=1e-6), kind
    with pytest.raises(ValueError, match="kind must be one of"):
        PooledDepthMetric("mae")


def test_silog_is_scale_invariant_only_at_lambda_one_and_trimming_drops_the_largest_errors():
    target = 1 + torch.rand(1, 8, 8)
    valid = torch.ones_like(target, dtype=torch.bool)
    assert silog_loss(2 * target, target, valid, variance_focus=1.0) < 1e-3
    assert silog_loss(2 * target, target, valid) > 0.2  # lambda 0.85 keeps part of the scale error
    pred = target.clone()
    pred[0, 0, :2] = 1 / (1 / target[0, 0, :2] + 5)  # two gross inverse-depth errors of 5 out of 64 pixels
    assert trimmed_mae_inverse(pred, target, valid) < 1e-5
    assert trimmed_mae_inverse(pred, target, valid, trim=0.0) > 0.1


def batch(n: int = 2, size: int = 16) -> dict:
    depth = 1 + 4 * torch.rand(n, size, size)
    source = depth.clone()
    source[:, ::2] = 0  # scanlines: every other row measured
    return {"image": torch.rand(n, 3, size, size), "depth": depth, "source": source, "kind": torch.zeros(n).long(),
            "f_px": torch.full((n,), 20.0), "dataset": ["generated"] * n, "index": torch.arange(n)}  # fmt: skip


def test_without_a_teacher_the_student_learns_the_noisy_source_where_it_measured():
    torch.manual_seed(0)
    module = MetricDepthDistill(MetricDepthStudent(widths=(4, 8)))
    b = batch()
    target, valid = module.targets(b)
    assert torch.equal(target, b["source"]) and torch.equal(valid, b["source"] > 0)
    teacher = Teacher(network=PromptDepthNet(widths=(4, 8)))
    distilled = MetricDepthDistill(MetricDepthStudent(widths=(4, 8)), teacher=teacher)
    b["source"][1] = 0  # an image with no source gives the teacher no prompt: no target
    target, valid = distilled.targets(b)
    assert valid[0].all() and not valid[1].any()
    assert set(distilled.distill_loss(b)) == {"silog"}


def test_metrics_are_kept_per_source_type_and_real_dataset():
    metrics = depth_metrics()
    from modules.metric_depth import _update_groups

    b = batch(3)
    b["kind"] = torch.tensor([0, 2, 2])
    b["dataset"] = ["generated", "generated", "generated"]
    _update_groups(metrics, b["depth"], b)
    assert int(metrics["absrel"].n) == 3 * 256 and int(metrics["absrel_mvs"].n) == 2 * 256
    assert not metrics["absrel_tof"].update_called and not metrics["real_absrel"].update_called
    b["dataset"] = ["nyu", "kitti", "somewhere"]
    _update_groups(metrics, b["depth"], b)
    assert int(metrics["real_rmse"].n) == 3 * 256 and int(metrics["nyu_rmse"].n) == 256


def test_a_teacher_fit_logs_only_the_groups_it_saw(tmp_path):
    from datamodules.images import MetricDepthDataModule

    dm = MetricDepthDataModule(size=(32, 32), train_samples=8, val_samples=4, test_samples=8, batch_size=4)
    module = PromptDepthTeacher(PromptDepthNet(widths=(4, 8)))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, dm)
    (results,) = trainer.test(module, dm, verbose=False)
    assert {"test/absrel", "test/delta1", "test/rmse", "test/silog"} <= set(results)
    assert not any(k.startswith("test/real_") for k in results)
    assert all(torch.isfinite(torch.tensor(v)) for v in results.values())


def test_the_datamodule_hands_out_its_generated_splits_in_their_fixed_order():
    """``dataset(split)`` sets up on first use and gives what the unshuffled loaders batch; an unknown split is
    named in the error."""
    from datamodules.images import MetricDepthDataModule

    dm = MetricDepthDataModule(size=(16, 16), train_samples=3, val_samples=2, test_samples=2, batch_size=2)
    train = dm.dataset("train")
    assert len(train) == 3 and len(dm.dataset("test")) == 2
    (first, *_) = dm.val_dataloader()
    assert torch.equal(first["image"][0], dm.dataset("val")[0]["image"])
    with pytest.raises(ValueError, match="'tests'"):
        dm.dataset("tests")


def test_a_teacher_has_no_prediction_for_an_image_whose_source_measured_nothing():
    torch.manual_seed(0)
    module = PromptDepthTeacher(PromptDepthNet(widths=(4, 8))).eval()
    b = batch(3)
    b["source"][1] = 0  # a ToF frame entirely beyond 5 m
    pred, keep = module.predict_depth(b)
    assert keep.tolist() == [True, False, True] and (pred[0] > 0).all() and (pred[1] == 0).all()
    b["dataset"] = ["generated", "kitti", "generated"]  # a real frame is prompted from its ground truth instead
    assert module.predict_depth(b)[1].all()


def test_the_teacher_test_scores_a_density_sweep_and_clean_prompts_on_the_same_network(tmp_path):
    """The sweep's points are the same network on the same images and prompt seed: the variant at the eval
    density equals the headline exactly, another density differs, and the clean-prompt variant equals the
    headline of the same network evaluated with eval_prompt='clean'."""
    import lightning as L

    from datamodules.images import MetricDepthDataModule

    dm = MetricDepthDataModule(size=(32, 32), train_samples=8, val_samples=4, test_samples=8, batch_size=4)
    torch.manual_seed(0)
    module = PromptDepthTeacher(PromptDepthNet(widths=(4, 8)), test_densities=[0.001, 0.01, 0.05], test_clean=True)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, dm)
    (results,) = trainer.test(module, dm, verbose=False)
    assert results["test/d1pct_absrel"] == pytest.approx(results["test/absrel"], abs=1e-7)
    assert results["test/d5pct_absrel"] != pytest.approx(results["test/absrel"], abs=1e-4)
    assert {"test/d5pct_delta1", "test/d0p1pct_absrel", "test/clean_rmse", "test/clean_silog"} <= set(results)
    clean = PromptDepthTeacher(module.student, eval_prompt="clean")
    (bound,) = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path).test(
        clean, dm, verbose=False
    )
    assert results["test/clean_absrel"] == pytest.approx(bound["test/absrel"], abs=1e-7)
    with pytest.raises(ValueError, match=r"test_densities \[0.0\]"):
        PromptDepthTeacher(PromptDepthNet(widths=(4, 8)), test_densities=[0.0])


def test_the_label_quality_diagnostic_tells_exact_labels_from_the_teachers(capsys):
    """scripts/metric_label_quality.py (the card's answer to why distillation does not help): the rendered
    source is the exact depth (AbsRel 0, every pixel), sparse LiDAR covers a part of the image, the teacher every
    pixel of it, with an error above zero."""
    script = load_script("metric_label_quality")
    script.main(["--samples", "24", "--batch-size", "12"])
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows["source", "rendered"][:2] == ["100.0%", "0.000"]
    assert float(rows["source", "lidar"][0].rstrip("%")) < 60
    assert rows["teacher", "lidar"][0] == "100.0%" and float(rows["teacher", "all"][1]) > 0.01


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / f"scripts/{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_figure_script_reads_arms_the_entry_has():
    """The curves figure reads the teacher arms by name: a renamed arm would silently drop its point, so every
    name it reads must be one of the entry's arms (and ``recorded`` refuses any other)."""
    from zoo import registry

    script = load_script("plot_metric_depth")
    arms = {a.arm for a in registry.get("metric-student-scenes", pending=True).meta.evidence.arms}
    assert {arm for arm, _ in script.SCALING + script.STUDENTS} | {script.REFERENCE} <= arms
    with pytest.raises(KeyError, match="unknown arm"):
        script.recorded("metric-student-scenes", "teacher scaling: 4x data (16,000 scenes)", "test/absrel")
