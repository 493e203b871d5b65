"""Image datamodules, on :class:`datamodules.base.BaseDataModule` and :mod:`datamodules.splits`:
:mod:`.folder` (``ImageFolderDataModule``: classification from a torchvision ImageFolder tree, labelled or
unlabelled, rendered shapes as the embedded default), :mod:`.segmentation` (``SegmentationDataModule``: SegNet's
CamVid layout of images and class-id label PNGs, generated road scenes as the embedded default) and :mod:`.depth`
(``MetricDepthDataModule``: generated ray-cast scenes with noisy depth sources for training, real Middlebury 2014 and
Metric3D-layout frames for testing). Images are float [0, 1] RGB tensors; normalisation lives inside the
networks."""

from datamodules.images.depth import MetricDepthDataModule
from datamodules.images.folder import ImageFolderDataModule, read_image, scan_image_folder
from datamodules.images.segmentation import CAMVID_CLASSES, SegmentationDataModule, read_label

__all__ = [
    "CAMVID_CLASSES",
    "ImageFolderDataModule",
    "MetricDepthDataModule",
    "SegmentationDataModule",
    "read_image",
    "read_label",
    "scan_image_folder",
]
