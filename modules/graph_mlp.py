"""FF-G2M (Wu et al., AAAI 2024, arXiv 2305.10758) and GLNN (Zhang et al., ICLR 2022): GNN-to-MLP.

A GNN teacher's soft labels are distilled into an MLP that needs no graph at inference. Follows
LirongWu/FF-G2M ``src/models.py`` (networks, ``edge_distribution_low/high``) and
``src/train_and_eval.py`` (loss mixing and the ablation modes), and snap-research/
graphless-neural-networks ``train_student.py`` for GLNN.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GCNConv, SAGEConv
from torch_geometric.utils import add_self_loops, remove_self_loops
from torchmetrics.functional import accuracy

from modules.core import DistillModule, Teacher, kd_kl
from zoo.specs import exportable

Mode = Literal["ce", "mlp", "glnn", "lfd", "hfd", "ffg2m"]


def row_normalize(x: Tensor) -> Tensor:
    """Divide each row by its sum (all-zero rows stay zero), as the official Planetoid loader does."""
    return x / x.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def lfd_loss(student_logits: Tensor, teacher_logits: Tensor, edge_index_with_loops: Tensor) -> Tensor:
    """Low-frequency distillation: mean over edges (j, i) of ``KL(p_T(j) || p_S(i))``.

    student_logits [N, C], teacher_logits [N, C], edge_index_with_loops [2, E+N] -> scalar. The
    self loops make it contain GLNN's node-wise KD term (official ``edge_distribution_low``).
    """
    src, dst = edge_index_with_loops
    return kd_kl(student_logits[dst], teacher_logits[src], temperature=1.0)


def hfd_loss(student_logits: Tensor, teacher_logits: Tensor, edge_index: Tensor, tau: float) -> Tensor:
    """High-frequency distillation: KL between ``softmax(|z_i - z_j| / tau)`` of teacher and student.

    student_logits [N, C], teacher_logits [N, C], edge_index [2, E] without self loops -> scalar;
    mean over edges, no tau^2 factor (official ``edge_distribution_high`` with KLDivLoss batchmean).
    """
    src, dst = edge_index
    student_diff = (student_logits[src] - student_logits[dst]).abs()
    teacher_diff = (teacher_logits[src] - teacher_logits[dst]).abs()
    return kd_kl(student_diff, teacher_diff, temperature=tau, scale_t2=False)


@exportable
class MLP(nn.Module):
    """The graph-free student: ``num_layers`` Linear layers with ReLU and dropout between them.

    Row-normalises its input inside (``normalize_features``), so the exported student takes node
    features exactly as PyG's ``Planetoid`` returns them. Official ``src/models.py::MLP``.
    """

    needs_graph = False

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        normalize_features: bool = True,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.dropout = nn.Dropout(dropout)
        self.normalize_features = normalize_features

    def forward(self, x: Tensor, edge_index: Tensor | None = None) -> Tensor:
        h = row_normalize(x) if self.normalize_features else x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h


@exportable
class GNN(nn.Module):
    """GCN, GAT or GraphSAGE teacher with the official code's layer layout (torch-geometric layers).

    GCN: symmetric-normalised ``GCNConv`` with self loops, ReLU + dropout between layers. GAT: 4
    heads of ``hidden // heads`` channels, attention dropout 0.3, heads concatenated and a final
    one-head layer. SAGE: DGL's 'gcn' aggregator, i.e. the mean over the neighbourhood including
    the node itself and no separate root weight. Official ``src/models.py``.
    """

    needs_graph = True

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        num_layers: int = 2,
        dropout: float = 0.5,
        conv: Literal["gcn", "gat", "sage"] = "gcn",
        heads: int = 4,
        attn_dropout: float = 0.3,
        normalize_features: bool = True,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
        self.layers = nn.ModuleList()
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            last = i == num_layers - 1
            if conv == "gcn":
                self.layers.append(GCNConv(a, b))
            elif conv == "sage":
                self.layers.append(SAGEConv(a, b, aggr="mean", root_weight=False))
            elif conv == "gat":
                n_heads = 1 if last else heads
                self.layers.append(GATConv(a, b if last else b // heads, heads=n_heads, dropout=attn_dropout))
            else:
                raise ValueError(f"unknown conv {conv!r}; expected gcn, gat or sage")
        self.conv = conv
        self.dropout = nn.Dropout(dropout)
        self.normalize_features = normalize_features

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = row_normalize(x) if self.normalize_features else x
        if self.conv == "sage":
            edge_index = add_self_loops(remove_self_loops(edge_index)[0], num_nodes=x.size(0))[0]
        for i, layer in enumerate(self.layers):
            h = layer(h, edge_index)
            if i < len(self.layers) - 1:
                h = F.elu(h) if self.conv == "gat" else F.relu(h)
                h = self.dropout(h)
        return h


def check_graph(data: Data, in_channels: int | None, num_classes: int | None) -> None:
    """Refuse a graph the student cannot use, naming the problem (widths, labels, masks)."""
    if in_channels is not None and data.x.size(-1) != in_channels:
        raise ValueError(f"graph has {data.x.size(-1)} node features but the student expects in_channels={in_channels}")
    if data.train_mask.sum() == 0:
        raise ValueError("the graph's train_mask is empty: no labelled node to train on")
    if num_classes is not None:
        labelled = data.y[data.train_mask | data.val_mask | data.test_mask]
        low, high = int(labelled.min()), int(labelled.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels span [{low}, {high}] but the student has {num_classes} classes [0, {num_classes - 1}]"
            )


class FFG2M(DistillModule):
    """One module for the GNN-to-MLP family, the arm chosen by ``mode`` (official ablation modes).

    ``ce`` (alias ``mlp``): cross-entropy on labelled nodes only (trains the GNN teacher, or the
    MLP without a teacher); ``glnn``: lambda*CE + (1-lambda)*KD over all nodes; ``lfd`` / ``hfd``: one FF-G2M
    term; ``ffg2m``: lambda*CE + (1-lambda)*(LFD + HFD). Full batch: the teacher's logits for the
    training graph are computed once per fit with the frozen teacher and reused every epoch.
    """

    def __init__(
        self,
        student: nn.Module | None = None,
        teacher: Teacher | None = None,
        init_weights: str | None = None,
        mode: Mode = "ffg2m",
        lamb: float = 0.4,
        tau: float = 1.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        mode = "ce" if mode == "mlp" else mode  # the official code calls the no-teacher arm "vanilla MLP"
        kd = 1.0 - lamb
        weights = {"ce": 1.0} if mode == "ce" else {"ce": lamb, "kd": kd, "lfd": kd, "hfd": kd}
        super().__init__(
            student=student,
            teacher=teacher,
            init_weights=init_weights,
            loss_weights=weights,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
        )
        if mode not in ("ce", "glnn", "lfd", "hfd", "ffg2m"):
            raise ValueError(f"unknown mode {mode!r}; expected ce (or mlp), glnn, lfd, hfd or ffg2m")
        if mode != "ce" and self.teacher is None:
            raise ValueError(f"mode {mode!r} distils from a teacher; give one or use mode 'ce'")
        self.mode = mode
        self.tau = tau
        self._graph_cache: tuple[tuple[int, int], Tensor, Tensor] | None = None

    def logits(self, data: Data) -> Tensor:
        net = self.student
        return net(data.x, data.edge_index) if getattr(net, "needs_graph", False) else net(data.x)

    def _check(self, data: Data) -> None:
        spec = getattr(self.student, "init_args", {})
        check_graph(data, spec.get("in_channels"), spec.get("out_channels"))

    def _teacher_view(self, data: Data) -> tuple[Tensor, Tensor]:
        """Teacher logits and the self-looped edge index of the training graph, once per fit."""
        key = (data.num_nodes, data.edge_index.size(1))
        if self._graph_cache is None or self._graph_cache[0] != key:
            self._check(data)
            teacher_logits = self.teacher(data.x, data.edge_index)
            loops = add_self_loops(data.edge_index, num_nodes=data.num_nodes)[0]
            self._graph_cache = (key, teacher_logits, loops)
        return self._graph_cache[1], self._graph_cache[2]

    def on_fit_start(self) -> None:
        self._graph_cache = None

    def distill_loss(self, data: Data) -> dict[str, Tensor]:
        if self.mode == "ce" and self.global_step == 0:
            self._check(data)
        h = self.logits(data)
        terms = {"ce": F.cross_entropy(h[data.train_mask], data.y[data.train_mask])}
        if self.mode == "ce":
            return terms
        z, edges_with_loops = self._teacher_view(data)
        if self.mode == "glnn":
            terms["kd"] = kd_kl(h, z)
        if self.mode in ("lfd", "ffg2m"):
            terms["lfd"] = lfd_loss(h, z, edges_with_loops)
        if self.mode in ("hfd", "ffg2m"):
            terms["hfd"] = hfd_loss(h, z, data.edge_index, self.tau)
        return terms

    def evaluate(self, data: Data, stage: str) -> dict[str, Tensor]:
        mask = data.val_mask if stage == "val" else data.test_mask
        h = self.logits(data)
        num_classes = h.size(-1)
        return {
            "acc": accuracy(h[mask], data.y[mask], task="multiclass", num_classes=num_classes),
            "loss": F.cross_entropy(h[mask], data.y[mask]),
        }

    def predict_step(self, data: Data, batch_idx: int = 0) -> dict[str, Tensor]:
        probs = self.logits(data).softmax(dim=-1)
        return {"prob": probs, "pred": probs.argmax(dim=-1)}
