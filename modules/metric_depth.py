"""MetricAnything (arXiv 2601.22054): a sparse-prompt metric-depth teacher distilled into a prompt-free student.

**The teacher and all training code are unreleased** (the official repository, metric-anything/metric-anything,
ships the students' inference code only), so everything here except the student's output convention is our
reconstruction (``shared/methods/vision.md`` section 5; the card repeats it):

- Released, followed exactly: the student predicts *canonical* inverse depth ``c`` from the image alone and the
  metric inverse depth is ``c * W / f_px`` (W the input width, f_px its focal length in pixels); the prediction is
  resized bilinearly to the input size. A student without ``f_px`` raises; an explicitly passed
  ``default_f_px`` is used and logged, never a silent ``f_px = W``.
- Ours: the prompt is a uniform random share ``rho`` of the valid source pixels (``rho`` log-uniform per image
  over ``prompt_density``, around 1%) given as two channels, the inverse depth at the kept pixels divided by the
  prompt's median inverse depth, and the mask. The teacher predicts inverse depth relative to that median and
  multiplies it back, so the prompt carries the metric scale and the network only the relative structure; it
  takes no intrinsics. Its loss on the valid source pixels: SILog on depth + L1 on inverse depth.
- Ours: the student learns from the teacher's dense predictions, the teacher prompted from each image's own
  noisy source (``label_density``); SILog on depth (the team's choice) or Depth Pro's trimmed MAE on inverse
  depth (the 20% largest errors of each image dropped) as the ablation. ``teacher=None`` trains the same student
  on the noisy source directly, masked to its measurements. ``focal_conditioning=False`` is the student that
  predicts metric inverse depth with no ``W / f_px`` (the released convention's ablation).
- Networks: small U-Nets (conv + BN + ReLU, ``widths`` per level) trained from scratch, since the CPU cannot
  train the released DINOv3 ViT-H+ Depth-Pro head; softplus keeps inverse depth positive (the released head's
  ReLU can die at zero when trained from scratch).

Metrics follow the official evaluation: pooled over every valid pixel of the whole set (not per-image means),
no scale or shift alignment: AbsRel, delta1 (max(p/g, g/p) < 1.25), RMSE, SILog = sqrt(mean(d^2) -
0.5 mean(d)^2) with d = log p - log g, on generated test images (pooled and per source type) and on real frames
(per dataset and pooled, ``real_*``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection, SumMetric

from modules.core import DistillModule
from modules.nets.images import NormalisedInput
from zoo.specs import exportable

METRICS = ("absrel", "delta1", "rmse", "silog")
SOURCE_KINDS = ("lidar", "tof", "mvs", "rendered")  # datamodules.synthetic.scenes3d.SOURCES, in its order
REAL_DATASETS = ("middlebury", "nyu", "kitti")
MIN_INV, MAX_INV = 1e-3, 1e3  # the released code clamps inverse depth to this range before inverting


# ----- networks --------------------------------------------------------------------------------------------------
def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(True),
    )


class UNet(nn.Module):
    """A plain U-Net (Ronneberger et al. 2015): ``len(widths)`` levels of two 3x3 conv + BN + ReLU, max-pool down,
    bilinear up with skip concatenation, a 1x1 head to one channel. Any input size (padded to a multiple of
    ``2 ** (levels - 1)`` and cropped back)."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs at least two positive levels, got {widths}")
        self.down = nn.ModuleList([_block(c, w) for c, w in zip([in_channels, *widths[:-1]], widths)])
        self.up = nn.ModuleList(
            [_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(len(widths) - 1))]
        )
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(
                torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)
            )
        return self.head(x)[..., :h, :w]


def inverse_to_depth(inverse: Tensor) -> Tensor:
    """Metric depth from metric inverse depth, clamped as the released code does."""
    return 1.0 / inverse.clamp(MIN_INV, MAX_INV)


@exportable
class PromptDepthNet(NormalisedInput):
    """The prompt-conditioned teacher: ``net(images, prompt) -> metric depth [B, H, W]``, ``images`` in [0, 1]
    and ``prompt`` [B, 2, H, W] (metric inverse depth at the kept pixels, 0 elsewhere; the 0/1 mask). The inverse
    depth is predicted relative to the prompt's median (the input prompt is divided by it, the output multiplied
    back), so the sparse prompt carries the metric scale. No intrinsics: the prompt replaces them."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        self.unet = UNet(5, widths)

    def forward(self, images: Tensor, prompt: Tensor) -> Tensor:
        inverse, mask = prompt[:, :1], prompt[:, 1:2]
        if not bool((mask.flatten(1).sum(1) > 0).all()):
            raise ValueError("PromptDepthNet: every image needs at least one prompt pixel (a mask with a 1)")
        scale = masked_median(inverse, mask > 0).view(-1, 1, 1, 1)
        x = torch.cat([self.normalize(images), inverse / scale * mask, mask], dim=1)
        relative = torch.exp(self.unet(x).clamp(-10, 10))
        return inverse_to_depth(relative * scale)[:, 0]


@exportable
class MetricDepthStudent(NormalisedInput):
    """The prompt-free student: ``net(images, f_px) -> metric depth [B, H, W]`` for images in [0, 1] and their
    focal lengths in pixels (a number or [B]); the network predicts canonical inverse depth ``c`` and the metric
    inverse depth is ``c * W / f_px`` (MetricAnything's released convention, W the input width). Images are
    resized to ``net_size`` (if given) and the prediction back to the input size. ``focal_conditioning=False``
    predicts metric inverse depth directly and ignores ``f_px`` (the ablation). Without ``f_px`` it raises, unless
    ``default_f_px`` is passed, which is used and logged."""

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        net_size: Sequence[int] | None = None,
        focal_conditioning: bool = True,
    ) -> None:
        super().__init__()
        self.unet = UNet(3, widths)
        self.net_size = None if net_size is None else (int(net_size[0]), int(net_size[1]))
        self.focal_conditioning = focal_conditioning

    def canonical_inverse(self, images: Tensor) -> Tensor:
        """[B, 1, H, W] canonical inverse depth at the input's size."""
        x = self.normalize(images)
        if self.net_size is not None and tuple(x.shape[-2:]) != self.net_size:
            x = F.interpolate(x, size=self.net_size, mode="bilinear", align_corners=False, antialias=True)
        out = F.softplus(self.unet(x))
        if tuple(out.shape[-2:]) != tuple(images.shape[-2:]):
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward(self, images: Tensor, f_px: Tensor | float | None = None, default_f_px: float | None = None) -> Tensor:
        c = self.canonical_inverse(images)
        if not self.focal_conditioning:
            return inverse_to_depth(c)[:, 0]
        if f_px is None:
            if default_f_px is None:
                raise ValueError(
                    "MetricDepthStudent needs the focal length in pixels (f_px) to give metric depth; pass it, or "
                    "pass default_f_px explicitly (never assumed to be the image width)"
                )
            rank_zero_info(f"MetricDepthStudent: no f_px given, using default_f_px={default_f_px}")
            f_px = default_f_px
        f = torch.as_tensor(f_px, dtype=c.dtype, device=c.device).reshape(-1, 1, 1, 1)
        if not bool(torch.isfinite(f).all()) or bool((f <= 0).any()):
            raise ValueError(f"MetricDepthStudent: f_px must be positive and finite, got {f.flatten().tolist()}")
        return inverse_to_depth(c * images.shape[-1] / f)[:, 0]


# ----- prompts, losses, metrics ----------------------------------------------------------------------------------
def masked_median(values: Tensor, mask: Tensor) -> Tensor:
    """Per-image median of ``values`` [B, 1, H, W] over ``mask`` (each image needs one pixel), [B]."""
    return torch.stack([v[m].median() for v, m in zip(values, mask)])


def sample_prompt(depth: Tensor, density: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """The sparse metric prompt of each image: a uniform random share ``density`` (per image, or one value) of its
    valid pixels (``depth > 0``), at least one, as [B, 2, H, W] = (metric inverse depth at the kept pixels, their
    0/1 mask). An image without valid pixels gets an empty prompt (callers drop it).

    Raises:
        ValueError: when a density would keep no pixel even of a fully measured image (naming both).
    """
    valid = depth > 0
    b, h, w = depth.shape
    density = torch.as_tensor(density, dtype=torch.float32).expand(b)
    if float(density.min()) * h * w < 1:
        raise ValueError(
            f"a prompt density of {float(density.min()):.4g} keeps no pixel of a {h}x{w} image; raise the density"
        )
    scores = torch.rand(depth.shape, generator=generator, device="cpu").to(depth.device)
    mask = torch.zeros_like(valid)
    for i in range(b):
        n = int(valid[i].sum())
        if n:
            k = max(1, round(float(density[i]) * n))
            s = scores[i].masked_fill(~valid[i], -1.0).flatten()
            mask[i].view(-1)[s.topk(k).indices] = True
    inverse = torch.where(mask, 1.0 / depth.clamp(min=1e-6), torch.zeros_like(depth))
    return torch.stack([inverse, mask.float()], dim=1)


def silog_loss(pred: Tensor, target: Tensor, valid: Tensor, variance_focus: float = 0.85) -> Tensor:
    """sqrt(mean(d^2) - lambda mean(d)^2), d = log pred - log target over the valid pixels (Eigen et al. 2014;
    lambda 0.85 as BTS and AdaBins train with)."""
    d = torch.log(pred[valid]) - torch.log(target[valid])
    if d.numel() == 0:
        return pred.sum() * 0
    return torch.sqrt((d.pow(2).mean() - variance_focus * d.mean().pow(2)).clamp(min=1e-8))


def trimmed_mae_inverse(pred: Tensor, target: Tensor, valid: Tensor, trim: float = 0.2) -> Tensor:
    """Depth Pro's loss for noisy data: per image, the mean absolute error of inverse depth over the valid
    pixels with the ``trim`` share of largest errors dropped; the mean over images that have valid pixels."""
    losses = []
    for p, t, v in zip(pred, target, valid):
        err = (1 / p[v] - 1 / t[v]).abs()
        if err.numel():
            keep = max(1, math.ceil((1 - trim) * err.numel()))
            losses.append(err.sort().values[:keep].mean())
    return torch.stack(losses).mean() if losses else pred.sum() * 0


class PooledDepthMetric(Metric):
    """One of AbsRel, delta1, RMSE, SILog pooled over every valid pixel seen (``target > 0``), no alignment."""

    full_state_update = False

    def __init__(self, kind: Literal["absrel", "delta1", "rmse", "silog"]) -> None:
        super().__init__()
        if kind not in METRICS:
            raise ValueError(f"kind must be one of {METRICS}, got {kind!r}")
        self.kind = kind
        for name in ("n", "a", "b"):
            self.add_state(name, torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = target > 0
        p, g = pred[valid].double(), target[valid].double()
        self.n += valid.sum()
        if self.kind == "absrel":
            self.a += ((p - g).abs() / g).sum()
        elif self.kind == "delta1":
            self.a += (torch.maximum(p / g, g / p) < 1.25).sum()
        elif self.kind == "rmse":
            self.a += (p - g).pow(2).sum()
        else:
            d = torch.log(p) - torch.log(g)
            self.a += d.pow(2).sum()
            self.b += d.sum()

    def compute(self) -> Tensor:
        n = self.n.clamp(min=1)
        if self.kind == "rmse":
            return (self.a / n).sqrt().float()
        if self.kind == "silog":
            return (self.a / n - 0.5 * (self.b / n).pow(2)).clamp(min=0).sqrt().float()
        return (self.a / n).float()


def depth_metrics() -> MetricCollection:
    """The pooled metrics of every group: generated test (``absrel``...), per source type (``absrel_lidar``...),
    real frames pooled (``real_absrel``...) and per dataset (``middlebury_absrel``...)."""
    groups = ["", *(f"_{k}" for k in SOURCE_KINDS)]
    metrics = {f"{m}{g}": PooledDepthMetric(m) for m in METRICS for g in groups}
    metrics |= {f"real_{m}": PooledDepthMetric(m) for m in METRICS}
    metrics |= {f"{d}_{m}": PooledDepthMetric(m) for d in REAL_DATASETS for m in METRICS}
    return MetricCollection(metrics)


def _update_groups(
    metrics: MetricCollection, pred: Tensor, batch: dict[str, Any], keep: Tensor | None = None, prefix: str = ""
) -> None:
    """Feed each image of the batch (those ``keep`` marks) to its groups' metrics: a generated image to the pooled
    ones and its source type's, a real frame to the pooled real ones and its dataset's (when the collection has
    that group). ``prefix`` names a variant's metrics (``d0p1pct_absrel``, ``real_d0p1pct_absrel``)."""
    for i, dataset in enumerate(batch["dataset"]):
        if keep is not None and not bool(keep[i]):
            continue
        if dataset == "generated":
            keys = [(f"{prefix}{m}", f"{prefix}{m}_{SOURCE_KINDS[int(batch['kind'][i])]}") for m in METRICS]
        else:
            keys = [(f"real_{prefix}{m}", f"{dataset}_{prefix}{m}") for m in METRICS]
        for pair in keys:
            for key in pair:
                if key in metrics:
                    metrics[key].update(pred[i], batch["depth"][i])


class _DepthModule(DistillModule):
    """Shared evaluation of the depth modules: ``predict_depth(batch)`` -> ([B, H, W] metric depth, [B] which
    images have a prediction)."""

    def predict_depth(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def configure_metrics(self) -> MetricCollection:
        """The pooled depth metrics and ``unprompted``, the images that got no prediction (no source to prompt)."""
        return MetricCollection({**depth_metrics(), "unprompted": SumMetric()})

    def evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, Tensor]:
        with torch.no_grad():
            pred, keep = self.predict_depth(batch)
        _update_groups(self.stage_metrics[stage], pred, batch, keep)
        self.stage_metrics[stage]["unprompted"].update((~keep).sum().float())
        return {}

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])


def density_tag(density: float) -> str:
    """The metric prefix of a test prompt density: 0.001 -> ``d0p1pct`` (percent, the point written ``p``: a
    metric's name keys a torchmetrics ``MetricCollection``, a ``ModuleDict``, which refuses ``.``)."""
    return f"d{100 * density:g}pct".replace(".", "p")


class PromptDepthTeacher(_DepthModule):
    """Trains :class:`PromptDepthNet` (the ``student`` argument: the network being trained and exported) on each
    image's noisy source: the prompt is ``prompt_density`` (a log-uniform range) of the source's pixels, the loss
    SILog + L1 of inverse depth over all of the source's pixels (``loss_weights`` ``silog``, ``l1_inverse``).
    Evaluation prompts ``eval_density`` of the image's own source (``eval_prompt="source"``) or of the clean
    ground truth (``"clean"``: depth completion, the upper bound); real frames are prompted from their ground truth.

    The test also scores the same network under other prompts, pooled over the generated and the real images:
    each of ``test_densities`` of the own source (``d0p1pct_absrel``, ``real_d0p1pct_absrel``, ...) and, with
    ``test_clean``, ``eval_density`` of the clean depth (``clean_absrel``...). A density sweep or the completion
    bound then needs no fit of its own (the prompt changes only at test), and its points are paired: one model,
    the same images, the same seed of prompt pixels."""

    def __init__(
        self,
        student: nn.Module | None = None,
        prompt_density: tuple[float, float] = (0.0025, 0.04),
        eval_density: float = 0.01,
        eval_prompt: Literal["source", "clean"] = "source",
        test_densities: list[float] | None = None,
        test_clean: bool = False,
        init_weights: str | None = None,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        lo, hi = prompt_density
        sweep = [float(d) for d in test_densities or []]
        if not 0 < lo <= hi <= 1 or not all(0 < d <= 1 for d in [eval_density, *sweep]):
            raise ValueError(
                f"prompt densities must lie in (0, 1] with low <= high, got {prompt_density}, {eval_density}"
                + (f", test_densities {sweep}" if sweep else "")
            )
        if eval_prompt not in ("source", "clean"):
            raise ValueError(f"eval_prompt must be 'source' or 'clean', got {eval_prompt!r}")
        super().__init__(student=student, init_weights=init_weights, loss_weights=loss_weights, optimizer=optimizer,
                         lr_scheduler=lr_scheduler)  # fmt: skip
        self.prompt_density, self.eval_density, self.eval_prompt = (float(lo), float(hi)), eval_density, eval_prompt
        self.test_variants = {f"{density_tag(d)}_": ("source", d) for d in sweep}
        if test_clean:
            self.test_variants["clean_"] = ("clean", eval_density)

    def configure_metrics(self) -> MetricCollection:
        """The pooled depth metrics, plus the pooled generated and real ones of each test prompt variant."""
        variants = {
            f"{g}{v}{m}": PooledDepthMetric(m) for v in self.test_variants for g in ("", "real_") for m in METRICS
        }
        return MetricCollection({**super().configure_metrics(), **variants})

    def evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, Tensor]:
        out = super().evaluate(batch, stage)
        if stage == "test":
            for prefix, (prompt, density) in self.test_variants.items():
                with torch.no_grad():
                    pred, keep = self.predict_depth(batch, density, prompt)
                _update_groups(self.stage_metrics[stage], pred, batch, keep, prefix)
        return out

    def draw_density(self, n: int) -> Tensor:
        lo, hi = (math.log(v) for v in self.prompt_density)
        return torch.exp(lo + (hi - lo) * torch.rand(n))

    def distill_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        source = batch["source"]
        usable = (source > 0).flatten(1).any(1)
        if not bool(usable.any()):
            zero = self.student.unet.head.weight.sum() * 0
            return {"silog": zero, "l1_inverse": zero}
        images, source = batch["image"][usable], source[usable]
        pred = self.student(images, sample_prompt(source, self.draw_density(len(source))))
        valid = source > 0
        return {
            "silog": silog_loss(pred, source, valid),
            "l1_inverse": (1 / pred[valid] - 1 / source[valid]).abs().mean(),
        }

    def predict_depth(
        self, batch: dict[str, Any], density: float | None = None, prompt: str | None = None
    ) -> tuple[Tensor, Tensor]:
        """The teacher's depth of each image that can be prompted, at ``density`` (default ``eval_density``): from
        its own noisy source (or its clean depth, ``prompt="clean"``; default ``eval_prompt``), real frames from
        their ground truth. An image whose source measured nothing (a ToF frame entirely beyond 5 m) has no
        prediction; ``<stage>/unprompted`` counts them."""
        density = self.eval_density if density is None else density
        generated = [d == "generated" for d in batch["dataset"]]
        prompt_from = batch["source"] if (prompt or self.eval_prompt) == "source" else batch["depth"]
        prompt_from = torch.stack([p if g else d for p, g, d in zip(prompt_from, generated, batch["depth"])])
        keep = (prompt_from > 0).flatten(1).any(1)
        pred = torch.zeros_like(batch["depth"])
        if bool(keep.any()):
            generator = torch.Generator().manual_seed(int(batch["index"][0]))  # the same prompt pixels in every eval
            pred[keep] = self.student(batch["image"][keep], sample_prompt(prompt_from[keep], density, generator))
        return pred, keep


class MetricDepthDistill(_DepthModule):
    """Trains the prompt-free :class:`MetricDepthStudent` on the frozen teacher's dense depth, the teacher prompted
    with ``label_density`` of each image's own noisy source (``teacher``: a :class:`~modules.core.Teacher` of a
    :class:`PromptDepthNet`); with ``teacher=None`` on the noisy source itself, masked to its measurements.
    ``loss``: ``silog`` (on depth) or ``trimmed_mae`` (Depth Pro's, on inverse depth). Evaluation gives the
    student each image's focal length."""

    def __init__(
        self,
        student: nn.Module | None = None,
        teacher: nn.Module | None = None,
        loss: Literal["silog", "trimmed_mae"] = "silog",
        label_density: float = 0.01,
        init_weights: str | None = None,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if loss not in ("silog", "trimmed_mae"):
            raise ValueError(f"loss must be 'silog' or 'trimmed_mae', got {loss!r}")
        if not 0 < label_density <= 1:
            raise ValueError(f"label_density must lie in (0, 1], got {label_density}")
        super().__init__(student=student, teacher=teacher, init_weights=init_weights, loss_weights=loss_weights,
                         optimizer=optimizer, lr_scheduler=lr_scheduler)  # fmt: skip
        self.loss, self.label_density = loss, label_density

    def targets(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(target depth, valid mask): the teacher's dense prediction where the image has a source, else nothing;
        without a teacher, the source's measurements."""
        source = batch["source"]
        if self.teacher is None:
            return source, source > 0
        usable = (source > 0).flatten(1).any(1)
        target = torch.zeros_like(source)
        if bool(usable.any()):
            with torch.no_grad():
                prompt = sample_prompt(source[usable], self.label_density)
                target[usable] = self.teacher.network(batch["image"][usable], prompt)
        valid = usable.view(-1, 1, 1).expand_as(target) & torch.isfinite(target) & (target > 0)
        return target, valid

    def distill_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        target, valid = self.targets(batch)
        pred = self.student(batch["image"], batch["f_px"])
        if self.loss == "silog":
            return {"silog": silog_loss(pred, target.clamp(min=1e-6), valid)}
        return {"trimmed_mae": trimmed_mae_inverse(pred, target.clamp(min=1e-6), valid)}

    def predict_depth(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        pred = self.student(batch["image"], batch["f_px"])
        return pred, torch.ones(len(pred), dtype=torch.bool, device=pred.device)
