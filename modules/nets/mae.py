"""Masked-autoencoder pieces (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners";
facebookresearch/mae ``models_mae.py``), with the mask as a value two networks can share.

DMAE draws the mask in the teacher and applies it to the student; G2SD draws it from one noise tensor for
both. So the mask is a ``PatchMask`` drawn by ``random_mask`` outside any network, and ``MAEEncoder`` /
``MAEDecoder`` take it as an argument. The encoder keeps timm's ``VisionTransformer`` layout (under
``vit.``), so its weights load into ``TimmViT`` for fine-tuning (``MAEEncoder.to_timm_vit``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from modules.nets.vit import IMAGENET_MEAN, IMAGENET_STD, TimmViT
from zoo.specs import exportable

_layer_norm = partial(nn.LayerNorm, eps=1e-6)  # MAE's norm_layer


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"expected an int or an (H, W) pair, got {list(size)}")
    return size


# ----- the shared mask --------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchMask:
    """Which patches an MAE encoder sees, as in the official ``random_masking`` (``models_mae.py``):
    ``ids_keep`` [B, K] the visible patch indices (in shuffled order), ``ids_restore`` [B, N] the inverse
    permutation that puts (visible + mask tokens) back in raster order, ``mask`` [B, N] float with 1 = removed,
    0 = visible."""

    ids_keep: Tensor
    ids_restore: Tensor
    mask: Tensor

    @property
    def num_patches(self) -> int:
        return self.mask.shape[1]

    @property
    def num_visible(self) -> int:
        return self.ids_keep.shape[1]

    def to(self, device: torch.device | str) -> PatchMask:
        return PatchMask(self.ids_keep.to(device), self.ids_restore.to(device), self.mask.to(device))


def num_visible(num_patches: int, ratio: float) -> int:
    """Patches kept at mask ``ratio``: ``round(N * (1 - ratio))``. (The official code truncates with
    ``int()``; the two agree at MAE's 0.75 on 14×14 and 8×8 grids, and rounding gives the visible counts
    the DMAE paper quotes, 10 at 95% and 4 at 98% of 196, where ``int()`` gives 9 and 3.)"""
    return round(num_patches * (1 - ratio))


def random_mask(
    batch: int,
    num_patches: int,
    ratio: float,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> PatchMask:
    """Per-sample random mask by argsort of uniform noise [B, N] (small noise = kept), as the official
    ``random_masking``: ``ids_shuffle = argsort(noise)``, ``ids_restore = argsort(ids_shuffle)``, the first
    ``round(N * (1 - ratio))`` of ``ids_shuffle`` kept. The same ``noise`` always gives the same mask, so
    two networks given one noise tensor (G2SD) see the same patches."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if noise is None:
        noise = torch.rand(batch, num_patches, generator=generator, device=device)
    elif noise.shape != (batch, num_patches):
        raise ValueError(
            f"noise must have shape [batch, num_patches] = {[batch, num_patches]}, got {list(noise.shape)}"
        )
    keep = num_visible(num_patches, ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=noise.device)
    mask[:, :keep] = 0
    return PatchMask(ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore))


def apply_mask(tokens: Tensor, mask: PatchMask) -> Tensor:
    """Patch tokens [B, N, D] -> the visible ones [B, K, D], in ``ids_keep`` order."""
    if tokens.shape[:2] != mask.mask.shape:
        raise ValueError(f"tokens {list(tokens.shape)} do not fit a mask over {list(mask.mask.shape)} patches")
    return torch.gather(tokens, 1, mask.ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


# ----- patches and positions --------------------------------------------------------------------
def sincos_pos_embed_2d(embed_dim: int, grid_size: int | Sequence[int], cls_token: bool = False) -> Tensor:
    """Fixed 2-D sin-cos positional embedding [(1 +) H*W, D] over a raster-ordered grid, as MAE's
    ``get_2d_sincos_pos_embed``: the first D/2 channels encode the column, the last D/2 the row, each as
    [sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (D/4)), k < D/4; a zero row first for the CLS token."""
    if embed_dim % 4:
        raise ValueError(f"a 2-D sin-cos embedding needs embed_dim divisible by 4, got {embed_dim}")
    rows, cols = _pair(grid_size)
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim // 4))

    def encode(pos: Tensor) -> Tensor:
        angles = pos.double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    emb = torch.cat([encode(c.flatten()), encode(r.flatten())], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), p*p*C], patches in raster order, each flattened (row, column, channel)
    as the official ``patchify``."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {(h, w)} is not a multiple of patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: Tensor, patch_size: int, grid: int | Sequence[int] | None = None, channels: int = 3) -> Tensor:
    """The inverse of ``patchify``: [B, N, p*p*C] -> [B, C, H, W]; ``grid`` (rows, columns) defaults to square."""
    b, n, d = patches.shape
    p = patch_size
    if d != p * p * channels:
        raise ValueError(f"patch width {d} is not patch_size**2 * channels = {p * p * channels}")
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"{n} patches do not form a square grid; pass grid=(rows, columns)")
        grid = side
    gh, gw = _pair(grid)
    if gh * gw != n:
        raise ValueError(f"grid {(gh, gw)} does not hold {n} patches")
    x = torch.einsum("bhwpqc->bchpwq", patches.reshape(b, gh, gw, p, p, channels))
    return x.reshape(b, channels, gh * p, gw * p)


def mae_pixel_loss(pred: Tensor, target_images: Tensor, mask: Tensor | PatchMask, norm_pix_loss: bool = True) -> Tensor:
    """MAE's reconstruction loss (``forward_loss`` in ``models_mae.py``): per-patch mean squared error of
    ``pred`` [B, N, p*p*C] against ``patchify(target_images)`` [B, C, H, W], averaged over the removed
    patches only (``mask`` [B, N], 1 = removed). With ``norm_pix_loss`` each target patch is standardised
    by its own mean and unbiased variance (+1e-6). The target is the image as the encoder saw it: pass
    ``encoder.normalize(images)`` to match the official code, which trains on mean/std-normalised pixels."""
    m = mask.mask if isinstance(mask, PatchMask) else mask
    channels = target_images.shape[1]
    p = math.isqrt(pred.shape[-1] // channels)
    if p * p * channels != pred.shape[-1]:
        raise ValueError(f"pred width {pred.shape[-1]} is not patch_size**2 * {channels} channels")
    target = patchify(target_images, p)
    if target.shape != pred.shape:
        raise ValueError(f"pred {list(pred.shape)} does not match the patchified target {list(target.shape)}")
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * m).sum() / m.sum()


def _mae_init_(module: nn.Module) -> None:
    """MAE's initialisation (``initialize_weights``): xavier-uniform linears with zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _block_indices(indices: Sequence[int] | None, depth: int) -> list[int]:
    picked = []
    for i in indices or ():
        j = int(i) + depth if int(i) < 0 else int(i)
        if not 0 <= j < depth:
            raise ValueError(f"block index {i} is out of range for {depth} blocks")
        picked.append(j)
    return picked


# ----- encoder and decoder ----------------------------------------------------------------------
@exportable
class MAEEncoder(nn.Module):
    """The MAE encoder (``MaskedAutoencoderViT.forward_encoder`` in facebookresearch/mae ``models_mae.py``) on
    timm's ``VisionTransformer``: patch embed, fixed sin-cos positional embedding, keep the visible patches of
    a ``PatchMask``, prepend CLS (+ its zero position), blocks, final norm. ``forward(images, mask, indices)``
    returns the latent [B, 1 + K, D] and the outputs of blocks ``indices`` (0-based, before the final norm:
    DMAE aligns pre-norm block outputs). Images are in [0, 1] and normalised inside with ``mean``/``std``.
    Initialised as official (xavier-uniform linears and patch projection, CLS ~ N(0, 0.02)).
    """

    def __init__(
        self,
        img_size: int | list[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        img = _pair(img_size)
        self.vit = VisionTransformer(
            img_size=img, patch_size=patch_size, in_chans=in_chans, num_classes=0, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, class_token=True,
            global_pool="token", weight_init="skip",
        )  # fmt: skip
        grid = tuple(self.vit.patch_embed.grid_size)
        self.vit.pos_embed.requires_grad_(False)  # fixed, as official
        with torch.no_grad():
            self.vit.pos_embed.copy_(sincos_pos_embed_2d(embed_dim, grid, cls_token=True)[None])
        _mae_init_(self.vit)
        w = self.vit.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.data.view(w.shape[0], -1))  # like a linear layer, not a conv
        nn.init.normal_(self.vit.cls_token, std=0.02)
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f"MAEEncoder: mean {list(mean)} and std {list(std)} need {in_chans} values each")
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, -1, 1, 1), persistent=False)

    @property
    def patch_size(self) -> int:
        return int(self.vit.patch_embed.patch_size[0])

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def num_patches(self) -> int:
        return int(self.vit.patch_embed.num_patches)

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def num_prefix_tokens(self) -> int:
        return 1

    def grid_for(self, size: Sequence[int]) -> tuple[int, int]:
        if tuple(int(s) for s in size[-2:]) != tuple(self.vit.patch_embed.img_size):
            raise ValueError(f"MAEEncoder: input size {tuple(size[-2:])} is not {tuple(self.vit.patch_embed.img_size)}")
        return self.grid_size

    def normalize(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std

    def random_mask(
        self, batch: int, ratio: float, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> PatchMask:
        """A ``random_mask`` over this encoder's patches, on its device."""
        return random_mask(batch, self.num_patches, ratio, noise, generator, device=self.vit.cls_token.device)

    def forward(
        self, images: Tensor, mask: PatchMask | None = None, indices: Sequence[int] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Images [B, C, H, W] in [0, 1] -> (latent [B, 1 + K, D] after the final norm, [block i output
        [B, 1 + K, D] before the norm for i in ``indices``]). ``mask=None`` keeps every patch (K = N)."""
        take = _block_indices(indices, self.depth)
        x = self._tokens(images, mask)
        hidden: dict[int, Tensor] = {}
        for i, block in enumerate(self.vit.blocks):
            x = block(x)
            if i in take:
                hidden[i] = x
        return self.vit.norm(x), [hidden[i] for i in take]

    def _tokens(self, images: Tensor, mask: PatchMask | None) -> Tensor:
        vit = self.vit
        x = vit.patch_embed(self.normalize(images)) + vit.pos_embed[:, 1:]
        if mask is not None:
            x = apply_mask(x, mask)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return vit.norm_pre(torch.cat([cls, x], dim=1))

    def forward_until(self, images: Tensor, mask: PatchMask | None, block: int) -> Tensor:
        """The output of block ``block`` (0-based), before the final norm, [B, 1 + K, D]; later blocks are
        not run. DMAE's teacher needs nothing past its aligned block, so it stops there: the paper's
        efficiency argument, which the official code leaves unused (it runs every block and the decoder)."""
        (block,) = _block_indices([block], self.depth)
        x = self._tokens(images, mask)
        for b in self.vit.blocks[: block + 1]:
            x = b(x)
        return x

    def forward_features(self, images: Tensor) -> Tensor:
        """Every patch visible: final-norm tokens [B, 1 + N, D], CLS first (the probes' interface)."""
        return self(images)[0]

    def timm_kwargs(self) -> dict:
        """The ``VisionTransformer`` config of this encoder, for ``TimmViT(timm_kwargs=...)``."""
        vit = self.vit
        return {
            "img_size": list(vit.patch_embed.img_size), "patch_size": self.patch_size,
            "in_chans": vit.patch_embed.proj.in_channels, "embed_dim": self.embed_dim, "depth": self.depth,
            "num_heads": vit.blocks[0].attn.num_heads,
            "mlp_ratio": vit.blocks[0].mlp.fc1.out_features / self.embed_dim,
        }  # fmt: skip

    def to_timm_vit(self, num_classes: int = 0, global_pool: str = "token", **timm_kwargs) -> TimmViT:
        """A ``TimmViT`` carrying these weights (the head, if any, freshly initialised), as MAE fine-tuning
        starts from the pre-trained encoder; its positional embedding becomes learnable there, as official."""
        net = TimmViT(
            timm_kwargs={**self.timm_kwargs(), "num_classes": num_classes, "global_pool": global_pool, **timm_kwargs},
            mean=self.mean.flatten().tolist(),
            std=self.std.flatten().tolist(),
        )
        missing, unexpected = net.vit.load_state_dict(self.vit.state_dict(), strict=False)
        # a fresh head; with global_pool="avg" timm swaps the final norm for a fresh fc_norm, as MAE fine-tuning
        dropped = isinstance(net.vit.norm, nn.Identity)
        if any(not (dropped and k.startswith("norm.")) for k in unexpected) or any(
            not k.startswith(("head.", "fc_norm.")) for k in missing
        ):
            raise RuntimeError(
                f"MAEEncoder.to_timm_vit: weights do not fit: missing {missing}, unexpected {unexpected}"
            )
        return net


@exportable
class MAEDecoder(nn.Module):
    """The MAE decoder (``MaskedAutoencoderViT.forward_decoder`` in facebookresearch/mae ``models_mae.py``):
    ``decoder_embed`` to ``decoder_dim``, a shared mask token for every removed patch, unshuffle with
    ``ids_restore``, fixed sin-cos decoder positional embedding, ``depth`` timm blocks, ``decoder_norm``, and
    ``decoder_pred`` to ``patch_size**2 * in_chans`` pixels per patch (CLS dropped). ``forward_hidden`` stops
    after block ``after_block`` (1-based, so 4 = after four blocks: G2SD's ``suplayer=4`` of 8) and returns
    the hidden state [B, 1 + N, decoder_dim] with CLS, before ``decoder_norm``, as G2SD's targets.
    """

    def __init__(
        self,
        img_size: int | list[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        encoder_dim: int = 1024,
        decoder_dim: int = 512,
        depth: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        h, w = _pair(img_size)
        if h % patch_size or w % patch_size:
            raise ValueError(f"MAEDecoder: img_size {(h, w)} is not a multiple of patch_size {patch_size}")
        self.grid_size = (h // patch_size, w // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_size, self.in_chans = patch_size, in_chans
        self.decoder_embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed_2d(decoder_dim, self.grid_size, cls_token=True)[None], requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=_layer_norm) for _ in range(depth)
        )
        self.decoder_norm = _layer_norm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size**2 * in_chans)
        _mae_init_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def depth(self) -> int:
        return len(self.decoder_blocks)

    def _tokens(self, latent: Tensor, mask: PatchMask | None) -> Tensor:
        x = self.decoder_embed(latent)
        if mask is None:
            if x.shape[1] != self.num_patches + 1:
                raise ValueError(f"without a mask the latent needs 1 + {self.num_patches} tokens, got {x.shape[1]}")
        else:
            if x.shape[1] != mask.num_visible + 1 or mask.num_patches != self.num_patches:
                raise ValueError(
                    f"latent with {x.shape[1]} tokens and a mask keeping {mask.num_visible} of {mask.num_patches} "
                    f"patches do not fit a decoder over {self.num_patches} patches (latent = CLS + visible)"
                )
            filler = self.mask_token.expand(x.shape[0], self.num_patches - mask.num_visible, -1)
            patches = torch.cat([x[:, 1:], filler], dim=1)
            patches = torch.gather(patches, 1, mask.ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1], patches], dim=1)
        return x + self.decoder_pos_embed

    def forward_hidden(self, latent: Tensor, mask: PatchMask | None, after_block: int) -> Tensor:
        """The hidden state after ``after_block`` blocks (1..depth), before ``decoder_norm``:
        [B, 1 + N, decoder_dim], CLS first, patches in raster order. Later blocks are not run."""
        if not 1 <= after_block <= self.depth:
            raise ValueError(f"after_block must be in 1..{self.depth}, got {after_block}")
        x = self._tokens(latent, mask)
        for block in self.decoder_blocks[:after_block]:
            x = block(x)
        return x

    def forward(self, latent: Tensor, mask: PatchMask | None = None) -> Tensor:
        """Encoder latent [B, 1 + K, encoder_dim] -> predicted pixels [B, N, patch_size**2 * in_chans]."""
        x = self.forward_hidden(latent, mask, self.depth)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


@exportable
class MaskedAutoencoder(nn.Module):
    """An MAE as one network (``MaskedAutoencoderViT`` in facebookresearch/mae ``models_mae.py``): an
    ``MAEEncoder`` and an ``MAEDecoder`` over the same patch grid. This is the checkpoint DMAE's and G2SD's
    teachers are (G2SD reads the decoder's hidden state) and the network MAE pre-training trains.
    ``forward(images, mask)`` predicts the pixels of every patch [B, N, p*p*C]; ``loss`` is MAE's masked
    pixel loss on the encoder's normalised images (``norm_pix_loss`` as the recipe says; DMAE's pretrain.sh
    leaves it off, MAE's default turns it on)."""

    def __init__(
        self,
        img_size: int | list[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.norm_pix_loss = norm_pix_loss
        self.encoder = MAEEncoder(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, mean, std)
        self.decoder = MAEDecoder(img_size, patch_size, in_chans, embed_dim, decoder_dim, decoder_depth,
                                  decoder_heads, mlp_ratio)  # fmt: skip

    def forward(self, images: Tensor, mask: PatchMask | None = None) -> Tensor:
        latent, _ = self.encoder(images, mask)
        return self.decoder(latent, mask)

    def loss(self, pred: Tensor, images: Tensor, mask: PatchMask) -> Tensor:
        """MAE's pixel loss of ``pred`` on the removed patches of ``images`` (as the encoder normalises them)."""
        return mae_pixel_loss(pred, self.encoder.normalize(images), mask, self.norm_pix_loss)
