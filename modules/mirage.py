"""Mirage (Gupta et al., ICLR 2024, arXiv 2310.09486): model-agnostic graph dataset distillation.

The distilled dataset is mined from computation trees (``modules/mirage_mining.py``); this file holds
the GNNs trained on it and the Lightning module that trains them. Follows idea-iitd/Mirage
``ogbg-molhiv/model/{model,gnns_edge2,custom_pool}.py`` (node and edge encoders, GIN/GCN/GAT layers,
sum pooling over the root nodes of the distilled samples) and ``optimization/train_and_test.py``
(cross-entropy, ROC-AUC on the original validation and test graphs).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import GATConv, GCNConv, GINConv, GINEConv
from torch_geometric.utils import scatter
from torchmetrics import AUROC, Accuracy, MetricCollection

from modules.core import DistillModule
from zoo.specs import exportable

Pool = Literal["root_sum", "sum", "mean"]


def graph_pool(h: Tensor, batch: Tensor, num_graphs: int, pool: Pool, root_mask: Tensor | None = None) -> Tensor:
    """Graph embeddings [B, d] from node embeddings h [N, d] with graph ids ``batch`` [N].

    ``root_sum``: the sum over the roots of a distilled sample's trees (``root_mask`` [N] bool), so
    each tree contributes exactly its root node's embedding, as in the original graph; on an
    original graph (no ``root_mask``) every node is a root, i.e. plain sum pooling. ``sum``: every
    node of the sample (the official Python variant). ``mean``: the mean over the same nodes as
    ``root_sum`` (the ablation that shows why sum pooling matters).
    """
    if pool not in ("root_sum", "sum", "mean"):
        raise ValueError(f"unknown pool {pool!r}; expected root_sum, sum or mean")
    if pool != "sum" and root_mask is not None:
        h, batch = h[root_mask], batch[root_mask]
    return scatter(h, batch, dim=0, dim_size=num_graphs, reduce="mean" if pool == "mean" else "sum")


@exportable
class MirageGNN(nn.Module):
    """GIN, GCN or GAT graph classifier with a linear node encoder, optional edge-label encoder,
    ReLU + dropout between layers, pooling (``graph_pool``) and dropout + a linear head.

    GIN uses GINE layers (edge embeddings added to messages) when the data has edge labels; GAT
    uses them as attention edge features; GCN ignores them, as the official ``gnns_edge2.py`` does
    for its GCN. Edges of distilled samples point child -> parent, so after ``num_layers`` layers
    a root's embedding equals its node's embedding in the original graph (for depth-L trees).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int = 2,
        hidden_channels: int = 64,
        num_layers: int = 2,
        conv: Literal["gin", "gcn", "gat"] = "gin",
        edge_channels: int = 0,
        dropout: float = 0.5,
        pool: Pool = "root_sum",
    ) -> None:
        super().__init__()
        self.node_encoder = nn.Linear(in_channels, hidden_channels)
        self.edge_encoders = nn.ModuleList()
        self.convs = nn.ModuleList()
        for _ in range(num_layers):
            if conv == "gin":
                mlp = nn.Sequential(
                    nn.Linear(hidden_channels, hidden_channels), nn.ReLU(), nn.Linear(hidden_channels, hidden_channels)
                )
                self.convs.append(GINEConv(mlp, edge_dim=hidden_channels) if edge_channels else GINConv(mlp))
            elif conv == "gcn":
                self.convs.append(GCNConv(hidden_channels, hidden_channels))
            elif conv == "gat":
                edge_dim = hidden_channels if edge_channels else None
                self.convs.append(GATConv(hidden_channels, hidden_channels, heads=1, edge_dim=edge_dim))
            else:
                raise ValueError(f"unknown conv {conv!r}; expected gin, gcn or gat")
            if edge_channels and conv != "gcn":
                self.edge_encoders.append(nn.Linear(edge_channels, hidden_channels))
        self.conv, self.pool = conv, pool
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_channels, num_classes)

    def forward(self, batch: Batch) -> Tensor:
        """Logits [B, num_classes] for a PyG batch (``x``, ``edge_index``, optional ``edge_attr``,
        ``batch``, optional ``root_mask``)."""
        h = self.node_encoder(batch.x)
        for i, conv in enumerate(self.convs):
            if self.edge_encoders:
                h = conv(h, batch.edge_index, self.edge_encoders[i](batch.edge_attr))
            else:
                h = conv(h, batch.edge_index)
            if i < len(self.convs) - 1:
                h = self.dropout(F.relu(h))
        graph_ids = batch.batch if batch.batch is not None else h.new_zeros(h.size(0), dtype=torch.long)
        g = graph_pool(h, graph_ids, batch.num_graphs, self.pool, getattr(batch, "root_mask", None))
        return self.head(self.dropout(g))


class GraphClassification(DistillModule):
    """Trains a graph classifier with cross-entropy and scores ROC-AUC (binary) and accuracy.

    Used for every Mirage arm: the GNN on the distilled set, on the full training set, and on a
    random subset; which set is the datamodule's choice (``datamodules.graphs.MirageDataModule``).
    No teacher: Mirage distils the data, not a model.
    """

    def __init__(
        self,
        student: nn.Module,
        init_weights: str | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student=student, init_weights=init_weights, optimizer=optimizer, lr_scheduler=lr_scheduler)

    def configure_metrics(self) -> MetricCollection:
        """Epoch-level ROC-AUC and accuracy over the stage's graphs (not batch means)."""
        num_classes = int(getattr(self.student, "init_args", {}).get("num_classes", 2))
        task = "binary" if num_classes == 2 else "multiclass"
        kwargs = {} if task == "binary" else {"num_classes": num_classes}
        return MetricCollection({"auroc": AUROC(task=task, **kwargs), "acc": Accuracy(task=task, **kwargs)})

    def batch_size(self, batch: Batch) -> int:
        return int(batch.num_graphs)

    def distill_loss(self, batch: Batch) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(self.student(batch), batch.y.view(-1))}

    def evaluate(self, batch: Batch, stage: str) -> dict[str, object]:
        logits = self.student(batch)
        y = batch.y.view(-1)
        scores = logits.softmax(-1)[:, 1] if logits.size(-1) == 2 else logits.softmax(-1)
        self.stage_metrics[stage].update(scores, y)
        return {}

    def predict_step(self, batch: Batch, batch_idx: int = 0) -> Tensor:
        return self.student(batch).softmax(-1)


@exportable
class GraphSizeClassifier(nn.Module):
    """The graph-size baseline: logistic regression on the node count (log and linear terms).

    Mirage's official NCI1 settings (weight decay 1e2) score what ranking graphs by their number
    of nodes scores, so every Mirage comparison carries this arm to show what size alone explains.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.linear = nn.Linear(2, num_classes)

    def forward(self, batch: Batch) -> Tensor:
        graph_ids = batch.batch if batch.batch is not None else torch.zeros(batch.num_nodes, dtype=torch.long)
        ones = torch.ones(graph_ids.size(0), 1, device=graph_ids.device)
        n = scatter(ones, graph_ids, dim=0, dim_size=batch.num_graphs, reduce="sum")
        return self.linear(torch.cat([torch.log1p(n), n / 100.0], dim=-1))
