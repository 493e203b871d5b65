"""Sparse-view CT (GloReDi): :mod:`.simulation` (parallel-beam FBP at three view counts), :mod:`.readers`
(DICOM series, DeepLesion PNGs) and :mod:`.sparse_view` (``CTDataModule``, with random head phantoms as the
embedded default)."""

from datamodules.ct.readers import read_deeplesion_png, read_dicom_folder, read_dicom_series
from datamodules.ct.simulation import (
    check_slice,
    check_views,
    circle_mask,
    default_pixel_size,
    simulate,
    view_angles,
)
from datamodules.ct.sparse_view import CTDataModule, group_split
from zoo.units import MU_WATER, hu_to_mu, hu_window, mu_to_hu

__all__ = [
    "CTDataModule",
    "MU_WATER",
    "check_slice",
    "check_views",
    "circle_mask",
    "default_pixel_size",
    "group_split",
    "hu_to_mu",
    "hu_window",
    "mu_to_hu",
    "read_deeplesion_png",
    "read_dicom_folder",
    "read_dicom_series",
    "simulate",
    "view_angles",
]
