"""Checks and measures of graph data shared by the datamodules and the methods (the bottom layer both may
import): finiteness and edge ranges where graphs enter, and the bytes a set of graphs takes. The loader of
graph-set entries is ``datamodules.graphs.stored.GraphSet``, named by the entries themselves."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch_geometric.data import Data


def check_graphs(graphs: Iterable[Data], what: str = "graph set") -> None:
    """Refuse graphs that would train to NaN or fail deep inside a step: non-finite float features or edge
    attributes, and edge indices outside ``[0, num_nodes)``; the error names the graph and the attribute."""
    for i, g in enumerate(graphs):
        for key in ("x", "edge_attr", "y"):
            t = getattr(g, key, None)
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"{what}: graph {i} has {bad} non-finite value(s) in {key}")
        edge_index = getattr(g, "edge_index", None)
        if isinstance(edge_index, torch.Tensor) and edge_index.numel():
            n = int(g.num_nodes)
            low, high = int(edge_index.min()), int(edge_index.max())
            if low < 0 or high >= n:
                raise ValueError(f"{what}: graph {i} has edge indices in [{low}, {high}] but {n} nodes")


def tensor_bytes(graphs: Iterable[Data]) -> int:
    """Bytes of ``x``, ``edge_index``, ``edge_attr``, ``root_mask`` and ``y`` (those present) over ``graphs``: the
    data size a distilled set is compared by (Mirage's compression ratio)."""
    total = 0
    for g in graphs:
        for key in ("x", "edge_index", "edge_attr", "root_mask", "y"):
            t = getattr(g, key, None)
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total
