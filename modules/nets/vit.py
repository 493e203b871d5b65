"""Vision Transformers shared by several methods: an exportable timm ViT that normalises its own input, and
the frame-wise ViT of UNIEGO's video views.

timm is imported inside the constructors: importing this file (as every method file that names a ViT does)
stays cheap for the methods and entries that never build one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.specs import exportable

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _download_hint(model_name: str) -> str:
    import timm

    try:
        hub_id = timm.models.get_pretrained_cfg(model_name).hf_hub_id
    except Exception:  # a hint only; the caller's error is what matters
        hub_id = None
    hub_id = hub_id or f"timm/{model_name}"
    return (
        f"on a machine with network, run `huggingface-cli download {hub_id}` (or "
        f"`timm.create_model({model_name!r}, pretrained=True)`) and copy the Hugging Face cache "
        "(~/.cache/huggingface, or $HF_HOME) here; or build with pretrained=False and load weights from the zoo"
    )


def check_image_size(owner: str, network: Any, datamodule: Any) -> None:
    """Before a fit: the datamodule's square ``image_size`` must be one ``network`` (anything with
    ``grid_for``) can cut into its patches, or a ValueError names both, instead of a shape error deep inside."""
    size = getattr(datamodule, "image_size", None)
    if not isinstance(size, int) or not hasattr(network, "grid_for"):
        return
    try:
        network.grid_for((size, size))
    except ValueError as err:
        raise ValueError(f"{owner}: the data's image_size {size} does not fit the student: {err}") from None


class NACLIPBlock(nn.Module):
    """NACLIP's last block (Hajimiri et al., "Pay Attention to Your Neighbours", WACV 2025), which PH-Reg's CLIP
    teacher runs (0raiser0/PH-Reg ``CLIP/models/augNaCLIP/model.py``, ``custom_attn`` with attention
    ``naclip`` and the ``reduced`` architecture): the attention logits are key-key similarities ``k k^T * scale``
    plus a Gaussian of the patch-grid distance (``std`` in patches, ``exp(-d^2 / 2 std^2)``; nothing for the
    prefix tokens), and the block's output is the attention's output projection alone: no residual, no MLP.
    It holds the timm block's own submodules under their own names, so the state dict is the plain ViT's;
    the grid comes from the patch embedding's output (``record_grid``, a forward hook)."""

    def __init__(self, block: nn.Module, std: float, num_prefix_tokens: int) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError(f"NACLIP's Gaussian needs std > 0 (patches), got {std}")
        for name, child in block.named_children():
            self.add_module(name, child)
        self.std, self.num_prefix_tokens = float(std), num_prefix_tokens
        self.grid: tuple[int, int] | None = None
        self._neighbours: dict[tuple[int, int], Tensor] = {}

    def record_grid(self, embed: nn.Module, args: Any, out: Tensor) -> None:
        self.grid = tuple(out.shape[1:3]) if out.ndim == 4 else tuple(embed.grid_size)

    def neighbours(self, grid: tuple[int, int], device: torch.device, dtype: torch.dtype) -> Tensor:
        """[N, N] Gaussian addition over prefix + h*w tokens (zero rows and columns for the prefix)."""
        if grid not in self._neighbours:
            rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
            cells = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
            gauss = torch.exp(-torch.cdist(cells, cells).pow(2) / (2 * self.std**2))
            self._neighbours[grid] = F.pad(gauss, (self.num_prefix_tokens, 0, self.num_prefix_tokens, 0))
        return self._neighbours[grid].to(device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.attn
        b, n, c = x.shape
        if self.grid is None or self.num_prefix_tokens + self.grid[0] * self.grid[1] != n:
            raise RuntimeError(f"NACLIPBlock: {n} tokens do not match the recorded patch grid {self.grid}")
        qkv = attn.qkv(self.norm1(x)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        k, v = attn.k_norm(qkv[1]), qkv[2]
        logits = k @ k.transpose(-2, -1) * attn.scale + self.neighbours(self.grid, x.device, x.dtype)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return attn.proj(attn.norm(out))


@exportable
class TimmViT(nn.Module):
    """An exportable timm Vision Transformer (Dosovitskiy et al. 2021; timm ``vision_transformer.py``) that
    takes images in [0, 1], as torchvision readers return them, and normalises them inside with ``mean`` /
    ``std`` (non-persistent buffers), so a zoo-loaded ViT needs no preprocessing step. Build it from a timm
    name (``model_name="vit_small_patch16_224"``, ``timm_kwargs`` overriding that model's config) or, with
    ``model_name=None``, from ``timm_kwargs`` alone (``img_size, patch_size, embed_dim, depth, num_heads,
    num_classes, reg_tokens, class_token, global_pool, ...``, passed to ``VisionTransformer``).
    ``mean``/``std`` default to the timm model's pretrained config (augreg ViTs use 0.5, not ImageNet's
    statistics) and otherwise to ImageNet's. ``dynamic_img_size=True`` accepts any input size that is a
    multiple of the patch, interpolating the positional embedding (timm's option), so a ViT trained at 224²
    runs at CamVid's 360×480. ``dense_head`` passes every token of ``dense_features`` through the head (a CLIP
    tower's projection, :mod:`modules.nets.clip`); ``norm_eps`` builds every LayerNorm at that eps.
    ``naclip_std`` (patches) runs the last block as NACLIP's (:class:`NACLIPBlock`), PH-Reg's CLIP teacher. The
    state dict is the timm model's under ``vit.``.
    """

    spec_overrides = {"pretrained": False}  # a rebuilt ViT takes the zoo's weights, never a hub download

    def __init__(
        self,
        model_name: str | None = None,
        pretrained: bool = False,
        timm_kwargs: dict[str, Any] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        dynamic_img_size: bool = False,
        dense_head: bool = False,
        norm_eps: float | None = None,
        naclip_std: float | None = None,
    ) -> None:
        super().__init__()
        import timm
        from timm.models.vision_transformer import VisionTransformer

        kwargs = dict(timm_kwargs or {})
        if norm_eps is not None:  # torch's LayerNorm at this eps (CLIP's 1e-5; timm's ViTs use 1e-6)
            kwargs["norm_layer"] = functools.partial(nn.LayerNorm, eps=norm_eps)
        if "dynamic_img_size" in kwargs:
            raise ValueError("TimmViT: pass dynamic_img_size as its own argument, not inside timm_kwargs")
        if "pretrained" in kwargs:
            raise ValueError("TimmViT: pass pretrained as its own argument, not inside timm_kwargs")
        if model_name is None:
            if pretrained:
                raise ValueError("TimmViT: pretrained=True needs a timm model_name (e.g. 'vit_small_patch16_224')")
            vit = VisionTransformer(dynamic_img_size=dynamic_img_size, **kwargs)
        else:
            if not timm.is_model(model_name):
                close = timm.list_models(f"*{model_name.split('.')[0][:12]}*")[:5]
                hint = f"; close names: {', '.join(close)}" if close else ""
                raise ValueError(f"TimmViT: {model_name!r} is not a timm model name{hint}")
            try:
                vit = timm.create_model(model_name, pretrained=pretrained, dynamic_img_size=dynamic_img_size, **kwargs)
            except OSError as err:  # huggingface_hub's offline / not-found errors are OSErrors
                raise RuntimeError(
                    f"TimmViT: the pretrained weights of timm model {model_name!r} could not be downloaded "
                    f"and are not in the local cache ({type(err).__name__}: {err}); {_download_hint(model_name)}"
                ) from err
            if not isinstance(vit, VisionTransformer):
                raise TypeError(
                    f"TimmViT wraps timm VisionTransformer models; {model_name!r} builds a {type(vit).__name__}"
                )
        self.vit: VisionTransformer = vit
        if naclip_std is not None:
            vit.blocks[-1] = NACLIPBlock(vit.blocks[-1], naclip_std, vit.num_prefix_tokens)
            vit.patch_embed.register_forward_hook(vit.blocks[-1].record_grid)
        self.dense_head = dense_head
        # a named model's own statistics by default: silently wrong normalisation is the classic trap
        cfg = (getattr(vit, "pretrained_cfg", None) or {}) if model_name else {}
        mean = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", IMAGENET_MEAN)))
        std = tuple(float(v) for v in (std if std is not None else cfg.get("std", IMAGENET_STD)))
        channels = vit.patch_embed.proj.in_channels
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"TimmViT: mean {list(mean)} and std {list(std)} need one value per input channel ({channels})"
            )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    # ----- geometry -----------------------------------------------------------------------------
    @property
    def num_prefix_tokens(self) -> int:
        """CLS (if any) plus register tokens, in front of the patch tokens."""
        return int(self.vit.num_prefix_tokens)

    @property
    def reg_tokens(self) -> int:
        return int(self.vit.num_reg_tokens)

    @property
    def has_class_token(self) -> bool:
        return self.vit.cls_token is not None

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.patch_size)

    @property
    def embed_dim(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def num_classes(self) -> int:
        return int(self.vit.num_classes)

    @property
    def img_size(self) -> tuple[int, int]:
        """The resolution the positional embedding was made for."""
        return tuple(self.vit.patch_embed.img_size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, columns) at ``img_size``."""
        return tuple(self.vit.patch_embed.grid_size)

    def grid_for(self, size: Sequence[int]) -> tuple[int, int]:
        """Patch grid (rows, columns) of an input of spatial ``size`` (H, W)."""
        h, w = int(size[-2]), int(size[-1])
        if self.vit.dynamic_img_size:
            return tuple(self.vit.patch_embed.dynamic_feat_size((h, w)))
        if (h, w) != self.img_size:
            raise ValueError(
                f"TimmViT: input size {(h, w)} differs from img_size {self.img_size}; "
                "build with dynamic_img_size=True to run at other resolutions"
            )
        return self.grid_size

    def as_dynamic(self) -> TimmViT:
        """A copy that runs at any multiple of the patch (``dynamic_img_size``, the positional embedding
        interpolated bicubically), with these weights and head: a ViT trained at 32 px on CamVid frames."""
        args = dict(self.init_args, dynamic_img_size=True, pretrained=False)
        args["mean"], args["std"] = self.mean.flatten().tolist(), self.std.flatten().tolist()
        copy = TimmViT(**args)
        copy.vit.load_state_dict(self.vit.state_dict())
        return copy.train(self.training)

    def reset_classes(self, num_classes: int) -> None:
        """A fresh head for ``num_classes`` (timm's ``reset_classifier``), recorded in the export spec, so the
        fine-tuned network is rebuilt with the new head: how a zoo classifier starts on another folder."""
        self.vit.reset_classifier(num_classes)
        self.init_args = dict(
            self.init_args, timm_kwargs=dict(self.init_args.get("timm_kwargs") or {}, num_classes=num_classes)
        )

    # ----- forward ------------------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1] -> the normalised input the timm model sees."""
        return (x - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        """Images [B, C, H, W] in [0, 1] -> the timm model's output (logits, or pooled features when
        ``num_classes=0``)."""
        return self.vit(self.normalize(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """Images -> final-norm tokens [B, num_prefix_tokens + N, D] (prefix first, as timm orders them)."""
        return self.vit.forward_features(self.normalize(x))

    def dense_features(self, x: Tensor) -> Tensor:
        """Images -> final-norm patch tokens as a map [B, D, h, w] (CLS and registers dropped): what dense
        probes and PH-Reg read."""
        tokens = self.forward_features(x)[:, self.num_prefix_tokens :]
        if self.dense_head:  # every token through the head (CLIP's projection into the joint space)
            tokens = self.vit.head(tokens)
        h, w = self.grid_for(x.shape[-2:])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    def block_features(self, x: Tensor, blocks: Sequence[int]) -> list[Tensor]:
        """The outputs of the listed blocks (0-based, before the final norm) as patch maps [B, D, h, w]."""
        return self.vit.forward_intermediates(
            self.normalize(x), indices=list(blocks), output_fmt="NCHW", intermediates_only=True
        )

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        return self.vit.forward_head(features, pre_logits=pre_logits)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        return_prefix_tokens: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        stop_early: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's ``forward_intermediates`` on the normalised images: block outputs (the last ``indices``
        blocks if an int, those listed if a list), as [B, D, h, w] maps (``output_fmt="NCHW"``) or [B, N, D];
        with ``return_prefix_tokens`` each is a (patches, prefix [B, num_prefix_tokens, D]) pair."""
        return self.vit.forward_intermediates(
            self.normalize(x),
            indices=indices,
            norm=norm,
            return_prefix_tokens=return_prefix_tokens,
            output_fmt=output_fmt,
            intermediates_only=intermediates_only,
            stop_early=stop_early,
        )


class FrameViT(nn.Module):
    """A timm ViT on every frame of [B, T, C, H, W] (or on [B, C, H, W]), CLS tokens averaged over time: the
    small-scale stand-in for the frame-wise TimeSformer of UNIEGO's video views (Wenhao-Chi/UNIEGO,
    ``tools/train_proxy.py``). Frames are zero-padded on the bottom and right to whole patches. It is a
    backbone inside ``modules.ego_proxies.ViewNet`` (which is what gets exported), so it is not exportable
    on its own."""

    def __init__(self, frame_shape: tuple[int, int, int], width: int, depth: int, patch_size: int, dropout: float):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        c, h, w = frame_shape
        padded = (-(-h // patch_size) * patch_size, -(-w // patch_size) * patch_size)  # frames are padded to patches
        self.vit = VisionTransformer(
            img_size=padded, patch_size=patch_size, in_chans=c, num_classes=0, embed_dim=width, depth=depth,
            num_heads=max(1, width // 64), drop_rate=dropout,
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        frames = x.flatten(0, 1) if x.ndim == 5 else x
        (ph, pw), (h, w) = self.vit.patch_embed.img_size, frames.shape[-2:]
        feats = self.vit(F.pad(frames, (0, pw - w, 0, ph - h)))
        return feats.view(x.shape[0], -1, feats.shape[-1]).mean(1)
