"""Seeded, small, download-free generators for the embedded default datasets."""

from datamodules.synthetic.csbm import contextual_sbm
from datamodules.synthetic.motifs import planted_motif_graphs

__all__ = ["contextual_sbm", "planted_motif_graphs"]
