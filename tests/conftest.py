"""Shared fixtures: a scratch zoo (entries, weights, cache) and a tiny domain-free distillation task."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modules.core import DistillModule, exportable, kd_kl
from zoo import specs

# the toy networks below live in this test package; let the zoo build them as it builds the project's own
specs.TRUSTED_PACKAGES = (*specs.TRUSTED_PACKAGES, "conftest")

REPO = Path(__file__).resolve().parents[1]
# the real datasets (never committed): $DISTILLZOO_DATA, else the team's shared folder beside the repo; tests
# that need one skip when it is absent (CI), and recipes' data:NAME roots resolve there
SHARED_DATA = Path(os.environ.get("DISTILLZOO_DATA") or REPO.parent / "shared" / "data")
if SHARED_DATA.is_dir():
    os.environ.setdefault("DISTILLZOO_DATA", str(SHARED_DATA))


def saved_weights(net: nn.Module, path: Path) -> str:
    """``net``'s tensors and constructor spec as a ``.safetensors`` file, as ``zoo export`` writes one."""
    import json

    from safetensors.torch import save

    from zoo import store

    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    path.write_bytes(save(tensors, metadata={store.SPEC_KEY: json.dumps(specs.module_spec(net), sort_keys=True)}))
    return str(path)


@pytest.fixture
def scratch_zoo(tmp_path, monkeypatch):
    """An empty zoo: entries, weights and download cache in tmp_path."""
    entries, weights, cache = tmp_path / "entries", tmp_path / "weights", tmp_path / "cache"
    for d in (entries, weights, cache):
        d.mkdir()
    monkeypatch.setenv("DISTILLZOO_ENTRIES", str(entries))
    monkeypatch.setenv("DISTILLZOO_CACHE", str(cache))
    monkeypatch.setenv("DISTILLZOO_WEIGHTS", str(weights))
    return {"entries": entries, "weights": weights, "cache": cache / "weights"}


@exportable
class ToyNet(nn.Module):
    """Linear-BatchNorm-Dropout-Linear; BatchNorm and dropout make a moving teacher easy to catch."""

    def __init__(self, in_dim: int = 8, hidden: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.body(x))


class ToyDistill(DistillModule):
    """CE + KD on vectors: the smallest method that exercises the template."""

    def distill_loss(self, batch):
        x, y = batch
        logits = self.student(x)
        terms = {"ce": F.cross_entropy(logits, y)}
        if self.teacher is not None:
            terms["kd"] = kd_kl(logits, self.teacher(x), temperature=2.0)
        return terms

    def evaluate(self, batch, stage):
        x, y = batch
        return {"acc": (self.student(x).argmax(-1) == y).float().mean()}


class ToyData(L.LightningDataModule):
    def __init__(self, n: int = 64, in_dim: int = 8, classes: int = 3, batch_size: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, in_dim, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)

    test_dataloader = val_dataloader
