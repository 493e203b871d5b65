"""PH-Reg: "Vision Transformers with Self-Distilled Registers" (NeurIPS 2025, arXiv 2505.21501), following
0raiser0/PH-Reg (``DINOv2_full/distill_main.py``, ``models/studentDINOv2.py``, ``utils/denoising.py``,
``utils/loss.py``).

A frozen ViT teacher gives denoised dense targets by test-time augmentation: ``views`` copies of each image
shifted by whole patches (offsets drawn from 100 candidates in [-s, s]^2, s = round(0.15 * grid), chosen
by farthest-point sampling, the first forced to no shift) and flipped at random (the first never), the
vacated pixels white; every view's final-norm patch tokens are scattered back to the cells of the original
image they show and averaged over the views that cover each cell. The student is a copy of the teacher
plus register tokens (~ N(0, 1) / sqrt(D), no positional embedding) in front of CLS, with only the
registers, the positional embedding, the patch embedding and the last block unlocked; it learns, on
unlabelled images, ``(1 - mean cos) + mse_weight * MSE`` between its final-norm patch tokens and the
targets (CLS and registers unconstrained).

Targets are computed once per training image by the frozen teacher and stored as a teacher-outputs file
keyed by image id (:mod:`zoo.outputs`), named by the teacher's and the images' sha256, so a changed teacher
or image set makes a new file and a file made for another is refused naming both hashes. Held-out images
(validation, test) get their targets live.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import Metric

from modules.core import DistillModule
from modules.nets import TimmViT
from modules.nets.probes import tokens_to_map
from zoo import outputs, store
from zoo.specs import exportable

UNLOCK = ("phreg", "registers")


def max_shift_for(grid: int) -> int:
    """The official largest shift in patches: ``round(0.15 * grid)`` (6 on DINOv2's 37, 4 on CLIP's 28)."""
    return round(0.15 * grid)


def tta_views(
    grid: Sequence[int],
    views: int = 10,
    candidates: int = 100,
    max_shift: int | None = None,
    generator: torch.Generator | None = None,
) -> list[tuple[int, int, bool]]:
    """``views`` (dy, dx, flip) in patches for a ``grid`` (rows, columns): view 0 is (0, 0, no flip); the
    others are chosen from ``candidates`` random offsets in [-s, s]^2 (s = ``max_shift``, by default
    ``round(0.15 * side)`` per axis) by farthest-point sampling, each flipped with probability 1/2."""
    gh, gw = int(grid[0]), int(grid[1])
    sy, sx = (max_shift, max_shift) if max_shift is not None else (max_shift_for(gh), max_shift_for(gw))
    if sy < 0 or sx < 0 or sy >= gh or sx >= gw:
        raise ValueError(
            f"shifts of up to {sy} x {sx} patches would move every patch out of a {gh} x {gw} grid; the largest "
            "shift must be smaller than the grid"
        )
    if views < 1 or candidates < views - 1:
        raise ValueError(f"need views >= 1 and candidates >= views - 1, got {views} and {candidates}")
    pool = torch.stack(
        [torch.randint(-sy, sy + 1, (candidates,), generator=generator),
         torch.randint(-sx, sx + 1, (candidates,), generator=generator)], dim=1
    ).float()  # fmt: skip
    chosen = [torch.zeros(2)]
    nearest = (pool - chosen[0]).norm(dim=1)
    for _ in range(views - 1):  # farthest-point sampling from the no-shift view
        pick = int(nearest.argmax())
        chosen.append(pool[pick])
        nearest = torch.minimum(nearest, (pool - pool[pick]).norm(dim=1))
    flips = torch.rand(views, generator=generator) < 0.5
    return [(int(c[0]), int(c[1]), bool(f) and i > 0) for i, (c, f) in enumerate(zip(chosen, flips))]


def _shift(x: Tensor, dy: int, dx: int, fill: float) -> Tensor:
    """``x`` [..., H, W] moved down by ``dy`` and right by ``dx`` (negative: up, left), vacated cells ``fill``."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    if abs(dy) < h and abs(dx) < w:
        out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
            ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
        ]
    return out


def shift_view(images: Tensor, dy: int, dx: int, flip: bool, patch: int, fill: float = 1.0) -> Tensor:
    """One TTA view of images [B, C, H, W] in [0, 1]: shifted by whole patches, vacated pixels white (1.0,
    the official fill), then flipped left-right if ``flip``."""
    view = _shift(images, dy * patch, dx * patch, fill)
    return view.flip(-1) if flip else view


def view_cells(grid: Sequence[int], dy: int, dx: int, flip: bool) -> Tensor:
    """For each cell of a view's patch grid, the flat index of the original cell it shows, or -1 where the
    shift left it empty [gh * gw] (the official shifted coordinate grid)."""
    gh, gw = int(grid[0]), int(grid[1])
    cells = _shift(torch.arange(gh * gw, dtype=torch.float32).view(gh, gw), dy, dx, -1.0)
    return (cells.flip(-1) if flip else cells).flatten().long()


def tta_grid(network: nn.Module, images: Tensor) -> tuple[int, int]:
    """The patch grid ``network`` gives ``images``; images smaller than one patch per side are refused by size
    (a grid of 0 cells has nothing to shift, scatter back or distil)."""
    h, w, patch = int(images.shape[-2]), int(images.shape[-1]), int(network.patch_size[0])
    if h < patch or w < patch:
        raise ValueError(
            f"images of {h} x {w} px are smaller than one {patch}-px patch per side: PH-Reg's views need a patch "
            f"grid of at least 1 x 1 (shifts of round(0.15 x side) patches need 4+ patches per side to move at all)"
        )
    return tuple(network.grid_for((h, w)))


def tta_dense(dense: Any, images: Tensor, views: Sequence[tuple[int, int, bool]], patch: int) -> Tensor:
    """The TTA target: ``dense(view)`` [B, D, gh, gw] of every view scattered back to the original cells and
    averaged over the views that cover each cell -> [B, D, gh, gw]."""
    total = count = None
    for dy, dx, flip in views:
        features = dense(shift_view(images, dy, dx, flip, patch))
        b, d, gh, gw = features.shape
        if total is None:
            total = features.new_zeros(b, d, gh * gw)
            count = features.new_zeros(gh * gw)
        cells = view_cells((gh, gw), dy, dx, flip).to(features.device)
        seen = cells >= 0
        total.index_add_(2, cells[seen], features.flatten(2)[:, :, seen])
        count.index_add_(0, cells[seen], torch.ones_like(cells[seen], dtype=count.dtype))
    assert total is not None and count is not None, "give at least one view"
    return (total / count.clamp(min=1)).view(b, d, gh, gw)


def phreg_loss(student: Tensor, target: Tensor) -> dict[str, Tensor]:
    """PH-Reg's terms on patch features [B, D, h, w] (``utils/loss.py``): ``cosine`` = 1 - the mean over batch
    and tokens of cos(student, target), each vector divided by (norm + 1e-8); ``mse`` = mean squared error."""
    if student.shape != target.shape:
        raise ValueError(f"student features {list(student.shape)} and targets {list(target.shape)} differ")
    s = student / (student.norm(dim=1, keepdim=True) + 1e-8)
    t = target / (target.norm(dim=1, keepdim=True) + 1e-8)
    return {"cosine": 1 - (s * t).sum(dim=1).mean(), "mse": F.mse_loss(student, target)}


def value_path(block: nn.Module, x: Tensor) -> Tensor:
    """The official CLIP student's last block (MaskCLIP / ClearCLIP style): ``W_o (W_v LN1(x) + b_v) + b_o``,
    the attention's value and output projections only, with no residual and no MLP. ``block`` is a timm
    ``Block`` (its ``attn.qkv`` holds [W_q; W_k; W_v])."""
    attn, width = block.attn, x.shape[-1]
    value = attn.qkv(block.norm1(x))[..., 2 * width :]
    return attn.proj(attn.norm(value))


@exportable
class RegisterViT(nn.Module):
    """A ``TimmViT`` with ``num_registers`` register tokens in front of CLS that get no positional embedding
    (PH-Reg's student, ``studentDINOv2.py``). ``forward`` is the ViT's own head on [CLS, patches] (registers
    left out); ``dense_features(x)`` the final-norm patch tokens [B, D, h, w] (CLS and registers dropped);
    ``block_features(x, blocks)`` the same maps after the listed blocks (0-based, before the final norm).
    ``vit_kwargs`` are ``TimmViT``'s; a CLIP tower (``dense_head``) gives its dense features through the
    projection, and ``value_last_block`` swaps the last block for :func:`value_path` (the official CLIP
    student). Images in [0, 1]."""

    def __init__(self, vit_kwargs: dict[str, Any], num_registers: int = 16, value_last_block: bool = False) -> None:
        super().__init__()
        if num_registers < 0:
            raise ValueError(f"num_registers must be >= 0, got {num_registers}")
        self.backbone = TimmViT(**vit_kwargs)
        dim = self.backbone.embed_dim
        self.num_registers, self.value_last_block = num_registers, value_last_block
        self.registers = nn.Parameter(torch.randn(1, num_registers, dim) / math.sqrt(dim)) if num_registers else None

    @classmethod
    def from_vit(cls, vit: TimmViT, num_registers: int = 16, value_last_block: bool = False) -> RegisterViT:
        """A copy of ``vit`` (its weights, at any resolution) plus fresh registers: the student's start.
        ``value_last_block``: the last block becomes the value path of the official CLIP student."""
        kwargs = dict(vit.init_args, dynamic_img_size=True, pretrained=False)
        kwargs["mean"], kwargs["std"] = vit.mean.flatten().tolist(), vit.std.flatten().tolist()
        kwargs.pop("naclip_std", None)  # a NACLIP teacher's student keeps the plain block's weights (official)
        student = cls(kwargs, num_registers, value_last_block)
        student.backbone.vit.load_state_dict(vit.vit.state_dict())
        return student

    # the probes' interface
    @property
    def embed_dim(self) -> int:
        return self.backbone.embed_dim

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.backbone.patch_size

    @property
    def depth(self) -> int:
        return len(self.backbone.vit.blocks)

    def grid_for(self, size: Sequence[int]) -> tuple[int, int]:
        return self.backbone.grid_for(size)

    def _tokens(self, images: Tensor) -> Tensor:
        vit = self.backbone.vit
        x = vit._pos_embed(vit.patch_embed(self.backbone.normalize(images)))  # CLS + patches, with positions
        if self.registers is not None:
            x = torch.cat([self.registers.expand(x.shape[0], -1, -1), x], dim=1)  # no position for them
        return vit.norm_pre(vit.patch_drop(x))

    def _map(self, tokens: Tensor, images: Tensor) -> Tensor:
        keep = self.num_registers + self.backbone.num_prefix_tokens
        return tokens_to_map(tokens, keep, self.grid_for(images.shape[-2:]))

    def forward_features(self, images: Tensor) -> Tensor:
        """Final-norm tokens [B, registers + CLS + N, D], registers first."""
        vit, x = self.backbone.vit, self._tokens(images)
        if not self.value_last_block:
            return vit.norm(vit.blocks(x))
        return vit.norm(value_path(vit.blocks[-1], vit.blocks[:-1](x)))

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone.vit.forward_head(self.forward_features(images)[:, self.num_registers :])

    def dense_features(self, images: Tensor) -> Tensor:
        tokens = self.forward_features(images)
        if self.backbone.dense_head:  # CLIP: every token through the projection, as the teacher's
            tokens = self.backbone.vit.head(tokens)
        return self._map(tokens, images)

    def block_features(self, images: Tensor, blocks: Sequence[int]) -> list[Tensor]:
        x, out = self._tokens(images), {}
        for i, block in enumerate(self.backbone.vit.blocks):
            x = block(x)
            if i in blocks:
                out[i] = self._map(x, images)
        return [out[i] for i in blocks]

    def unlock(self, which: Literal["phreg", "registers"] = "phreg") -> list[str]:
        """Freeze everything but PH-Reg's unlocked set: the registers, the positional embedding, the patch
        embedding and the last block (``phreg``, official), or the registers alone (``registers``)."""
        if which not in UNLOCK:
            raise ValueError(f"unlock must be one of {UNLOCK}, got {which!r}")
        if which == "registers" and self.registers is None:
            raise ValueError("unlock='registers' with num_registers=0 leaves nothing to train")
        vit = self.backbone.vit
        last = len(vit.blocks) - 1
        prefixes: tuple[str, ...] = ("registers",)
        if which == "phreg":
            prefixes += ("backbone.vit.pos_embed", "backbone.vit.patch_embed.", f"backbone.vit.blocks.{last}.")
        unlocked = []
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith(prefixes))
            if param.requires_grad:
                unlocked.append(name)
        return unlocked


class TTADense(nn.Module):
    """``dense_features`` of ``network`` under PH-Reg's test-time augmentation (``views`` passes, views drawn
    once per grid from ``seed``): the "teacher with TTA" arm, the targets' own quality at ``views``x cost."""

    def __init__(self, network: nn.Module, views: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.network, self.views, self.seed = network, views, seed

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["network"], name)  # the probes' interface, as the network has it

    def dense_features(self, images: Tensor) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        views = tta_views(tta_grid(self.network, images), self.views, generator=generator)
        return tta_dense(self.network.dense_features, images, views, self.network.patch_size[0])


class TestTimeRegisters(nn.Module):
    """The training-free baseline: test-time registers (Jiang et al. 2025, "Vision Transformers Don't Need
    Trained Registers", nickjiang2378/test-time-registers ``shared/algorithms.py``, ``shared/hook_fn.py``).
    ``calibrate(images)`` finds the register neurons: on each image, the tokens whose output norm at the last
    block is an outlier (above median + 3 MAD, where the official code uses a fixed norm of 30 for its large
    models), the mean absolute MLP activation of every (block, neuron) at those tokens, averaged over the
    images that have outliers; the ``top_k`` highest. ``dense_features(x)`` then appends one extra token
    (zeros, no position) and, at those neurons, gives it the maximum activation over all tokens and sets
    the patch tokens' to 0, so the outliers move out of the image; the map drops CLS and the extra token."""

    def __init__(self, network: TimmViT, top_k: int = 10) -> None:
        super().__init__()
        self.network, self.top_k = network, top_k
        self.neurons: dict[int, Tensor] = {}  # block -> register neuron indices

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["network"], name)

    def _run(self, images: Tensor, hook: Any) -> Tensor:
        """Final-norm tokens of [CLS, patches, extra] with ``hook(block, activations)`` on every MLP."""
        vit = self.network.vit
        x = vit._pos_embed(vit.patch_embed(self.network.normalize(images)))
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[-1])], dim=1)
        handles = [b.mlp.act.register_forward_hook(lambda m, i, o, k=k: hook(k, o)) for k, b in enumerate(vit.blocks)]
        try:
            return vit.norm(vit.blocks(vit.norm_pre(x)))
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def calibrate(self, images: Tensor) -> dict[int, Tensor]:
        acts: dict[int, Tensor] = {}
        tokens = self._run(images, lambda k, out: acts.__setitem__(k, out.abs()))
        norms = tokens[:, 1:-1].norm(dim=-1)  # patch tokens at the last block
        median = norms.median(dim=1, keepdim=True).values
        mad = (norms - median).abs().median(dim=1, keepdim=True).values
        outliers = norms > median + 3 * mad  # [B, N]
        has = outliers.any(dim=1)
        if not has.any():
            raise ValueError("test-time registers: no image has an outlier token to locate register neurons with")
        weights = outliers[has].float() / outliers[has].sum(dim=1, keepdim=True)
        scores = torch.stack([torch.einsum("bn,bnh->h", weights, acts[k][has, 1:-1]) / has.sum()
                              for k in sorted(acts)])  # fmt: skip
        top = scores.flatten().topk(min(self.top_k, scores.numel())).indices
        width = scores.shape[1]
        self.neurons = {}
        for block in sorted({int(i) // width for i in top}):
            self.neurons[block] = torch.tensor([int(i) % width for i in top if int(i) // width == block])
        return self.neurons

    def dense_features(self, images: Tensor) -> Tensor:
        if not self.neurons:
            raise RuntimeError("TestTimeRegisters: call calibrate(images) first")

        def shift(block: int, out: Tensor) -> None:
            idx = self.neurons.get(block)
            if idx is not None:
                idx = idx.to(out.device)
                out[:, -1, idx] = out[:, :, idx].max(dim=1).values
                out[:, 1:-1, idx] = 0

        tokens = self._run(images, shift)[:, 1:-1]
        h, w = self.network.grid_for(images.shape[-2:])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def tensors_sha256(module: nn.Module) -> str:
    """sha256 of a module's state (names, shapes and bytes): the identity of an in-memory teacher."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class PHReg(DistillModule):
    """PH-Reg (``distill_main.py``): ``teacher`` a frozen ``TimmViT`` (e.g. ``Teacher(weights=zoo:NAME)``),
    run at the data's resolution with an interpolated positional embedding; the student is a copy of it plus
    ``num_registers`` registers (built here unless given) with ``unlock`` (``phreg``: registers, positional
    embedding, patch embedding, last block; ``registers``: the registers alone); ``value_last_block`` for a CLIP
    teacher (:func:`modules.nets.clip.clip_vit`), as the official CLIP student. Terms ``cosine`` and ``mse``
    (``loss_weights`` scale them, ``mse`` 1.0 as the official run); ``views`` TTA passes per target.
    Training targets are precomputed once (``target_file``, else a file named by the teacher's and the
    images' sha256 under the zoo cache) for the un-augmented training images; validation and test report
    ``cos`` of the student's features to live TTA targets."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module | None = None,
        num_registers: int = 16,
        unlock: Literal["phreg", "registers"] = "phreg",
        value_last_block: bool = False,
        views: int = 10,
        candidates: int = 100,
        max_shift: int | None = None,
        target_file: str | None = None,
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student or nn.Identity(), teacher, None, loss_weights, optimizer, lr_scheduler)
        network = self.teacher.network
        if not isinstance(network, TimmViT):
            raise TypeError(f"PH-Reg's teacher must be a TimmViT, got {type(network).__name__}")
        self.teacher.network = network.as_dynamic().requires_grad_(False).eval()
        if student is None:
            self.student = RegisterViT.from_vit(self.teacher.network, num_registers, value_last_block)
        if not isinstance(self.student, RegisterViT):
            raise TypeError(f"PH-Reg's student must be a RegisterViT, got {type(self.student).__name__}")
        self.unlocked = self.student.unlock(unlock)
        self.views, self.candidates, self.max_shift = views, candidates, max_shift
        self.target_file = target_file
        self.train_targets: outputs.TeacherOutputs | None = None
        self.train_ids: list[str] = []
        self._held_out: dict[tuple[str, tuple[int, ...]], Tensor] = {}  # (stage, sample indices) -> live targets

    @property
    def patch(self) -> int:
        return self.teacher.network.patch_size[0]

    def teacher_sha256(self) -> str:
        return self.teacher.manifest.get("sha256") or tensors_sha256(self.teacher.network)

    def targets_for(self, images: Tensor, seed: int) -> Tensor:
        """Live TTA targets of the frozen teacher (views drawn from ``seed``)."""
        grid = tta_grid(self.teacher.network, images)
        views = tta_views(grid, self.views, self.candidates, self.max_shift, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return tta_dense(self.teacher.network.dense_features, images, views, self.patch)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit" or self._trainer is None or self.train_targets is not None:
            return
        datamodule = self.trainer.datamodule
        if getattr(datamodule, "train_transform", "none") != "none":
            raise ValueError(
                f"PHReg precomputes each training image's targets once, for the image as stored; the datamodule's "
                f"train_transform is {datamodule.train_transform!r}: use train_transform: none"
            )
        self.train_ids = list(datamodule.sample_ids("train"))
        teacher_sha = self.teacher_sha256()
        path = Path(self.target_file) if self.target_file else (
            store.cache_dir() / "phreg" / f"targets-{teacher_sha[:16]}-{outputs.ids_sha256(self.train_ids)[:16]}"
            f"-{self.views}v.safetensors")  # fmt: skip
        if path.is_file():
            found = store.read_outputs(str(path), teacher_sha256=teacher_sha)
            self.train_targets = store.read_outputs(str(path), self.train_ids, teacher_sha)  # refuses other images
            rank_zero_info(f"PHReg: training targets from {path} ({len(found.ids)} images)")
            return
        dataset = datamodule.dataset("train")
        rank_zero_info(f"PHReg: computing the {self.views}-view TTA targets of {len(dataset)} images into {path}")
        rows = []
        for start in range(0, len(dataset), 8):
            images = torch.stack([dataset[i]["image"] for i in range(start, min(start + 8, len(dataset)))])
            rows.append(self.targets_for(images.to(self.device), seed=start).cpu())
        path.parent.mkdir(parents=True, exist_ok=True)
        source = str(self.teacher.manifest.get("source"))
        outputs.write_outputs(path, {"dense": torch.cat(rows)}, self.train_ids, source, teacher_sha)
        self.train_targets = store.read_outputs(str(path), self.train_ids, teacher_sha)

    def distill_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        assert self.train_targets is not None, "setup('fit') prepares the targets"
        ids = [self.train_ids[int(i)] for i in batch["index"]]
        target = self.train_targets.rows(ids)["dense"].to(batch["image"])
        return phreg_loss(self.student.dense_features(batch["image"]), target)

    def evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        """``cos`` and ``mse`` to the held-out images' TTA targets, computed live once per batch of images and
        kept in memory (never saved): the frozen teacher and the batch's seed make them the same every epoch."""
        images = batch["image"]
        key = (stage, tuple(int(i) for i in batch["index"]))
        if key not in self._held_out:
            self._held_out[key] = self.targets_for(images, seed=key[1][0]).cpu()
        target = self._held_out[key].to(images.device)
        terms = phreg_loss(self.student.dense_features(images), target)
        return {"cos": 1 - terms["cosine"], "mse": terms["mse"]}

    def batch_size(self, batch: Any) -> int:
        return int(batch["image"].shape[0])


class OutlierShare(Metric):
    """Share of patch tokens whose feature norm exceeds median + 3 MAD of all tokens seen (the high-norm
    artifacts registers absorb), pooled over every update; features [B, D, h, w]."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("norms", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor) -> None:
        self.norms.append(features.detach().float().norm(dim=1).flatten())

    def compute(self) -> Tensor:
        norms = torch.cat(self.norms) if isinstance(self.norms, list) else self.norms
        median = norms.median()
        mad = (norms - median).abs().median()
        return (norms > median + 3 * mad).float().mean()


class PositionalShare(Metric):
    """Share of the features' variance explained by grid position, ||E_img[f | pos] - E[f]||^2 / Var(f),
    pooled over every update (one grid size); features [B, D, h, w]. Near 0: position carries nothing."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")  # sum of squared norms
        self.add_state("per_cell", default=torch.tensor(0.0), dist_reduce_fx="sum")  # [D, h, w] sums

    def update(self, features: Tensor) -> None:
        f = features.detach().double()
        self.count += f.shape[0]
        self.total += (f**2).sum()
        self.per_cell = self.per_cell + f.sum(dim=0)

    def compute(self) -> Tensor:
        cells = self.per_cell[0].numel()
        n = self.count * cells  # tokens seen
        overall = self.per_cell.sum(dim=(1, 2)) / n  # [D]
        variance = self.total / n - (overall**2).sum()
        cell_means = self.per_cell / self.count  # [D, h, w]
        positional = ((cell_means - overall[:, None, None]) ** 2).sum() / cells
        return (positional / variance).float()
