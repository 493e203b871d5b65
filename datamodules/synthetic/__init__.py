"""Seeded, small, download-free generators for the embedded default datasets."""

from datamodules.synthetic.csbm import contextual_sbm
from datamodules.synthetic.motifs import planted_motif_graphs
from datamodules.synthetic.phantoms import random_ellipse_phantoms

__all__ = ["contextual_sbm", "planted_motif_graphs", "random_ellipse_phantoms"]
