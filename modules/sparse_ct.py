"""GloReDi (Li et al., ICCV 2023): global representation distillation for sparse-view CT reconstruction.

Follows longzilicart/GloReDi (``src/Model/{Freq_GloRei,Modify_FFC,Basic_FFC}.py``,
``src/FreqCDL_trainer.py``, ``src/MyModel/BandPass_Module.py``, ``src/utils/SCL_loss.py``). A student
reconstructs from sparse-view FBP images, a teacher from intermediate-view FBP images (2x the views); both
are LaMa-style fast-Fourier-convolution encoders (``FFCEncoder``) whose latent maps are their *global
representations*. The teacher's decoder is an EMA copy of the student's (momentum 0 in the official runs:
a plain copy before every teacher step). Each iteration takes two optimiser steps: the teacher's
reconstruction loss, then the student's reconstruction loss + theta_dis * directional loss (per-position
cosine on the first half of the latent channels) + theta_scl * band-pass contrastive loss (a SupCon loss
on a DCT annulus of the latents, with a memory bank of past student latents as negatives). The last epochs
fine-tune the student with the pixel loss only. Pixel losses are SmoothL1 on attenuation mu, clipped by the
official loss scaler. Metrics are PSNR and SSIM after the official HU window (width 3000, centre 500).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections import deque
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from modules.core import DistillModule, cosine_distance, ema_update_
from zoo.specs import build, exportable, module_spec
from zoo.units import hu_to_mu, hu_window, mu_to_hu


# ----- fast Fourier convolution (LaMa / FFC) --------------------------------------------------------------
class FourierUnit(nn.Module):
    """Global mixing in the frequency domain: rfft2 (ortho) -> 1x1 conv + BN + ReLU on the stacked real and
    imaginary parts -> irfft2. Every output position sees the whole map."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, 2 * out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(2 * out_channels)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        spec = torch.fft.rfft2(x.float(), norm="ortho")  # cuFFT/MKL want fp32 under autocast
        z = torch.stack((spec.real, spec.imag), dim=2).flatten(1, 2)  # [B, 2C, H, W/2+1], re/im per channel
        z = F.relu(self.bn(self.conv(z.to(self.conv.weight.dtype))))
        z = z.view(b, -1, 2, h, w // 2 + 1).float()
        return torch.fft.irfft2(torch.complex(z[:, :, 0], z[:, :, 1]), s=(h, w), norm="ortho").to(x.dtype)


class SpectralTransform(nn.Module):
    """The global-to-global path: 1x1 conv to half the width, x + FourierUnit(x), 1x1 conv back (no LFU)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.fu = FourierUnit(half, half)
        self.expand = nn.Conv2d(half, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(x)
        return self.expand(x + self.fu(x))


class FFC(nn.Module):
    """A convolution over a (local, global) pair of channel groups: local->local, local->global and
    global->local are ordinary (reflect-padded) convolutions, global->global is a ``SpectralTransform``.
    ``ratio_in``/``ratio_out`` are the global shares of the input and output channels."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, ratio_in: float, ratio_out: float,
        stride: int = 1, padding: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        in_g, out_g = int(in_channels * ratio_in), int(out_channels * ratio_out)
        in_l, out_l = in_channels - in_g, out_channels - out_g
        self.out_l, self.out_g = out_l, out_g

        def conv(i: int, o: int) -> nn.Module | None:
            return (
                nn.Conv2d(i, o, kernel_size, stride, padding, bias=False, padding_mode="reflect") if i and o else None
            )

        self.l2l, self.l2g, self.g2l = conv(in_l, out_l), conv(in_l, out_g), conv(in_g, out_l)
        self.g2g = SpectralTransform(in_g, out_g) if in_g and out_g else None
        if stride != 1 and self.g2g is not None:
            raise ValueError("a strided FFC with a global input is not used by GloReDi")

    def forward(self, x: tuple[Tensor | None, Tensor | None]) -> tuple[Tensor | None, Tensor | None]:
        x_l, x_g = x
        out_l = _add(self.l2l(x_l) if self.l2l else None, self.g2l(x_g) if self.g2l else None) if self.out_l else None
        out_g = _add(self.l2g(x_l) if self.l2g else None, self.g2g(x_g) if self.g2g else None) if self.out_g else None
        return out_l, out_g


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


class FFCBlock(nn.Module):
    """FFC -> BatchNorm -> ReLU on each branch (``FFC_BN_ACT``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_in: float, ratio_out: float,
                 stride: int = 1, padding: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_in, ratio_out, stride, padding)
        self.norm_l = nn.BatchNorm2d(self.ffc.out_l) if self.ffc.out_l else None
        self.norm_g = nn.BatchNorm2d(self.ffc.out_g) if self.ffc.out_g else None

    def forward(self, x: tuple[Tensor | None, Tensor | None]) -> tuple[Tensor | None, Tensor | None]:
        x_l, x_g = self.ffc(x)
        return (F.relu(self.norm_l(x_l)) if x_l is not None else None,
                F.relu(self.norm_g(x_g)) if x_g is not None else None)  # fmt: skip


class FFCResBlock(nn.Module):
    """Two 3x3 ``FFCBlock``s with a residual connection on both branches."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        self.conv1 = FFCBlock(channels, channels, 3, ratio, ratio, padding=1)
        self.conv2 = FFCBlock(channels, channels, 3, ratio, ratio, padding=1)

    def forward(self, x: tuple[Tensor | None, Tensor | None]) -> tuple[Tensor | None, Tensor | None]:
        y_l, y_g = self.conv2(self.conv1(x))
        return _add(x[0], y_l), _add(x[1], y_g)


class FFCEncoder(nn.Module):
    """Reflect-pad + 7x7 conv (``ngf``), ``n_downsampling`` stride-2 3x3 convs (the last one splits the
    channels into local and global with share ``ratio``), ``n_blocks`` FFC residual blocks. Returns the
    latent ``concat(local, global)`` [B, ngf * 2^n_downsampling, H / 2^n, W / 2^n]: the global representation
    GloReDi distils."""

    def __init__(self, in_channels: int = 1, ngf: int = 64, n_downsampling: int = 2, n_blocks: int = 7,
                 ratio: float = 0.75) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=False),
                                  nn.BatchNorm2d(ngf), nn.ReLU())  # fmt: skip
        down = []
        for i in range(n_downsampling):
            last = i == n_downsampling - 1
            down.append(FFCBlock(ngf * 2**i, ngf * 2 ** (i + 1), 3, 0.0, ratio if last else 0.0, stride=2, padding=1))
        self.down = nn.ModuleList(down)
        self.blocks = nn.ModuleList(FFCResBlock(ngf * 2**n_downsampling, ratio) for _ in range(n_blocks))

    def forward(self, x: Tensor) -> Tensor:
        z: tuple[Tensor | None, Tensor | None] = (self.stem(x), None)
        for layer in (*self.down, *self.blocks):
            z = layer(z)
        return torch.cat([t for t in z if t is not None], dim=1)


class FFCDecoder(nn.Module):
    """Split the latent into (local, global) (the last ``ratio`` share of channels is global; the official
    ``ToTupleLayer`` slices the first channels, which we read as a bug), ``n_blocks`` FFC residual blocks,
    ``n_upsampling`` transposed convs + BN + ReLU, reflect-pad + 7x7 conv, sigmoid: an image in [0, 1].
    ``residual``: no sigmoid and a zero-initialised last conv, so the output starts as 0, a correction that
    a global skip adds to the input."""

    def __init__(self, out_channels: int = 1, ngf: int = 64, n_upsampling: int = 2, n_blocks: int = 2,
                 ratio: float = 0.75, residual: bool = False) -> None:  # fmt: skip
        super().__init__()
        width = ngf * 2**n_upsampling
        self.global_channels = int(width * ratio)
        self.blocks = nn.ModuleList(FFCResBlock(width, ratio) for _ in range(n_blocks))
        up: list[nn.Module] = []
        for i in range(n_upsampling):
            c = width // 2**i
            up += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(c // 2),
                   nn.ReLU()]  # fmt: skip
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7))
        if residual:
            nn.init.zeros_(self.head[1].weight)
            nn.init.zeros_(self.head[1].bias)
        else:
            self.head.append(nn.Sigmoid())

    def forward(self, latent: Tensor) -> Tensor:
        g = self.global_channels
        z: tuple[Tensor | None, Tensor | None] = (latent[:, :-g], latent[:, -g:]) if g else (latent, None)
        for block in self.blocks:
            z = block(z)
        return self.head(self.up(torch.cat([t for t in z if t is not None], dim=1)))


@exportable
class Reconstructor(nn.Module):
    """Image-domain CT reconstructor: FBP image mu [B, 1, H, W] -> reconstruction mu [B, 1, H, W]; with
    ``units="hu"`` both are in Hounsfield units (what DICOM and DeepLesion readers return) and the network
    converts at its edges (:func:`zoo.units.hu_to_mu` unclipped, so it computes exactly the mu network's
    function), which is how GloReDi exports its student. ``both(x)`` also returns the latent (global
    representation). H and W must divide by 2^n_downsampling.
    ``global_skip`` is the official ``GloRei_Basic.basic_forward`` option (output = decoder + input, off in
    the paper's runs); here its decoder also starts at zero (a residual head), so training starts from the
    FBP input itself. Its latent then encodes a correction to the input, not the image."""

    def __init__(self, ngf: int = 64, n_downsampling: int = 2, e_blocks: int = 7, d_blocks: int = 2,
                 ratio: float = 0.75, in_channels: int = 1, global_skip: bool = False,
                 units: Literal["mu", "hu"] = "mu") -> None:  # fmt: skip
        super().__init__()
        if units not in ("mu", "hu"):
            raise ValueError(f"units must be 'mu' (attenuation, per cm) or 'hu' (Hounsfield units), got {units!r}")
        self.stride = 2**n_downsampling
        self.global_skip = global_skip
        self.units = units
        self.encoder = FFCEncoder(in_channels, ngf, n_downsampling, e_blocks, ratio)
        self.decoder = FFCDecoder(in_channels, ngf, n_downsampling, d_blocks, ratio, residual=global_skip)

    def both(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim != 4 or x.shape[-1] % self.stride or x.shape[-2] % self.stride:
            raise ValueError(
                f"expected images [B, C, H, W] with H and W divisible by {self.stride}, got {tuple(x.shape)}"
            )
        if self.units == "hu":  # the network itself computes in attenuation, as the official code trains it
            x = hu_to_mu(x, clip=False)  # unclipped: the same function as the mu network, FBP streaks included
        latent = self.encoder(x)
        out = self.decoder(latent)
        out = out + x if self.global_skip else out
        return (mu_to_hu(out) if self.units == "hu" else out), latent

    def forward(self, x: Tensor) -> Tensor:
        return self.both(x)[0]


# ----- losses ------------------------------------------------------------------------------------------
def directional_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean over (b, h, w) of 1 - cos(student[b, :, h, w], teacher[b, :, h, w]); [B, C, H, W] each -> scalar."""
    return cosine_distance(student, teacher, dim=1)


def dct_matrix(n: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Unnormalised DCT-II as a matrix [n, n]: X[k] = 2 sum_i x[i] cos(pi k (2i + 1) / (2n)) (scipy norm=None)."""
    k, i = torch.arange(n, device=device, dtype=dtype)[:, None], torch.arange(n, device=device, dtype=dtype)[None]
    return 2 * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))


def dct2(x: Tensor) -> Tensor:
    """2-D DCT-II over the last two axes of [..., H, W]."""
    h, w = x.shape[-2:]
    return dct_matrix(h, x.device, x.dtype) @ x @ dct_matrix(w, x.device, x.dtype).T


def band_mask(h: int, w: int, low: float, high: float) -> Tensor:
    """The official square DCT annulus: index (u, v) is kept when s_low < max(u, v) <= s_high, with
    s = size * ratio * 1.414 / 2 * 1.414 (about size * ratio), e.g. 6.4 < max(u, v) <= 38.4 for 64 and
    (0.1, 0.6). Returns bool [h, w]."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"band ratios must satisfy 0 <= low < high <= 1, got ({low}, {high})")
    s_low, s_high = h * low * 1.414 / 2 * 1.414, w * high * 1.414 / 2 * 1.414
    u, v = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    outer = (u <= s_high) & (v <= s_high)
    return outer & ~((u <= s_low) & (v <= s_low)) if s_low > 0 else outer


def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.07) -> Tensor:
    """The official ``SupervisedContrastiveLoss`` on L2-normalised rows ``z`` [N, D] with ``labels`` [N]:
    e_ab = exp(z_a.z_b / T - max_b) + 1e-5; loss_a = mean over positives b != a of -log(e_ab / sum_{b != a}
    e_ab); the loss is the mean over anchors a."""
    sim = z @ z.T / temperature
    e = torch.exp(sim - sim.max(dim=1, keepdim=True).values) + 1e-5
    off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == labels[None]) & off
    log_prob = -torch.log(e / (e * off).sum(1, keepdim=True))
    return ((log_prob * positive).sum(1) / positive.sum(1).clamp(min=1)).mean()


class BandPassContrast(nn.Module):
    """Band-pass contrastive distillation: the DCT annulus of each latent, flattened and L2-normalised;
    student_i and teacher_i are a positive pair (label i + 1), the memory bank of the last ``memory``
    student projections (detached, label 0) supplies the negatives. The loss is 0 until the bank is full."""

    def __init__(self, memory: int = 300, temperature: float = 0.07, band: tuple[float, float] = (0.1, 0.6)) -> None:
        super().__init__()
        self.memory, self.temperature, self.band = memory, temperature, tuple(band)
        self.register_buffer("bank", torch.empty(0), persistent=False)
        self.filled, self.cursor = 0, 0

    def project(self, latent: Tensor) -> Tensor:
        b, c, h, w = latent.shape
        coeffs = dct2(latent.float())[..., band_mask(h, w, *self.band).to(latent.device)]  # [B, C, K]
        return F.normalize(coeffs.reshape(b, -1), dim=-1)

    @torch.no_grad()
    def _push(self, rows: Tensor) -> None:
        if self.bank.numel() == 0:
            self.bank = rows.new_zeros(self.memory, rows.shape[1])
        for row in rows[-self.memory :]:
            self.bank[self.cursor] = row
            self.cursor = (self.cursor + 1) % self.memory
            self.filled = min(self.filled + 1, self.memory)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        s, t = self.project(student), self.project(teacher)
        if self.filled < self.memory:
            self._push(s.detach())
            return student.new_zeros(())
        b = len(s)
        ids = torch.arange(1, b + 1, device=s.device)
        labels = torch.cat([ids, ids, ids.new_zeros(self.memory)])
        loss = supcon_loss(torch.cat([s, t, self.bank]), labels, self.temperature)
        self._push(s.detach())
        return loss


class LossScaler:
    """The official pixel-loss clip: a loss above ``factor`` x the minimum of the last ``window`` losses
    (itself included) is replaced by that bound as a constant, so an outlier batch gives no gradient."""

    def __init__(self, window: int = 50, factor: float = 3.0) -> None:
        self.history: deque[float] = deque(maxlen=window)
        self.factor = factor

    def __call__(self, loss: Tensor) -> Tensor:
        self.history.append(float(loss.detach()))
        bound = self.factor * min(self.history)
        return loss.new_tensor(bound) if float(loss.detach()) > bound else loss


# ----- the LightningModule -----------------------------------------------------------------------------
class GloReDi(DistillModule):
    """Teacher-student training of GloReDi on batches {"sparse", "teacher", "full", ...} of FBP images (mu).

    ``student``: a ``Reconstructor`` (encoder E1, decoder D). The teacher's encoder E2 starts as a copy of
    E1 and is trained (one optimiser holds E1, E2, D); its decoder D2 is ``momentum`` * D2 + (1 -
    momentum) * D before every teacher step. ``distill``: ``cosine`` (the paper's directional loss),
    ``l2`` / ``l1`` (latent matching ablations) or ``none`` (the student alone: no teacher is trained).
    ``theta_dis`` and ``theta_scl`` weight the directional and band-pass contrastive terms on the first
    ``channel_ratio`` of the latent channels (``theta_scl=0`` turns the latter off). The last
    ``finetune_epochs`` epochs train the student with the pixel loss only. The reference is ``full``
    (the full-view FBP, as in the official code). ``input_key="full"`` feeds the student the reference
    itself: the self-reconstruction warm start (official ``resume_from_selfrecon``) from which teacher and
    student both start, through ``init_weights``.
    """

    def __init__(
        self,
        student: Reconstructor | None = None,
        init_weights: str | None = None,
        distill: Literal["cosine", "l2", "l1", "none"] = "cosine",
        theta_dis: float = 0.002,
        theta_scl: float = 1e-6,
        channel_ratio: float = 0.5,
        scl_memory: int = 300,
        scl_temperature: float = 0.07,
        scl_band: tuple[float, float] = (0.1, 0.6),
        momentum: float = 0.0,
        finetune_epochs: int = 9,
        loss_scale_factor: float = 3.0,
        input_key: Literal["sparse", "full"] = "sparse",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        if distill not in ("cosine", "l2", "l1", "none"):
            raise ValueError(f"distill must be cosine, l2, l1 or none, got {distill!r}")
        if input_key == "full" and distill != "none":
            raise ValueError(
                "input_key='full' is the self-reconstruction warm start: it trains no teacher (distill none)"
            )
        self.input_key = input_key
        # the jointly trained teacher is an optimisation step of its own; the student alone has one step
        self.steps = ("student",) if distill == "none" else ("teacher", "student")
        super().__init__(student, None, init_weights, {"dir": theta_dis, "scl": theta_scl}, optimizer, lr_scheduler)
        if not 0 < channel_ratio <= 1 or not 0 <= momentum < 1 or finetune_epochs < 0:
            raise ValueError(f"need 0 < channel_ratio <= 1, 0 <= momentum < 1, finetune_epochs >= 0; got "
                             f"{channel_ratio}, {momentum}, {finetune_epochs}")  # fmt: skip
        self.distill, self.channel_ratio, self.momentum = distill, channel_ratio, momentum
        if distill != "none":
            self.teacher_encoder = copy.deepcopy(self.student.encoder)
            self.teacher_decoder = copy.deepcopy(self.student.decoder).requires_grad_(False)
            self.contrast = BandPassContrast(scl_memory, scl_temperature, scl_band) if theta_scl > 0 else None
        self.scale_teacher = LossScaler(factor=loss_scale_factor)
        self.scale_student = LossScaler(factor=loss_scale_factor)

    def export_student(self) -> tuple[nn.Module, dict[str, Any]]:
        """The student as CT users read images: in HU (DESIGN.md's input contract). Training stays in
        attenuation, as in the official code; the exported copy (same tensors) converts at its edges."""
        spec = module_spec(self.student)
        if "units" not in inspect.signature(type(self.student)).parameters:
            return self.student, spec  # a student network of another kind: published as it computes
        spec = {**spec, "init_args": {**spec["init_args"], "units": "hu"}}
        network = build(spec)
        network.load_state_dict(self.student.state_dict())
        return network, spec

    def configure_metrics(self) -> MetricCollection:
        """PSNR and SSIM (HU window) of the student, of its FBP input and, when trained, of the teacher and
        of the teacher's own FBP input (a teacher that does not beat it has nothing to teach); each also as
        ``..._ood`` on an out-of-family test set (batches with ``"ood"``, see CTDataModule), left out without one."""
        sources = ["", "_fbp"] + (["_teacher", "_teacher_input"] if self.distill != "none" else [])
        metrics = {}
        for src in [*sources, *(f"{s}_ood" for s in sources)]:
            metrics[f"psnr{src}"] = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
            metrics[f"ssim{src}"] = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=11, sigma=1.5)
        return MetricCollection(metrics)

    # ----- training --------------------------------------------------------------------------------
    @property
    def finetuning(self) -> bool:
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return bool(max_epochs and max_epochs > 0 and self.current_epoch >= max_epochs - self.hparams.finetune_epochs)

    def latent_terms(self, student: Tensor, teacher: Tensor) -> dict[str, Tensor]:
        """Directional (or L2 / L1) and band-pass contrastive terms on the first ``channel_ratio`` channels."""
        n = int(student.shape[1] * self.channel_ratio)
        s, t = student[:, :n], teacher[:, :n].detach()
        match = {"cosine": directional_loss, "l2": F.mse_loss, "l1": F.l1_loss}[self.distill]
        terms = {"dir": match(s, t)}
        if self.contrast is not None:
            terms["scl"] = self.contrast(s, t)
        return terms

    def step_modules(self, step: str) -> tuple[nn.Module, ...]:
        # E2 in the teacher step; E1, D (and projectors) in the student step. Adam keeps state per parameter
        # and skips parameters without a gradient, so this is the official single optimiser over E1, E2, D.
        return (self.teacher_encoder,) if step == "teacher" else super().trainable_modules()

    def teacher_forward(self, x: Tensor) -> Tensor:
        """E2 -> D2 on the teacher's views (plus the input, as the student, with ``global_skip``)."""
        out = self.teacher_decoder(self.teacher_encoder(x))
        return out + x if self.student.global_skip else out

    def step_loss(self, step: str, batch: dict[str, Tensor], shared: dict[str, Any]) -> dict[str, Tensor]:
        """``teacher``: D2 follows D by momentum, then E2 -> D2 on the teacher's views learns the pixel loss.
        ``student``: E1 -> D on the sparse views, plus the latent terms against the updated teacher."""
        gt = batch["full"]
        if step == "teacher":
            if self.finetuning:
                return {}
            ema_update_(self.teacher_decoder, self.student.decoder, self.momentum)
            out = self.teacher_forward(batch["teacher"])
            return {"pixel": self.scale_teacher(F.smooth_l1_loss(out, gt))}
        out, latent = self.student.both(batch[self.input_key])
        if self.finetuning:
            return {"pixel": F.smooth_l1_loss(out, gt)}
        terms = {"pixel": self.scale_student(F.smooth_l1_loss(out, gt))}
        if self.distill != "none":
            with torch.no_grad():  # the updated teacher's representation (train mode, as the official code)
                teacher_latent = self.teacher_encoder(batch["teacher"])
            terms.update(self.latent_terms(latent, teacher_latent))
        return terms

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.step_loss("student", batch, {})  # the student alone (distill="none"): one step

    # ----- evaluation ------------------------------------------------------------------------------
    def batch_size(self, batch: dict[str, Tensor]) -> int:
        return batch["full"].shape[0]

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Any]:
        ref = hu_window(batch["full"])
        outputs = {"": self.student(batch[self.input_key]), "_fbp": batch["sparse"]}
        if self.distill != "none":
            outputs["_teacher"] = self.teacher_forward(batch["teacher"])
            outputs["_teacher_input"] = batch["teacher"]
        family = "_ood" if "ood" in batch else ""
        for src, image in outputs.items():
            for m in ("psnr", "ssim"):
                self.stage_metrics[stage][f"{m}{src}{family}"].update(hu_window(image), ref)
        if stage == "test":  # the student's PSNR per slice, so that evidence can pair arms slice by slice
            mse = (hu_window(outputs[""]) - ref).pow(2).flatten(1).mean(1)
            self.record_samples(f"test/psnr{family}", batch["index"], -10 * torch.log10(mse))
        return {}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"index": batch["index"], "reconstruction": self.student(batch["sparse"])}
