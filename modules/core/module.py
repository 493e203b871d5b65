"""DistillModule: the LightningModule template every distillation method fills in."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MetricCollection

from modules.core.teacher import Teacher, as_teachers
from zoo import store
from zoo.specs import module_spec

STAGES = ("val", "test")


class DistillModule(L.LightningModule):
    """Template for a distillation method (DESIGN.md, "The core contracts"; TorchGeo's BaseTask).

    The student and teacher are ``nn.Module``s injected by the CLI. ``init_weights`` (``zoo:NAME``
    or a safetensors path) initialises the student, or builds it from the stored spec when
    ``student`` is None, which is how fine-tuning recipes start from a zoo entry.

    A method fills in hooks and never writes a training loop:

    - ``distill_loss(batch) -> {term: tensor}``: the loss terms of the one optimisation step. The
      template weights and sums them (``loss_weights``, default 1), logs each as ``train/<term>`` and
      optimises ``trainable_modules()`` (the student and ``self.projectors``).
    - Or, for several optimisation steps per batch (a discriminator then a generator, a jointly
      trained teacher then the student, two collaborating students), ``steps = ("d", "g")`` on the
      class and ``step_loss(step, batch, shared) -> {term: tensor}`` plus ``step_modules(step)``. The
      template switches to manual optimisation with one optimiser per step (``optimizer`` is one
      callable used for every step, or a mapping step -> callable), runs the steps in order on each
      batch (``shared`` starts as ``shared_forward(batch)`` and carries tensors from one step to the
      next; an empty dict of terms skips the step), logs ``train/<step>/<term>``, and steps every
      scheduler once per epoch.
    - ``evaluate(batch, stage) -> {metric: value}`` for validation and test; values are batch means,
      or torchmetrics objects for epoch-level metrics. ``configure_metrics()`` may return a
      ``MetricCollection``, cloned per stage as ``self.stage_metrics[stage]``, which ``evaluate``
      updates and the template computes, logs (``<stage>/<name>``) and resets at each epoch's end.

    A loss that is not finite stops the fit with the terms that were not; a step whose terms are all
    constants (a loss clipped on an outlier batch, as GloReDi's official loss scaler does) is skipped.
    The teacher is frozen, stays in eval, is left out of checkpoints (rebuilt from its source on load)
    and out of ``export_student()``. With ``teacher=None`` the same module trains the no-teacher baseline.
    """

    modules_in_init: tuple[str, ...] = ()  # further nn.Module arguments a subclass takes, kept out of hparams
    steps: tuple[str, ...] = ("student",)  # named optimisation steps; more than one means manual optimisation

    def __init__(
        self,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable | Mapping[str, OptimizerCallable] = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | Mapping[str, LRSchedulerCallable] | None = None,
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
        self.optimizer = self._per_step(optimizer, "optimizer")
        self.lr_scheduler = None if lr_scheduler is None else self._per_step(lr_scheduler, "lr_scheduler")
        self.automatic_optimization = len(self.steps) == 1
        self.stage_metrics = nn.ModuleDict()
        self._samples: dict[str, dict[tuple[int, ...], float]] = {}  # record_samples(), for sample_scores()

    def _per_step(self, given: Any, what: str) -> dict[str, Callable]:
        """One callable for every step, or a mapping with exactly one callable per named step."""
        if not isinstance(given, Mapping):
            return dict.fromkeys(self.steps, given)
        if set(given) != set(self.steps):
            missing, unknown = sorted(set(self.steps) - set(given)), sorted(set(given) - set(self.steps))
            raise ValueError(
                f"{type(self).__name__} has optimisation steps {list(self.steps)}; {what} names "
                f"{sorted(given)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {unknown})" if unknown else "")
            )
        return dict(given)

    # ----- hooks a method fills in -------------------------------------------------------------
    def distill_loss(self, batch: Any) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement distill_loss(batch)")

    def step_loss(self, step: str, batch: Any, shared: dict[str, Any]) -> dict[str, Tensor]:
        """The terms of optimisation step ``step`` (only for methods with several ``steps``)."""
        if len(self.steps) == 1:
            return self.distill_loss(batch)
        raise NotImplementedError(f"{type(self).__name__} has steps {list(self.steps)} and must implement step_loss")

    def shared_forward(self, batch: Any) -> dict[str, Any]:
        """Tensors several steps use, computed once per batch before any step (with every parameter's
        gradient on): a GAN's reconstruction, which the discriminator sees detached and the generator not."""
        return {}

    def step_modules(self, step: str) -> tuple[nn.Module, ...]:
        """What step ``step``'s optimiser trains (only for methods with several ``steps``)."""
        if len(self.steps) == 1:
            return self.trainable_modules()
        raise NotImplementedError(f"{type(self).__name__} has steps {list(self.steps)} and must implement step_modules")

    def evaluate(self, batch: Any, stage: str) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(batch, stage)")

    def configure_metrics(self) -> MetricCollection | None:
        """Epoch-level metrics (torchmetrics), cloned per stage into ``self.stage_metrics``."""
        return None

    def combine_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Further epoch-level metrics computed from ``configure_metrics``' values (the mean of two students'
        mIoU, which selects their shared checkpoint), logged beside them."""
        return {}

    def record_samples(self, name: str, keys: Tensor, values: Tensor) -> None:
        """Keep per-sample test scores (``values`` [B]) under metric ``name``, keyed by ``keys`` ([B] sample
        indices, or [B, K] rows): ``sample_scores()`` returns them after the test, so that evidence can pair
        two arms sample by sample. Each test epoch starts them afresh; one process's samples (no DDP gather)."""
        kept = self._samples.setdefault(name, {})
        for key, value in zip(keys.reshape(len(values), -1).tolist(), values.detach().float().cpu().tolist()):
            kept[tuple(key)] = value

    def sample_scores(self) -> dict[str, list[float]]:
        """Metric -> the last test's per-sample scores (``record_samples``) in sample-key order."""
        return {name: [kept[k] for k in sorted(kept)] for name, kept in self._samples.items()}

    def batch_size(self, batch: Any) -> int:
        """Examples in ``batch``, for logging; full-batch methods override it."""
        return len(batch[0]) if isinstance(batch, (list, tuple)) else 1

    def export_student(self) -> tuple[nn.Module, dict[str, Any]]:
        """The deployable network and the constructor spec that rebuilds it."""
        return self.student, module_spec(self.student)

    def export_parts(self) -> dict[str, tuple[nn.Module, dict[str, Any]]]:
        """For a module that trains several deployable students at once (two collaborating students):
        name -> (network, spec), each network's tensors stored under ``student.<name>.``; ``zoo export --part
        NAME`` publishes one. Empty (the default) means one student, ``export_student()``."""
        return {}

    def trainable_modules(self) -> tuple[nn.Module, ...]:
        """What the optimiser trains: the student and the projectors (a method that trains more, such as a
        teacher learnt jointly with the student, adds it here)."""
        return self.student, self.projectors

    # ----- the template ------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.student(*args, **kwargs)

    def weight_of(self, term: str, step: str | None = None) -> float:
        """``loss_weights["<step>/<term>"]``, else ``loss_weights[term]``, else 1."""
        if step is not None and f"{step}/{term}" in self.loss_weights:
            return float(self.loss_weights[f"{step}/{term}"])
        return float(self.loss_weights.get(term, 1.0))

    @property
    def attached_datamodule(self) -> Any:
        """The trainer's datamodule, or None when the module is not being fitted or tested with one."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def require_data_agrees(self, *names: str) -> None:
        """Stop when the attached datamodule's ``names`` (``num_classes``, ``ignore_index``) differ from this
        module's attributes of the same names, naming the flag that fixes it (a datamodule without one passes)."""
        datamodule = self.attached_datamodule
        for name in names:
            mine = getattr(self, name)
            theirs = getattr(datamodule, name, mine)
            if theirs != mine:
                raise ValueError(
                    f"{type(self).__name__}: the data has {name}={theirs}, the model {mine}; give the model the "
                    f"same (--model.init_args.{name}={theirs})"
                )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            teachers = [t for t in self.modules() if isinstance(getattr(t, "manifest", None), dict)]
            if any(t.manifest.get("source") == "in-memory" for t in teachers):
                rank_zero_warn(
                    f"{type(self).__name__}: a teacher has no weights (a network built in memory, untrained unless "
                    "you trained it): fine for a smoke test, meaningless as distillation; give it weights "
                    "(zoo:NAME or a .safetensors path)"
                )
            try:
                self.export_parts() or self.export_student()
            except TypeError as err:
                raise TypeError(
                    f"{type(self).__name__}: fit does not start, since the student could not be exported to the "
                    f"zoo afterwards: {err}. Wrap a timm model in modules.nets.vit.TimmViT."
                ) from err
        collection = self.configure_metrics()
        if collection is not None and not len(self.stage_metrics):
            for s in STAGES:
                self.stage_metrics[s] = copy.deepcopy(collection)
        for s, metrics in self.stage_metrics.items():  # again after every copy: torchmetrics drops the guard
            for name, metric in metrics.items(keep_base=True, copy_state=False):
                if not isinstance(metric.update, FiniteMetricInputs):
                    metric.update = FiniteMetricInputs(metric.update, f"{type(self).__name__}: {s} metric {name!r}")

    def _weighted_sum(self, terms: dict[str, Tensor], step: str | None) -> Tensor:
        loss = sum(self.weight_of(name, step) * value for name, value in terms.items())
        if not torch.isfinite(loss):
            bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
            where = f" in step {step!r}" if step else ""
            raise FloatingPointError(
                f"{type(self).__name__}: the training loss{where} is not finite at epoch {self.current_epoch}, "
                f"step {self.global_step}; non-finite terms: {bad or 'none (their weighted sum overflowed)'}"
            )
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        size = self.batch_size(batch)
        if self.automatic_optimization:
            terms = self.distill_loss(batch)
            loss = self._weighted_sum(terms, None)
            self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()}, batch_size=size)
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=size)
            return loss if loss.requires_grad else None  # every term clipped to a constant: no step
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        shared = self.shared_forward(batch)
        for step, opt in zip(self.steps, optimizers):
            self.toggle_optimizer(opt)
            terms = self.step_loss(step, batch, shared)
            if terms:
                loss = self._weighted_sum(terms, step)
                if loss.requires_grad:  # else every term was clipped to a constant (an outlier batch): no step
                    opt.zero_grad()
                    self.manual_backward(loss)
                    opt.step()
                logged = {f"train/{step}/{name}": value.detach() for name, value in terms.items()}
                self.log_dict(logged, batch_size=size)
                self.log(f"train/{step}/loss", loss.detach(), prog_bar=True, batch_size=size)
            self.untoggle_optimizer(opt)
        return None

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:
            schedulers = self.lr_schedulers()
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
                scheduler.step()

    def _eval_step(self, batch: Any, stage: str, batch_idx: int | None = None) -> None:
        metrics = self.evaluate(batch, stage)
        values = {k: v for k, v in metrics.items() if isinstance(v, Tensor) and v.is_floating_point()}
        if values and not bool(torch.stack([torch.isfinite(v).all() for v in values.values()]).all()):  # one sync
            bad = {
                k: v[~torch.isfinite(v)].flatten()[0].item() for k, v in values.items() if not torch.isfinite(v).all()
            }
            name, value = next(iter(bad.items()))
            raise FloatingPointError(
                f"{type(self).__name__}: {stage} metric {name!r} is {value} at batch {batch_idx}, epoch "
                f"{self.current_epoch}: the model output was non-finite (weights that diverged, or an input "
                f"no datamodule check caught); non-finite metrics: {sorted(bad)}"
            )
        # sync_dist: under DDP each rank holds a shard of the evaluation set (a no-op on one device)
        logged = {f"{stage}/{k}": v for k, v in metrics.items()}
        self.log_dict(logged, prog_bar=True, batch_size=self.batch_size(batch), sync_dist=True)

    def _log_stage_metrics(self, stage: str) -> None:
        if stage in self.stage_metrics:
            metrics = self.stage_metrics[stage]  # torchmetrics reduces over ranks in compute()
            # a metric no batch updated is left out (a group the data lacks, e.g. real frames not attached)
            values: dict[str, Tensor] = {}
            for name, metric in metrics.items(keep_base=True, copy_state=False):
                if metric.update_called:
                    value = metric.compute()
                    values |= value if isinstance(value, dict) else {name: value}  # a dict's keys, as torchmetrics
            values |= self.combine_metrics(values)
            self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()}, prog_bar=True)
            self.stage_metrics[stage].reset()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", batch_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # several test loaders (generated and real frames) feed one set of epoch metrics, told apart by the batch
        self._eval_step(batch, "test", batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_stage_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._samples = {}

    def on_test_epoch_end(self) -> None:
        self._log_stage_metrics("test")

    def configure_optimizers(self) -> Any:
        optimizers, schedulers = [], []
        for step in self.steps:
            params = [p for m in self.step_modules(step) for p in m.parameters() if p.requires_grad]
            if not params:
                raise ValueError(f"{type(self).__name__}: optimisation step {step!r} has no trainable parameters")
            optimizers.append(self.optimizer[step](params))
            if self.lr_scheduler is not None:
                schedulers.append(self.lr_scheduler[step](optimizers[-1]))
        if len(optimizers) == 1:
            return optimizers[0] if not schedulers else {"optimizer": optimizers[0], "lr_scheduler": schedulers[0]}
        return (optimizers, schedulers) if schedulers else optimizers

    def teachers(self) -> dict[str, Teacher]:
        if self.teacher is None:
            return {}
        return dict(self.teacher.items()) if isinstance(self.teacher, nn.ModuleDict) else {"teacher": self.teacher}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The teacher is rebuilt from its source; keeping its weights would bloat every checkpoint.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]
        parts = self.export_parts()
        checkpoint["distillzoo"] = {
            "teachers": {name: dict(t.manifest) for name, t in self.teachers().items()},
        } | (  # fit refused to start when there is no spec
            {"parts": {name: spec for name, (_, spec) in parts.items()}}
            if parts
            else {"student_spec": self.export_student()[1]}
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Put the live teacher's tensors back so that strict loading checks the student exactly.
        if self.teacher is not None:
            checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})


class FiniteMetricInputs:
    """Replaces a torchmetrics metric's ``update``: a floating-point tensor argument with NaN or inf raises
    FloatingPointError naming the metric (``what``) and the argument, before the metric sees it. Metrics take
    ``(preds, target)``, so a non-finite first argument is the model's output; without the check it surfaces
    later as an unrelated error inside the metric (PESQ's C code) or as a NaN score. One ``isfinite`` per
    tensor."""

    ROLES = ("its prediction (the model output)", "its target (the data)")

    def __init__(self, update: Callable[..., None], what: str) -> None:
        self.update, self.what = update, what

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        for i, value in enumerate([*args, *kwargs.values()]):
            if isinstance(value, Tensor) and value.is_floating_point():
                finite = torch.isfinite(value)
                if not bool(finite.all()):
                    role = self.ROLES[i] if i < len(self.ROLES) else f"its argument {i}"
                    origin = "the model output was non-finite" if i == 0 else "the data were non-finite"
                    raise FloatingPointError(
                        f"{self.what} was given {int(finite.numel() - finite.sum())} non-finite values (NaN/inf) "
                        f"of {value.numel()} as {role}: {origin}"
                    )
        self.update(*args, **kwargs)


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """Momentum copy: every parameter of ``target`` becomes ``momentum * target + (1 - momentum) * source``
    (GloReDi's teacher decoder; the momentum encoders of BYOL/MoCo-style methods)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
