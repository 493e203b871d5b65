"""Seeded, small, download-free generators for the embedded default datasets."""

from datamodules.synthetic.csbm import contextual_sbm
from datamodules.synthetic.motifs import planted_motif_graphs
from datamodules.synthetic.phantoms import random_ellipse_phantoms
from datamodules.synthetic.scenes import random_scenes, write_scenes_folder
from datamodules.synthetic.shapes import random_shapes, write_shapes_folder

__all__ = [
    "contextual_sbm",
    "planted_motif_graphs",
    "random_ellipse_phantoms",
    "random_scenes",
    "random_shapes",
    "write_scenes_folder",
    "write_shapes_folder",
]
