"""CLIP image towers as ``TimmViT``s: PH-Reg's CLIP path, for users who have the weights.

``clip_vit("ViT-B-16", "openai")`` builds the model with ``open_clip.create_model_and_transforms`` (which
downloads the pretrained tag, or reads it from the Hugging Face / open_clip cache) and carries its visual
tower into a timm ``VisionTransformer`` with timm's own OpenAI-CLIP conversion (``pre_norm``, no patch bias,
``ln_post`` as the final norm, the projection as the head). The result takes images in [0, 1] and
normalises them with CLIP's statistics inside; with ``dense_head`` its ``dense_features`` are the patch
tokens through ``ln_post`` and the projection, the joint image-text space where PH-Reg's CLIP student is
trained and zero-shot segmentation reads its features (0raiser0/PH-Reg ``CLIP/zero_shot/models/student_CLIP.py``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from modules.nets.vit import TimmViT

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _download_hint(model_name: str, pretrained: str) -> str:
    return (
        f'on a machine with network, run `python -c "import open_clip; open_clip.create_model_and_transforms('
        f"'{model_name}', pretrained='{pretrained}')\"` and copy the cache it fills (~/.cache/huggingface and "
        "~/.cache/clip, or $HF_HOME) here; `open_clip.list_pretrained()` lists the tags"
    )


def visual_config(visual: nn.Module) -> dict[str, Any]:
    """The timm ``VisionTransformer`` arguments of an open_clip ``VisionTransformer`` (a plain ViT tower)."""
    from open_clip.transformer import QuickGELU

    blocks = visual.transformer.resblocks
    width = visual.conv1.out_channels
    size = visual.image_size
    return {
        "img_size": list(size) if isinstance(size, (tuple, list)) else size,
        "patch_size": visual.conv1.kernel_size[0],
        "embed_dim": width,
        "depth": len(blocks),
        "num_heads": blocks[0].attn.num_heads,
        "mlp_ratio": blocks[0].mlp.c_fc.out_features / width,
        "pre_norm": True,
        "class_token": True,
        "global_pool": "token",
        "num_classes": visual.proj.shape[1],
        "act_layer": "quick_gelu" if isinstance(blocks[0].mlp.gelu, QuickGELU) else "gelu",
    }


def from_open_clip(visual: nn.Module, dense_head: bool = True, naclip_std: float | None = None) -> TimmViT:
    """A ``TimmViT`` computing exactly what the open_clip image tower ``visual`` computes (its pooled,
    projected embedding as ``forward``), loaded strictly through timm's OpenAI-CLIP conversion; with
    ``naclip_std`` its last block is NACLIP's (:class:`~modules.nets.vit.NACLIPBlock`), PH-Reg's CLIP teacher."""
    from timm.models.vision_transformer import _convert_openai_clip

    if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "conv1"):
        raise TypeError("only plain open_clip ViT towers (no attentional pooler, a conv patch embedding) convert")
    config = {
        "mean": OPENAI_CLIP_MEAN,
        "std": OPENAI_CLIP_STD,
        "norm_eps": float(visual.ln_pre.eps),
        "naclip_std": naclip_std,
    }
    vit = TimmViT(timm_kwargs=visual_config(visual), dense_head=dense_head, **config)
    state = _convert_openai_clip({f"visual.{k}": v for k, v in visual.state_dict().items()}, vit.vit)
    vit.vit.load_state_dict(state)
    return vit


def clip_vit(
    model_name: str = "ViT-B-16", pretrained: str = "openai", dense_head: bool = True, naclip_std: float | None = None
) -> TimmViT:
    """The image tower of open_clip's ``model_name`` at ``pretrained`` as a ``TimmViT`` (see the module).
    PH-Reg's CLIP teacher is ``clip_vit(..., naclip_std=5.0)`` (NACLIP's default Gaussian; its student, built
    by ``RegisterViT.from_vit(..., value_last_block=True)``, keeps the plain last block's weights)."""
    import open_clip

    try:
        model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    except (OSError, RuntimeError) as err:  # offline: huggingface_hub / urllib errors, or an unknown tag
        raise RuntimeError(
            f"clip_vit: the weights of open_clip {model_name!r} at {pretrained!r} could not be loaded "
            f"({type(err).__name__}: {err}); {_download_hint(model_name, pretrained)}"
        ) from err
    return from_open_clip(model.visual, dense_head, naclip_std)
