"""Image datamodules, on :class:`datamodules.base.BaseDataModule` and :mod:`datamodules.splits`:
:mod:`.folder` (``ImageFolderDataModule``: classification from a torchvision ImageFolder tree, labelled or
unlabelled, rendered shapes as the embedded default) and :mod:`.segmentation` (``SegmentationDataModule``: SegNet's
CamVid layout of images and class-id label PNGs, generated road scenes as the embedded default). Images are float
[0, 1] RGB tensors; normalisation lives inside the networks."""

from datamodules.images.folder import ImageFolderDataModule, read_image, scan_image_folder
from datamodules.images.segmentation import CAMVID_CLASSES, SegmentationDataModule, read_label

__all__ = [
    "CAMVID_CLASSES",
    "ImageFolderDataModule",
    "SegmentationDataModule",
    "read_image",
    "read_label",
    "scan_image_folder",
]
