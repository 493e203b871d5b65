"""Seeded, small, download-free generators for the embedded default datasets."""

from datamodules.synthetic.csbm import contextual_sbm

__all__ = ["contextual_sbm"]
