"""DistillModule: the LightningModule template every distillation method fills in."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from modules.core.teacher import Teacher, as_teachers
from zoo import store


def init_args_from(frame_locals: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from ``locals()`` taken first thing in ``__init__``, for ``module_spec``."""
    return {k: v for k, v in frame_locals.items() if k not in ("self", "__class__")}


def module_spec(module: nn.Module) -> dict[str, Any]:
    """The ``{class_path, init_args}`` that rebuilds ``module``; our networks record ``init_args``."""
    init_args = getattr(module, "init_args", None)
    if init_args is None:
        raise TypeError(
            f"{type(module).__qualname__} does not record its constructor arguments; give it an "
            "`init_args` dict (see modules/graph_mlp.py) or override export_student()"
        )
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(init_args)}


class DistillModule(L.LightningModule):
    """Template for a distillation method (DESIGN.md, "The core contracts"; TorchGeo's BaseTask).

    The student and teacher are ``nn.Module``s injected by the CLI. ``init_weights`` (``zoo:NAME``
    or a safetensors path) initialises the student, or builds it from the stored spec when
    ``student`` is None, which is how fine-tuning recipes start from a zoo entry. A method fills
    in ``distill_loss(batch) -> {term: tensor}`` and ``evaluate(batch) -> {metric: tensor}``; the
    template weights and sums the terms (``loss_weights``, default 1), logs each as
    ``train/<term>``, and optimises the student and ``self.projectors`` only. The teacher is
    frozen, stays in eval, is left out of checkpoints (rebuilt from its source on load) and out of
    ``export_student()``. With ``teacher=None`` the same module trains the no-teacher baseline.
    """

    modules_in_init: tuple[str, ...] = ()  # further nn.Module arguments a subclass takes, kept out of hparams

    def __init__(
        self,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        ignore = ["student", "teacher", "optimizer", "lr_scheduler", *self.modules_in_init]
        self.save_hyperparameters(ignore=ignore)
        if student is None:
            if init_weights is None:
                raise ValueError("give a student network, init_weights (zoo:NAME or a .safetensors path), or both")
            student = store.load(init_weights).train()
        elif init_weights is not None:
            store.load_into(student, store.resolve(init_weights))
        self.student = student
        self.teacher = as_teachers(teacher)
        self.projectors = nn.ModuleDict()
        self.loss_weights = dict(loss_weights or {})
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler

    # ----- hooks a method fills in -------------------------------------------------------------
    def distill_loss(self, batch: Any) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement distill_loss(batch)")

    def evaluate(self, batch: Any, stage: str) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(batch, stage)")

    def batch_size(self, batch: Any) -> int:
        """Examples in ``batch``, for logging; full-batch methods override it."""
        return len(batch[0]) if isinstance(batch, (list, tuple)) else 1

    def export_student(self) -> tuple[nn.Module, dict[str, Any]]:
        """The deployable network and the constructor spec that rebuilds it."""
        return self.student, module_spec(self.student)

    # ----- the template ------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.student(*args, **kwargs)

    def weight_of(self, term: str) -> float:
        return float(self.loss_weights.get(term, 1.0))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms = self.distill_loss(batch)
        loss = sum(self.weight_of(name) * value for name, value in terms.items())
        size = self.batch_size(batch)
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()}, batch_size=size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> None:
        metrics = self.evaluate(batch, stage)
        # sync_dist: under DDP each rank holds a shard of the evaluation set (a no-op on one device)
        logged = {f"{stage}/{k}": v for k, v in metrics.items()}
        self.log_dict(logged, prog_bar=True, batch_size=self.batch_size(batch), sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def trainable_modules(self) -> tuple[nn.Module, ...]:
        """What the optimiser trains: the student and the projectors (a method that trains more, such as a
        teacher learnt jointly with the student, adds it here)."""
        return self.student, self.projectors

    def configure_optimizers(self) -> Any:
        params = [p for m in self.trainable_modules() for p in m.parameters() if p.requires_grad]
        optimizer = self.optimizer(params)
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler(optimizer)}

    def teachers(self) -> dict[str, Teacher]:
        if self.teacher is None:
            return {}
        return dict(self.teacher.items()) if isinstance(self.teacher, nn.ModuleDict) else {"teacher": self.teacher}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The teacher is rebuilt from its source; keeping its weights would bloat every checkpoint.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]
        try:
            spec = self.export_student()[1]
        except TypeError:
            spec = None
        checkpoint["distillzoo"] = {
            "student_spec": spec,
            "teachers": {name: dict(t.manifest) for name, t in self.teachers().items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Put the live teacher's tensors back so that strict loading checks the student exactly.
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
