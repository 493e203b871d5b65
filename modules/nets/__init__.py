"""Networks, blocks and probes shared by methods, one file per family (``vit.py``, ``mae.py``, ``probes.py``,
``images.py``).

The rule: a network lives here only when two or more methods use it; a network one method uses lives in
that method's file. A method file imports ``modules.core``, ``modules.nets`` and ``zoo`` only, and this
package imports ``modules.core`` and ``zoo`` only (``tests/test_layers.py`` holds both). Every network here
that can be exported is ``@zoo.specs.exportable``, with plain-data constructor arguments. timm is imported
inside constructors, so importing this package stays cheap.
"""

from modules.nets.images import NormalisedInput
from modules.nets.mae import (
    MAEDecoder,
    MAEEncoder,
    MaskedAutoencoder,
    PatchMask,
    apply_mask,
    mae_pixel_loss,
    patchify,
    random_mask,
    sincos_pos_embed_2d,
    unpatchify,
)
from modules.nets.probes import DenseProbe, DepthProbe, SegmentationProbe, tokens_to_map
from modules.nets.vit import FrameViT, TimmViT

__all__ = [
    "DenseProbe",
    "DepthProbe",
    "FrameViT",
    "MAEDecoder",
    "MAEEncoder",
    "MaskedAutoencoder",
    "NormalisedInput",
    "PatchMask",
    "SegmentationProbe",
    "TimmViT",
    "apply_mask",
    "mae_pixel_loss",
    "patchify",
    "random_mask",
    "sincos_pos_embed_2d",
    "tokens_to_map",
    "unpatchify",
]
