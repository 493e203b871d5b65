"""Distilled datasets in the zoo: a list of PyG graphs stored as flat safetensors and loaded back as an
``InMemoryDataset`` (``zoo.load`` of an entry whose ``kind`` is ``dataset``), and their size in bytes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch_geometric.data import Data, InMemoryDataset


class GraphSet(InMemoryDataset):
    """An in-memory torch-geometric dataset built from a list of ``Data`` (no files, no processing)."""

    def __init__(self, graphs: Sequence[Data] | None = None) -> None:
        super().__init__(root=None)
        if graphs is not None:
            self.data, self.slices = self.collate(list(graphs))

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> GraphSet:
        """Inverse of :func:`graphs_to_tensors`."""
        dataset = cls()
        attrs = sorted({k.split(".", 1)[1] for k in tensors if k.startswith("data.")})
        missing = [a for a in attrs if f"slices.{a}" not in tensors]
        if not attrs or missing:
            what = missing or "every attribute"
            raise ValueError(f"not a distillzoo graph set: data/slices tensors missing for {what}")
        dataset.data = Data(**{a: tensors[f"data.{a}"] for a in attrs})
        dataset.slices = {a: tensors[f"slices.{a}"] for a in attrs}
        check_graphs(dataset)
        return dataset


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


def graphs_to_tensors(graphs: Sequence[Data]) -> dict[str, torch.Tensor]:
    """Flatten graphs into ``data.<attr>`` (concatenated) and ``slices.<attr>`` (offsets) tensors."""
    if not graphs:
        raise ValueError("cannot store an empty graph set")
    data, slices = InMemoryDataset.collate(list(graphs))
    out = {f"data.{k}": v.contiguous() for k, v in data.to_dict().items() if isinstance(v, torch.Tensor)}
    out.update({f"slices.{k}": v.contiguous() for k, v in slices.items() if f"data.{k}" in out})
    return out


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
