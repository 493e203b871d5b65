"""Graph sets stored in the zoo (a distilled training set is a ``kind: dataset`` entry): a list of PyG graphs
as flat safetensors tensors and back, as an ``InMemoryDataset``. Entries name this loader by class path; the
zoo builds only ``@stored_dataset`` classes, so it knows no field itself."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.data.collate import collate

from zoo.datasets import check_graphs
from zoo.specs import stored_dataset

__all__ = ["GraphSet"]


@stored_dataset
class GraphSet(InMemoryDataset):
    """An in-memory torch-geometric dataset built from a list of ``Data`` (no files, no processing)."""

    def __init__(self, graphs: Sequence[Data] | None = None) -> None:
        super().__init__(root=None)
        if graphs is not None:
            self.data, self.slices = self.collate(list(graphs))

    @classmethod
    def to_tensors(cls, graphs: Sequence[Data]) -> dict[str, torch.Tensor]:
        """Flatten graphs into ``data.<attr>`` (concatenated) and ``slices.<attr>`` (offsets) tensors."""
        if not graphs:
            raise ValueError("cannot store an empty graph set")
        # PyG's own collate, called directly: InMemoryDataset.collate returns no slices for a single graph
        data, slices, _ = collate(Data, list(graphs), increment=False, add_batch=False)
        out = {f"data.{k}": v.contiguous() for k, v in data.to_dict().items() if isinstance(v, torch.Tensor)}
        out.update({f"slices.{k}": v.contiguous() for k, v in slices.items() if f"data.{k}" in out})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> GraphSet:
        """Inverse of :meth:`to_tensors`; the graphs are checked (finite features, edges in range)."""
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
