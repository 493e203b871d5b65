"""The core contracts: a frozen, always-eval teacher through a real fit; taps; projectors."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import ToyData, ToyDistill, ToyNet, saved_weights
from torch import nn

from modules.core import FeatureTaps, Teacher, make_projector, projector_for


class TeacherWatch(L.Callback):
    """Checks, at every training batch, that the teacher is in eval and has not moved."""

    def __init__(self) -> None:
        self.checked = 0

    def on_fit_start(self, trainer, module):
        self.before = {k: v.clone() for k, v in module.teacher.state_dict().items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        assert module.student.training and not module.teacher.training
        assert not any(m.training for m in module.teacher.modules())
        for k, v in module.teacher.state_dict().items():
            assert torch.equal(v, self.before[k]), f"teacher tensor {k} moved"
        self.checked += 1


def fit(module, tmp_path, **trainer_kwargs):
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=ToyData())
    return trainer


def test_teacher_frozen_and_eval_through_fit(tmp_path):
    teacher_net = ToyNet()
    teacher_net.train()
    module = ToyDistill(student=ToyNet(), teacher=teacher_net)
    watch = TeacherWatch()
    fit(module, tmp_path, callbacks=[watch])
    assert watch.checked == 8
    assert all(not p.requires_grad for p in module.teacher.parameters())
    optimised = {id(p) for group in module.optimizers().optimizer.param_groups for p in group["params"]}
    assert optimised.isdisjoint({id(p) for p in module.teacher.parameters()})
    assert optimised == {id(p) for p in module.student.parameters()}


def test_teacher_left_out_of_checkpoint_and_restored_on_load(tmp_path):
    module = ToyDistill(student=ToyNet(), teacher=ToyNet())
    trainer = fit(module, tmp_path)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert not [k for k in ckpt["state_dict"] if k.startswith("teacher.")]
    assert [k for k in ckpt["state_dict"] if k.startswith("student.")]
    assert ckpt["distillzoo"]["student_spec"]["class_path"] == "conftest.ToyNet"
    fresh = ToyDistill(student=ToyNet(), teacher=module.teacher.network)
    fresh.load_state_dict(fresh.state_dict())  # strict
    restored = ToyDistill.load_from_checkpoint(
        path, student=ToyNet(), teacher=module.teacher.network, weights_only=True
    )
    for k, v in module.student.state_dict().items():
        assert torch.equal(v, restored.student.state_dict()[k])


def test_a_trained_arms_checkpoint_becomes_the_next_arms_teacher(tmp_path):
    """Evidence arms after a teacher arm get its .ckpt as {after}: the teacher is that fit's student."""
    module = ToyDistill(student=ToyNet(), teacher=ToyNet())
    trainer = fit(module, tmp_path)
    trainer.save_checkpoint(tmp_path / "teacher-arm.ckpt")
    for teacher in (Teacher(weights=str(tmp_path / "teacher-arm.ckpt")),
                    Teacher(ToyNet(), weights=str(tmp_path / "teacher-arm.ckpt"))):  # fmt: skip
        assert not teacher.training and len(teacher.manifest["sha256"]) == 64
        for k, v in module.student.state_dict().items():
            assert torch.equal(v, teacher.network.state_dict()[k])
    with pytest.raises(ValueError, match=r"teacher-arm.ckpt do not fit ToyNet: shape mismatch: .*weight"):
        Teacher(ToyNet(hidden=3), weights=str(tmp_path / "teacher-arm.ckpt"))


def test_several_teachers_form_a_moduledict():
    module = ToyDistill(student=ToyNet(), teacher={"a": ToyNet(), "b": Teacher(ToyNet())})
    assert isinstance(module.teacher, nn.ModuleDict)
    assert all(isinstance(t, Teacher) for t in module.teacher.values())
    assert set(module.teachers()) == {"a", "b"}
    with pytest.raises(ValueError, match="empty set of teachers"):
        ToyDistill(student=ToyNet(), teacher={})


def test_teacher_forward_has_no_grad_and_renormalises():
    net = nn.Conv2d(3, 1, 1, bias=False)
    nn.init.ones_(net.weight)
    teacher = Teacher(net, mean=[1.0, 1.0, 1.0], std=[2.0, 2.0, 2.0])
    x = torch.full((1, 3, 2, 2), 3.0, requires_grad=True)
    out = teacher(x)
    assert not out.requires_grad
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 3.0))  # 3 channels x (3 - 1) / 2
    teacher.train()
    assert not teacher.training and not teacher.network.training


def test_feature_taps_record_and_reject_unknown_paths():
    net = ToyNet()
    with FeatureTaps(net, {"hidden": "body.2", "out": "head"}) as taps:
        out = net(torch.randn(4, 8))
    assert taps["hidden"].shape == (4, 16) and torch.equal(taps["out"], out)
    assert not net.body[2]._forward_hooks  # hooks removed on exit
    with pytest.raises(KeyError, match=r"no submodule 'body.9'.*closest valid paths: body\.\d"):
        FeatureTaps(net, {"x": "body.9"})


def test_projectors_sized_from_shapes():
    assert projector_for((2, 16), (2, 16)).__class__ is nn.Identity
    lin = projector_for((2, 5, 16), (2, 5, 32))
    assert lin(torch.randn(2, 5, 16)).shape == (2, 5, 32)
    conv = projector_for((2, 8, 4, 4), (2, 24, 4, 4))
    assert conv(torch.randn(2, 8, 4, 4)).shape == (2, 24, 4, 4)
    assert make_projector("mlp", 4, 6)(torch.randn(3, 4)).shape == (3, 6)
    with pytest.raises(ValueError, match="identity projector needs equal widths"):
        make_projector("identity", 4, 6)


def test_projectors_are_optimised_with_the_student():
    module = ToyDistill(student=ToyNet(), teacher=ToyNet())
    module.projectors["p"] = nn.Linear(3, 3)
    params = module.configure_optimizers().param_groups[0]["params"]
    assert {id(p) for p in params} == {id(p) for p in [*module.student.parameters(), *module.projectors.parameters()]}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Lightning's FSDP strategy needs CUDA")
def test_frozen_teacher_under_fsdp(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "scripts" / "fsdp_fit.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=600)
    result = (tmp_path / "result.txt").read_text()
    assert "frozen=True" in result and "moved=[]" in result and "eval=True" in result


def _fit(module, **kwargs):
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False, **kwargs)
    trainer.fit(module, datamodule=ToyData())
    return trainer


class TwoSteps(ToyDistill):
    """Two named steps: a 'critic' (the projector) then the student, to exercise manual optimisation."""

    steps = ("critic", "student")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.projectors["critic"] = nn.Linear(3, 1)

    def step_modules(self, step):
        return (self.projectors,) if step == "critic" else (self.student,)

    def shared_forward(self, batch):
        return {"logits": self.student(batch[0])}

    def step_loss(self, step, batch, shared):
        if step == "critic":
            return {"fit": self.projectors["critic"](shared["logits"].detach()).pow(2).mean()}
        return self.distill_loss(batch)


def test_named_steps_train_each_optimiser_on_its_own_modules_and_log_per_step():
    module = TwoSteps(student=ToyNet(), optimizer=torch.optim.SGD)
    student0 = {k: v.clone() for k, v in module.student.state_dict().items()}
    critic0 = module.projectors["critic"].weight.clone()
    trainer = _fit(module)
    assert not module.automatic_optimization and len(trainer.optimizers) == 2
    assert [len(o.param_groups[0]["params"]) for o in trainer.optimizers] == [2, 6]
    assert not torch.equal(module.projectors["critic"].weight, critic0)
    assert any(not torch.equal(v, student0[k]) for k, v in module.student.state_dict().items())
    assert {"train/critic/fit", "train/student/ce", "train/student/loss"} <= set(trainer.logged_metrics)


def test_an_optimiser_mapping_must_name_every_step():
    with pytest.raises(ValueError, match=r"steps \['critic', 'student'\].*missing \['student'\]"):
        TwoSteps(student=ToyNet(), optimizer={"critic": torch.optim.SGD})


def test_a_student_that_cannot_export_fails_when_fit_starts():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(8, 3)

        def forward(self, x):
            return self.net(x)

    with pytest.raises(TypeError, match=r"fit does not start.*Plain cannot be exported.*@zoo.specs.exportable"):
        _fit(ToyDistill(student=Plain()))


def test_a_non_finite_loss_stops_the_fit_naming_the_term():
    class NaNTerm(ToyDistill):
        def distill_loss(self, batch):
            return super().distill_loss(batch) | {"hint": torch.tensor(float("nan"))}

    with pytest.raises(FloatingPointError, match=r"not finite at epoch 0, step 0; non-finite terms: \['hint'\]"):
        _fit(NaNTerm(student=ToyNet()))


def test_configure_metrics_are_epoch_level_per_stage():
    """A collection from configure_metrics is cloned per stage and logged as <stage>/<name> over the whole
    epoch: the accuracy over 64 examples in batches of 16 equals the accuracy computed on all at once."""
    from torchmetrics import MetricCollection
    from torchmetrics.classification import MulticlassAccuracy

    class WithMetrics(ToyDistill):
        def configure_metrics(self):
            return MetricCollection({"acc_epoch": MulticlassAccuracy(3, average="micro")})

        def evaluate(self, batch, stage):
            self.stage_metrics[stage].update(self.student(batch[0]), batch[1])
            return {}

    module = WithMetrics(student=ToyNet())
    trainer = _fit(module)
    (result,) = trainer.test(module, datamodule=ToyData(), verbose=False)
    data = ToyData()
    with torch.no_grad():
        expected = (module.student.eval()(data.x).argmax(-1) == data.y).float().mean()
    assert (
        set(module.stage_metrics) == {"val", "test"} and module.stage_metrics["val"] is not module.stage_metrics["test"]
    )
    assert result["test/acc_epoch"] == pytest.approx(float(expected))


def test_a_step_whose_terms_are_all_constants_is_skipped_not_an_error():
    """An outlier batch whose loss a scaler replaced by a constant gives no gradient and no optimiser step."""

    class Clipped(TwoSteps):
        def step_loss(self, step, batch, shared):
            if step == "critic":
                return {"fit": torch.tensor(3.0)}  # clipped: a constant
            return super().step_loss(step, batch, shared)

    module = Clipped(student=ToyNet(), optimizer=torch.optim.SGD)
    critic0 = module.projectors["critic"].weight.clone()
    _fit(module)
    assert torch.equal(module.projectors["critic"].weight, critic0)


def test_a_fit_with_an_untrained_in_memory_teacher_warns(tmp_path):
    """A teacher built in memory without weights is a smoke test, not distillation: the fit says so; one with
    weights (a sha256-checked file) does not."""
    import warnings

    toy_teacher_file = saved_weights(ToyNet(), tmp_path / "teacher.safetensors")
    with pytest.warns(UserWarning, match="a teacher has no weights"):
        fit(ToyDistill(student=ToyNet(), teacher=Teacher(ToyNet())), tmp_path, max_steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message="(?!.*a teacher has no weights)")
        fit(ToyDistill(student=ToyNet(), teacher=Teacher(weights=toy_teacher_file)), tmp_path, max_steps=1)
