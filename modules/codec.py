"""DistilCodec (UniTTS, arXiv 2505.17426): distil a multi-codebook speech codec into one codebook.

Follows IDEA-Emdoor-Lab/DistilCodec (``configs/model_config.json``, ``train.py``,
``code_distiller.py``): log-mel -> ConvNeXt-1D encoder (no temporal downsampling) -> quantizer
(conv + ConvNeXt, up-projection into the codebook space, EMA vector quantisation, projection back,
transposed conv + ConvNeXt) -> HiFi-GAN generator, trained with LSGAN against multi-period,
multi-scale and multi-scale-STFT discriminators, feature matching, three-resolution mel L1
(weights 45, 1, 1) and commitment (weight 10).

DMS, the published recipe, is *parameter inheritance*: the student's encoder and generator start
from the multi-codebook teacher (``grouped residual VQ``), its single large codebook is new, and it
trains with the ordinary codec losses. The official latent-matching distiller
(``MultiGroupDistillation``: beta * MSE(q_S, q_T) + gamma * MSE(q~_S, W q~_T) on the codebook-space
codes, W block-diagonal per teacher group) exists but is off; here it is ``latent_weight`` /
``quantized_weight`` (0 by default).

One file over the usual 600 lines because it is one cohesive thing: the codec, its discriminators, losses
and metric exist only for this method and change together (no other method uses a GAN codec).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from timm.layers import DropPath
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm
from torchmetrics import Metric, MetricCollection
from vector_quantize_pytorch import GroupedResidualVQ, VectorQuantize

from modules.core import DistillModule
from zoo.specs import exportable

LRELU = 0.1


# ----- features ------------------------------------------------------------------------------------
class LogMel(nn.Module):
    """HiFi-GAN's log-magnitude mel: reflect padding of (n_fft - hop) / 2, no centring, so a clip of
    ``k * hop`` samples gives exactly ``k`` frames; log(clamp(., 1e-5))."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int, f_max: float | None = None) -> None:
        super().__init__()
        self.pad = (n_fft - hop) // 2
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft, hop_length=hop, n_mels=n_mels, f_max=f_max, power=1.0, center=False, norm="slaney"
        )

    def forward(self, wav: Tensor) -> Tensor:  # (B, 1, T) -> (B, n_mels, T / hop)
        wav = F.pad(wav.float(), (self.pad, self.pad), mode="reflect").squeeze(1)
        with torch.autocast(wav.device.type, enabled=False):
            return torch.log(self.mel(wav).clamp(min=1e-5))


# ----- encoder and quantizer ------------------------------------------------------------------------
class ConvNeXtBlock(nn.Module):
    """1-D ConvNeXt block: depthwise conv, LayerNorm, 4x MLP, layer scale, drop path."""

    def __init__(self, dim: int, kernel_size: int = 7, drop_path: float = 0.0) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        h = self.mlp(self.norm(self.dwconv(x).transpose(1, 2))) * self.gamma
        return x + self.drop_path(h.transpose(1, 2))


class ChannelNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:  # LayerNorm over channels of (B, C, T)
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtEncoder(nn.Module):
    """Stages of ConvNeXt blocks at one time resolution; 1x1 convs change the width between stages.
    ``stem_norm`` adds the official LayerNorm after the stem conv (off in the first published entries)."""

    def __init__(
        self,
        in_channels: int,
        depths: Sequence[int],
        dims: Sequence[int],
        kernel_size: int = 7,
        drop_path: float = 0.0,
        stem_norm: bool = False,
    ) -> None:
        super().__init__()
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        layers: list[nn.Module] = [nn.Conv1d(in_channels, dims[0], kernel_size, padding=kernel_size // 2)]
        if stem_norm:  # the official stem: conv then LayerNorm over channels
            layers.append(ChannelNorm(dims[0]))
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i:
                layers += [ChannelNorm(dims[i - 1]), nn.Conv1d(dims[i - 1], dim, 1)]
            start = sum(depths[:i])
            layers += [ConvNeXtBlock(dim, kernel_size, rates[start + j]) for j in range(depth)]
        layers.append(ChannelNorm(dims[-1]))
        self.layers = nn.Sequential(*layers)

    def forward(self, mel: Tensor) -> Tensor:
        return self.layers(mel)


class Quantizer(nn.Module):
    """The official GRVQ wrapper: Conv1d(stride = downsample) + ConvNeXt -> VQ -> ConvTranspose + ConvNeXt.

    ``groups == residual == 1`` is the student's single codebook (``VectorQuantize``); otherwise the
    teacher's grouped residual VQ (``GroupedResidualVQ``). ``codebook_dim`` larger than the latent
    is the official up-projection into the codebook space (1024 -> 3584 there). EMA updates with
    ``decay`` (0.8 as the official config); ``dead_code_threshold`` > 0 re-seeds codes whose EMA
    count falls below it from the batch (0, off, as the official code).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        groups: int = 1,
        residual: int = 1,
        downsample: int = 1,
        decay: float = 0.8,
        dead_code_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % groups:
            raise ValueError(f"latent dim {dim} is not divisible by {groups} quantizer groups")
        self.groups, self.residual, self.codebook_size = groups, residual, codebook_size
        self.codebook_dim = codebook_dim or dim // groups  # per group: the codebook space of the latent term
        self.pre = nn.Sequential(nn.Conv1d(dim, dim, downsample, stride=downsample), ConvNeXtBlock(dim))
        self.post = nn.Sequential(nn.ConvTranspose1d(dim, dim, downsample, stride=downsample), ConvNeXtBlock(dim))
        # rotation_trick=False: the official code's plain straight-through estimator (the library's default
        # since 1.18 is the rotation trick)
        common = dict(
            decay=decay, threshold_ema_dead_code=dead_code_threshold, commitment_weight=1.0, rotation_trick=False
        )
        if groups == residual == 1:
            self.vq = VectorQuantize(dim, codebook_size, codebook_dim=codebook_dim, **common)
        else:
            self.vq = GroupedResidualVQ(
                dim=dim, groups=groups, num_quantizers=residual, codebook_size=codebook_size,
                codebook_dim=codebook_dim, **common,
            )  # fmt: skip

    @property
    def single(self) -> bool:
        return isinstance(self.vq, VectorQuantize)

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """z (B, C, T) -> quantized (B, C, T), codes (B, G, T', R), commit (scalar), fup (B, T', D)."""
        h = self.pre(z).transpose(1, 2).float()
        with torch.autocast(h.device.type, enabled=False):  # codebooks stay in fp32 under bf16
            q, codes, commit = self.vq(h)
            if self.single:
                # codebook-space codes with a straight-through path to the encoder (the latent term's q~_S)
                up = self.vq.project_in(h)
                fup = up + (self.vq.codebook[codes] - up).detach()
                codes = codes[:, None, :, None]
            else:
                fup = self.vq.get_codes_from_indices(codes).sum(1)  # (G, R, B, T, d) -> (G, B, T, d)
                fup = torch.cat(list(fup), dim=-1)
                codes = codes.permute(1, 0, 2, 3)  # (G, B, T, R) -> (B, G, T, R)
        return {"quantized": self.post(q.transpose(1, 2)), "codes": codes, "commit": commit.sum(), "fup": fup}

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes (B, G, T', R) -> quantized latent (B, C, T)."""
        self._check_codes(codes)
        if self.single:
            q = self.vq.get_output_from_indices(codes[:, 0, :, 0])
        else:
            q = self.vq.get_output_from_indices(codes.permute(1, 0, 2, 3))
        return self.post(q.transpose(1, 2))

    def _check_codes(self, codes: Tensor) -> None:
        want = (self.groups, self.residual)
        if codes.dim() != 4 or tuple(codes.shape[i] for i in (1, 3)) != want:
            raise ValueError(
                f"codes must be (batch, {want[0]} groups, frames, {want[1]} residual); got {tuple(codes.shape)}"
            )
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must lie in [0, {self.codebook_size}); got [{codes.min()}, {codes.max()}]")


# ----- generator -----------------------------------------------------------------------------------
ACTIVATIONS = {"leaky_relu": lambda x: F.leaky_relu(x, LRELU), "silu": F.silu}


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: for each dilation, act -> dilated conv -> act -> conv, residual."""

    def __init__(
        self, channels: int, kernel_size: int, dilations: Sequence[int], activation: str = "leaky_relu"
    ) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]

        def conv(d: int) -> nn.Module:
            return weight_norm(
                nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            )

        self.convs1 = nn.ModuleList(conv(d) for d in dilations)
        self.convs2 = nn.ModuleList(conv(1) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(self.act(c1(self.act(x))))
        return x


class HiFiGANGenerator(nn.Module):
    """HiFi-GAN V1 generator from a latent sequence: pre conv, transposed-conv upsampling with
    averaged multi-receptive-field ResBlocks, post conv, tanh. Hop = prod(upsample_rates). ``activation``
    ``silu`` is the official DistilCodec generator's; ``leaky_relu`` (0.1) is HiFi-GAN's and the first
    published entries'."""

    def __init__(
        self,
        in_channels: int,
        upsample_rates: Sequence[int] = (8, 4, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 12, 4, 4, 4),
        upsample_initial_channel: int = 1024,
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        pre_conv_kernel_size: int = 13,
        post_conv_kernel_size: int = 13,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.act, self.leaky_post = ACTIVATIONS[activation], activation == "leaky_relu"
        c = upsample_initial_channel
        self.pre = weight_norm(nn.Conv1d(in_channels, c, pre_conv_kernel_size, padding=pre_conv_kernel_size // 2))
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            cin, cout = c // 2**i, c // 2 ** (i + 1)
            self.ups.append(weight_norm(nn.ConvTranspose1d(cin, cout, k, u, padding=(k - u) // 2)))
            self.blocks.append(
                nn.ModuleList(
                    ResBlock(cout, rk, rd, activation) for rk, rd in zip(resblock_kernel_sizes, resblock_dilation_sizes)
                )
            )
        cout = c // 2 ** len(upsample_rates)
        self.post = weight_norm(nn.Conv1d(cout, 1, post_conv_kernel_size, padding=post_conv_kernel_size // 2))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, frames) -> (B, 1, frames * hop)
        x = self.pre(x)
        for up, blocks in zip(self.ups, self.blocks):
            x = up(self.act(x))
            x = sum(block(x) for block in blocks) / len(blocks)
        # HiFi-GAN's last activation is leaky_relu at PyTorch's 0.01 slope
        return torch.tanh(self.post(F.leaky_relu(x) if self.leaky_post else self.act(x)))


# ----- the codec -----------------------------------------------------------------------------------
@exportable
class Codec(nn.Module):
    """Speech codec: wav (B, 1, T) -> codes (B, groups, frames, residual) -> wav.

    The defaults are the CPU-scale network of the zoo entries (see MODEL_CARDS.md); the official
    sizes are encoder dims (256, 512, 768, 1024), depths (3, 3, 9, 3), generator 1024 channels,
    codebook 32,768 x 3584 (student) and 4 groups x 8 residual x 1024 (teacher), at 24 kHz, with the
    encoder's stem LayerNorm and a SiLU generator (``stem_norm=True, activation="silu"``, set by the
    recipes; the defaults are the first published entries', so their stored specs rebuild unchanged).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        n_fft: int = 1024,
        encoder_dims: Sequence[int] = (64, 96, 128, 128),
        encoder_depths: Sequence[int] = (1, 1, 3, 1),
        drop_path: float = 0.0,
        codebook_size: int = 4096,
        codebook_dim: int | None = 512,
        groups: int = 1,
        residual: int = 1,
        decay: float = 0.8,
        dead_code_threshold: float = 0.0,
        upsample_rates: Sequence[int] = (8, 4, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 12, 4, 4, 4),
        upsample_initial_channel: int = 256,
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        stem_norm: bool = False,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.hop = math.prod(upsample_rates)
        self.mel = LogMel(sample_rate, n_fft, self.hop, n_mels, f_max=sample_rate / 2)
        self.encoder = ConvNeXtEncoder(n_mels, encoder_depths, encoder_dims, drop_path=drop_path, stem_norm=stem_norm)
        dim = encoder_dims[-1]
        self.quantizer = Quantizer(dim, codebook_size, codebook_dim, groups, residual, 1, decay, dead_code_threshold)
        self.generator = HiFiGANGenerator(
            dim, upsample_rates, upsample_kernel_sizes, upsample_initial_channel, resblock_kernel_sizes,
            resblock_dilation_sizes, activation=activation,
        )  # fmt: skip

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def bits_per_frame(self) -> float:
        return self.quantizer.groups * self.quantizer.residual * math.log2(self.quantizer.codebook_size)

    def _pad(self, wav: Tensor) -> Tensor:
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"wav must be (batch, 1, samples) mono; got {tuple(wav.shape)}")
        return F.pad(wav, (0, -wav.shape[-1] % self.hop))

    def quantize(self, wav: Tensor) -> dict[str, Tensor]:
        """mel -> encoder -> quantizer: codes, commit, fup and the quantized latent of ``wav``."""
        return self.quantizer(self.encoder(self.mel(self._pad(wav))))

    def forward(self, wav: Tensor) -> dict[str, Tensor]:
        """Reconstruct ``wav``; returns audio (cropped to the input length), codes, commit, fup, quantized."""
        out = self.quantize(wav)
        out["audio"] = self.generator(out["quantized"])[..., : wav.shape[-1]]
        return out

    @torch.no_grad()
    def encode(self, wav: Tensor) -> Tensor:
        """wav (B, 1, T) at ``sample_rate`` -> integer codes (B, groups, ceil(T / hop), residual)."""
        return self.quantize(wav)["codes"]

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, groups, frames, residual) -> wav (B, 1, frames * hop)."""
        return self.generator(self.quantizer.decode_codes(codes.long()))


# ----- discriminators ------------------------------------------------------------------------------
Logits = list[tuple[Tensor, list[Tensor]]]  # per sub-discriminator: (score map, feature maps)


def _run(layers: nn.ModuleList, post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    fmaps = []
    for layer in layers:
        x = F.leaky_relu(layer(x), LRELU)
        fmaps.append(x)
    x = post(x)
    fmaps.append(x)
    return x.flatten(1), fmaps


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: Sequence[int], kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        chans = [1, *channels]
        pad = (kernel_size // 2, 0)
        self.layers = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (kernel_size, 1), (stride if i < len(channels) - 1 else 1, 1), pad))
            for i, (a, b) in enumerate(zip(chans, chans[1:]))
        )
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = F.pad(x, (0, -x.shape[-1] % self.period), mode="reflect")
        return _run(self.layers, self.post, x.view(x.shape[0], 1, -1, self.period))


class ScaleDiscriminator(nn.Module):
    """MelGAN scale discriminator with the official kernels (21, 61 x 5, 7) and strides (1, 3, 3, 6, 6, 1, 1)."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        kernels, strides = (21, 61, 61, 61, 61, 61, 7), (1, 3, 3, 6, 6, 1, 1)
        chans = [1, *channels]
        layers = []
        for i, (a, b) in enumerate(zip(chans, chans[1:])):
            groups = math.gcd(a, b) if 0 < i < len(channels) - 1 else 1
            layers.append(weight_norm(nn.Conv1d(a, b, kernels[i], strides[i], kernels[i] // 2, groups=groups)))
        self.layers = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv1d(chans[-1], 1, 3, padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _run(self.layers, self.post, x)


class STFTDiscriminator(nn.Module):
    """EnCodec's STFT discriminator: real/imag spectrogram -> 2-D convs dilated in time."""

    def __init__(self, n_fft: int, hop: int, filters: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [nn.Conv2d(2, filters, (3, 9), padding=(1, 4))]
        convs += [nn.Conv2d(filters, filters, (3, 9), (1, 2), padding=(d, 4), dilation=(d, 1)) for d in (1, 2, 4)]
        convs.append(nn.Conv2d(filters, filters, (3, 3), padding=1))
        self.layers = nn.ModuleList(weight_norm(c) for c in convs)
        self.post = weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        with torch.autocast(x.device.type, enabled=False):
            spec = torch.stft(x.squeeze(1).float(), self.n_fft, self.hop, window=self.window, return_complex=True)
        z = torch.stack([spec.real, spec.imag], 1).transpose(2, 3)  # (B, 2, frames, freq)
        return _run(self.layers, self.post, z.to(x.dtype))


@exportable
class Discriminators(nn.Module):
    """Multi-period (periods 5, 8, 13, 19, 30), multi-scale (3 scales, average-pooled by 3) and
    multi-scale STFT (n_fft 1024, 2048, 512, 256, 128) discriminators, as the official config."""

    def __init__(
        self,
        periods: Sequence[int] = (5, 8, 13, 19, 30),
        period_channels: Sequence[int] = (16, 64, 128, 256, 256),
        scale_channels: Sequence[int] = (16, 32, 64, 128, 256, 256, 256),
        stft_ffts: Sequence[int] = (1024, 2048, 512, 256, 128),
        stft_filters: int = 16,
    ) -> None:
        super().__init__()
        self.period = nn.ModuleList(PeriodDiscriminator(p, period_channels) for p in periods)
        self.scale = nn.ModuleList(ScaleDiscriminator(scale_channels) for _ in range(3))
        self.pool = nn.AvgPool1d(6, 3, padding=3)
        self.stft = nn.ModuleList(STFTDiscriminator(n, n // 4, stft_filters) for n in stft_ffts)

    def forward(self, x: Tensor) -> Logits:
        out = [d(x) for d in self.period] + [d(x) for d in self.stft]
        for i, d in enumerate(self.scale):
            out.append(d(x if i == 0 else self.pool(x) if i == 1 else self.pool(self.pool(x))))
        return out


def discriminator_loss(real: Logits, fake: Logits) -> Tensor:
    """LSGAN: mean (1 - D(x))^2 + mean D(x_hat)^2, summed over sub-discriminators."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for (r, _), (f, _) in zip(real, fake))


def generator_adversarial_loss(fake: Logits) -> Tensor:
    return sum(torch.mean((1 - f) ** 2) for f, _ in fake)


def feature_matching_loss(real: Logits, fake: Logits) -> Tensor:
    """Sum over layers of mean |f(x) - f(x_hat)| (the official weight 2 is a loss weight)."""
    return sum(torch.mean(torch.abs(r.detach() - f)) for (_, rs), (_, fs) in zip(real, fake) for r, f in zip(rs, fs))


class MultiResolutionMel(nn.Module):
    """L1 between log-mels at (n_fft, hop) = (1024, 256), (2048, 512), (512, 128); returns one per resolution."""

    RESOLUTIONS = ((1024, 256), (2048, 512), (512, 128))

    def __init__(self, sample_rate: int, n_mels: int, resolutions: Sequence[Sequence[int]] = RESOLUTIONS) -> None:
        super().__init__()
        self.mels = nn.ModuleList(LogMel(sample_rate, n, h, n_mels, sample_rate / 2) for n, h in resolutions)

    def forward(self, x: Tensor, y: Tensor) -> list[Tensor]:
        return [F.l1_loss(mel(y), mel(x)) for mel in self.mels]


# ----- metrics -------------------------------------------------------------------------------------
class CodeUsage(Metric):
    """Codebook usage (% of codes used at least once) and code perplexity exp(H), averaged over the
    codec's codebooks, accumulated over every frame seen (the paper's 98.2% and PPL 21,660)."""

    full_state_update = False

    def __init__(self, num_codebooks: int, codebook_size: int) -> None:
        super().__init__()
        self.add_state("counts", torch.zeros(num_codebooks, codebook_size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: Tensor) -> None:  # (B, G, T, R)
        flat = codes.permute(1, 3, 0, 2).reshape(self.counts.shape[0], -1)
        self.counts += torch.zeros_like(self.counts).scatter_add_(1, flat, torch.ones_like(flat))

    def compute(self) -> dict[str, Tensor]:
        p = self.counts.double() / self.counts.sum(1, keepdim=True).clamp(min=1)
        entropy = -(p * p.clamp(min=1e-30).log()).sum(1)
        return {"usage": 100 * (self.counts > 0).double().mean(), "perplexity": entropy.exp().mean()}


# ----- the Lightning module ------------------------------------------------------------------------
class DistilCodec(DistillModule):
    """Train a codec with the official GAN recipe; with a teacher codec, DMS.

    ``inherit=True`` (DMS) copies the teacher's mel front end, encoder and generator into the
    student at construction; the student's quantizer stays new. ``latent_weight`` (gamma, official
    2 when on) and ``quantized_weight`` (beta, official 0) switch on the latent term, for which the
    teacher's quantizer runs on every batch. Without a teacher, the same module trains the teacher
    itself or the from-scratch student. Two named optimisation steps, ``discriminator`` then
    ``generator``, each with its own optimiser; ``lr_scheduler`` steps once per epoch
    (ExponentialLR(0.98) in the recipes).
    """

    modules_in_init = ("discriminator",)
    steps = ("discriminator", "generator")

    def __init__(
        self,
        student: Codec | None = None,
        teacher: nn.Module | None = None,
        init_weights: str | None = None,
        inherit: bool = True,
        latent_weight: float = 0.0,
        quantized_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        mel_weights: Sequence[float] = (45.0, 1.0, 1.0),
        loss_weights: dict[str, float] | None = None,
        eval_quality: bool = True,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        weights = {"adv": 1.0, "fm": 2.0, "mel": 1.0, "commit": 10.0, "latent": 1.0} | dict(loss_weights or {})
        super().__init__(student, teacher, init_weights, weights, optimizer, lr_scheduler)
        codec: Codec = self.student
        if self.teacher is not None and inherit:
            self._inherit(self.teacher.network)
        if latent_weight or quantized_weight:
            if self.teacher is None:
                raise ValueError("latent_weight/quantized_weight need a teacher codec")
            tq, sq = self.teacher.network.quantizer, codec.quantizer
            if sq.codebook_dim % tq.groups:
                raise ValueError(
                    f"student codebook dim {sq.codebook_dim} is not divisible by the teacher's {tq.groups} groups"
                )
            # W: one (teacher group dim -> student dim / groups) matrix per teacher group, as MultiGroupDistillation
            self.projectors["latent"] = BlockLinear(tq.groups, tq.codebook_dim, sq.codebook_dim // tq.groups)
        self.discriminator = discriminator if discriminator is not None else Discriminators()
        self.mel_loss = MultiResolutionMel(codec.sample_rate, codec.init_args["n_mels"])

    def configure_metrics(self) -> MetricCollection:
        """Code usage and perplexity over the whole stage; wideband PESQ and STOI at 16 kHz (``eval_quality``)."""
        q = self.student.quantizer
        metrics: dict[str, Metric] = {"codes": CodeUsage(q.groups * q.residual, q.codebook_size)}
        if self.hparams.eval_quality:
            from torchmetrics.audio import PerceptualEvaluationSpeechQuality, ShortTimeObjectiveIntelligibility

            metrics |= {
                "stoi": ShortTimeObjectiveIntelligibility(16000),
                "pesq": PerceptualEvaluationSpeechQuality(16000, "wb"),
            }
        return MetricCollection(metrics)

    def _inherit(self, source: Codec) -> None:
        """DMS: the student's mel, encoder and generator start as the teacher's; its quantizer is new."""
        for part in ("mel", "encoder", "generator"):
            src, dst = getattr(source, part).state_dict(), getattr(self.student, part).state_dict()
            bad = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
            if bad:
                raise ValueError(
                    f"cannot inherit the teacher's {part}: {len(bad)} tensors differ in name or shape, e.g. {bad[:3]}; "
                    "the student needs the teacher's widths (the zoo teacher is at the scale of recipes/codec/cpu.yaml)"
                )
            getattr(self.student, part).load_state_dict(src)

    # ----- training ----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            # codes no batch hits decay towards zero under EMA; as subnormals they slow a CPU step 3-4x
            torch.set_flush_denormal(True)

    def step_modules(self, step: str) -> tuple[nn.Module, ...]:
        return (self.discriminator,) if step == "discriminator" else self.trainable_modules()

    def shared_forward(self, batch: Tensor) -> dict[str, Any]:
        return {"out": self.student(batch)}

    def step_loss(self, step: str, batch: Tensor, shared: dict[str, Any]) -> dict[str, Tensor]:
        """LSGAN discriminators on real audio vs the detached reconstruction, then the generator's terms."""
        if step == "discriminator":
            fake = shared["out"]["audio"].detach()
            return {"lsgan": discriminator_loss(self.discriminator(batch), self.discriminator(fake))}
        return self.distill_loss(batch, shared["out"])

    def distill_loss(self, batch: Tensor, out: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The generator's terms for real audio ``batch`` (B, 1, T)."""
        out = out if out is not None else self.student(batch)
        real, fake = self.discriminator(batch), self.discriminator(out["audio"])
        mels = self.mel_loss(batch, out["audio"])
        terms = {
            "adv": generator_adversarial_loss(fake),
            "fm": feature_matching_loss(real, fake),
            "mel": sum(w * m for w, m in zip(self.hparams.mel_weights, mels)),
            "commit": out["commit"],
        }
        if "latent" in self.projectors:
            with torch.no_grad():
                target = self.teacher.network.quantize(batch)
            terms["latent"] = self.hparams.latent_weight * F.mse_loss(
                out["fup"], self.projectors["latent"](target["fup"])
            )
            if self.hparams.quantized_weight:
                terms["latent"] = terms["latent"] + self.hparams.quantized_weight * F.mse_loss(
                    out["quantized"], target["quantized"]
                )
        return terms

    # ----- evaluation --------------------------------------------------------------------------------
    def evaluate(self, batch: Tensor, stage: str) -> dict[str, Any]:
        out = self.student(batch)
        mels = self.mel_loss(batch, out["audio"])
        metrics = self.stage_metrics[stage]
        metrics["codes"].update(out["codes"])
        if "stoi" in metrics:
            ref, est = (to_16k(a, self.student.sample_rate).squeeze(1).float() for a in (batch, out["audio"]))
            metrics["stoi"].update(est, ref)
            metrics["pesq"].update(est, ref)
        return {"mel_distance": sum(mels) / len(mels)}

    def batch_size(self, batch: Tensor) -> int:
        return batch.shape[0]

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """``{"audio"}`` -> codes and reconstruction; ``{"codes"}`` -> audio."""
        codec: Codec = self.student
        if "codes" in batch:
            return {"path": batch["path"], "audio": codec.decode(batch["codes"])}
        codes = codec.encode(batch["audio"])
        return {"path": batch["path"], "codes": codes, "audio": codec.decode(codes)[..., : batch["audio"].shape[-1]]}


class BlockLinear(nn.Module):
    """Block-diagonal linear map: each of ``groups`` input blocks to its own output block."""

    def __init__(self, groups: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim))
        nn.init.kaiming_uniform_(self.weight.view(groups * in_dim, out_dim), a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:  # (B, T, groups * in_dim) -> (B, T, groups * out_dim)
        b, t, _ = x.shape
        blocks = x.view(b, t, self.groups, -1).transpose(1, 2)  # (B, G, T, in)
        return torch.matmul(blocks, self.weight).transpose(1, 2).reshape(b, t, -1)


def to_16k(wav: Tensor, sample_rate: int) -> Tensor:
    """Resample to 16 kHz for STOI/PESQ (orig -> new; the official evaluation swaps the two)."""
    return wav if sample_rate == 16000 else torchaudio.functional.resample(wav, sample_rate, 16000)


# ----- writing predictions -------------------------------------------------------------------------
class CodecWriter(BasePredictionWriter):
    """``cli.py predict`` output: ``<stem>.codes.safetensors`` (int32 codes + sample rate, frame
    rate) and ``<stem>.wav`` (the reconstruction, or the decoded tokens), written atomically."""

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__("batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        import soundfile
        from safetensors.torch import save

        from zoo.files import atomic_write_bytes

        codec: Codec = pl_module.student
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = prediction["path"][0] if isinstance(prediction["path"], (list, tuple)) else prediction["path"]
        stem = Path(path).name.split(".")[0]
        if "codes" in prediction:
            meta = {"sample_rate": str(codec.sample_rate), "frame_rate": str(codec.frame_rate)}
            blob = save({"codes": prediction["codes"][0].to(torch.int32).cpu().contiguous()}, metadata=meta)
            atomic_write_bytes(self.output_dir / f"{stem}.codes.safetensors", blob)
        import io

        buf = io.BytesIO()
        soundfile.write(buf, prediction["audio"][0, 0].float().cpu().numpy(), codec.sample_rate, format="WAV")
        atomic_write_bytes(self.output_dir / f"{stem}.wav", buf.getvalue())
