"""UNIEGO (arXiv 2606.20559): multi-teacher distillation through proxies, with selective proxy distillation.

Follows Wenhao-Chi/UNIEGO (``tools/train_proxy.py``, ``tools/merging_models.py``,
``tools/train_proxy_gen2.py``). The deployed student sees one weak view; K teachers saw other
views. Stage 1 trains one *proxy* per teacher on the student's view (CE + 1.0 * masked
``1 - cos(P_k c, f_k)``; ``FeatureDistill`` with one teacher), all from one shared CE-trained init.
Their CLS features and logits on every training sample are a teacher-outputs entry (``proxy_outputs``). A
*learned soup* (``learned_soup``: softmax-weighted average of the proxies' parameters, only the K
mixing weights optimised for CE with ``functional_call``; projection heads excluded) initialises the
student. Stage 2, ``SPD``, distils each sample only from proxies that are correct, more confident
than the current student (lower CE) and under the CE floor 4.0: the top-1 of those by CE, with
lambda_f = 5 on ``1 - cos(Q c_S, t_k)`` and lambda_z = 1 on KL(z_k || z_S). Ablations: random
selection, uniform average over all proxies, and naive multi-teacher distillation (``FeatureDistill``
with every teacher's features directly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.func import functional_call
from torchmetrics import Accuracy, MetricCollection

from modules.core import DistillModule, TeacherSet, cosine_distance, kd_kl, masked_mean
from modules.nets.vit import FrameViT
from zoo import store
from zoo.specs import exportable


@exportable
class ViewNet(nn.Module):
    """A classifier on one view: backbone -> feature ``c`` (the CLS token's role) -> linear head.

    ``backbone="cnn"`` for image views [B, 1, H, W] (two conv-ReLU-pool blocks), ``"mlp"`` for
    vectors [B, D] (``num_layers`` Linear-ReLU-dropout), ``"vit"`` for images [B, C, H, W] or video clips
    [B, T, C, H, W] (``in_shape`` (C, H, W) or (T, C, H, W)): a timm ViT (width ``hidden``, ``num_layers``
    blocks, ``patch_size``) on every frame, its CLS tokens averaged over time, as the paper's frame-wise
    TimeSformer at small scale. ``input_max`` divides the input first, so the network takes the view as
    its reader returns it (UCI pix values 0-6: ``input_max=6``). ``forward(x)`` -> logits; ``both(x)`` ->
    (c, logits).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        hidden: int = 128,
        num_layers: int = 2,
        dropout: float = 0.5,
        backbone: Literal["mlp", "cnn", "vit"] = "mlp",
        patch_size: int = 4,
        input_max: float | None = None,
    ) -> None:
        super().__init__()
        self.input_max = input_max
        if backbone == "cnn":
            if len(in_shape) != 3:
                raise ValueError(f"a cnn backbone needs image inputs (C, H, W); got in_shape {list(in_shape)}")
            c, h, w = in_shape
            convs = nn.Sequential(
                nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            )  # fmt: skip
            self.backbone = nn.Sequential(
                convs, nn.Linear(64 * (h // 4) * (w // 4), hidden), nn.ReLU(), nn.Dropout(dropout)
            )
        elif backbone == "mlp":
            widths = [math.prod(in_shape)] + [hidden] * num_layers
            layers: list[nn.Module] = [nn.Flatten()]
            for a, b in zip(widths[:-1], widths[1:]):
                layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
            self.backbone = nn.Sequential(*layers)
        elif backbone == "vit":
            if len(in_shape) not in (3, 4):
                raise ValueError(
                    f"a vit backbone needs (C, H, W) or (T, C, H, W) inputs; got in_shape {list(in_shape)}"
                )
            self.backbone = FrameViT(tuple(in_shape[-3:]), hidden, num_layers, patch_size, dropout)
        else:
            raise ValueError(f"unknown backbone {backbone!r}; expected mlp, cnn or vit")
        self.head = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden

    def both(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.input_max is not None:  # the reader's raw scale (UCI pix: 0-6) -> [0, 1], inside the network
            x = x / self.input_max
        c = self.backbone(x)
        return c, self.head(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.both(x)[1]


def gradient_conflict_rate(params: Sequence[Tensor], losses: Sequence[Tensor]) -> Tensor | None:
    """Share of pairs of per-source losses whose gradients on ``params`` point against each other
    (negative cosine), the paper's measure of conflicting teachers; None with fewer than two sources."""
    grads = []
    for loss in losses:
        parts = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        flat = torch.cat([g.flatten() for g in parts if g is not None]) if any(g is not None for g in parts) else None
        if flat is not None and flat.norm() > 0:
            grads.append(flat)
    if len(grads) < 2:
        return None
    g = F.normalize(torch.stack(grads), dim=1)
    cos = g @ g.T
    pairs = torch.triu_indices(len(grads), len(grads), offset=1)
    return (cos[pairs[0], pairs[1]] < 0).float().mean()


class _Classifier(DistillModule):
    """Shared evaluation: accuracy of the student on ``batch[input_key]``; with ``conflict_every`` > 0,
    the gradient-conflict rate between the per-source distillation terms every that many steps,
    averaged over training and reported beside the test metrics (``test/conflict_rate``)."""

    input_key = "x"
    conflict_every = 0

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": Accuracy("multiclass", num_classes=self.student.head.out_features)})

    def _setup_metrics(self) -> None:
        self._conflicts: list[float] = []

    def _track_conflicts(self, per_source: Sequence[Tensor]) -> None:
        if not self.conflict_every or not self.training or self.global_step % self.conflict_every:
            return
        rate = gradient_conflict_rate([p for p in self.student.backbone.parameters()], per_source)
        if rate is not None:
            self._conflicts.append(float(rate))
            self.log("train/conflict_rate", rate, batch_size=1)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self._conflicts:
            self.log("test/conflict_rate", sum(self._conflicts) / len(self._conflicts))

    def batch_size(self, batch: dict[str, Any]) -> int:
        return batch["y"].shape[0]

    def evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        logits = self.student(batch[self.input_key])
        self.stage_metrics[stage].update(logits, batch["y"])
        return {"loss": F.cross_entropy(logits, batch["y"])}


class FeatureDistill(_Classifier):
    """CE on the student's view, plus ``cos_weight`` * masked (1 - cos(P_k c, f_k)) for each teacher in
    ``teachers`` (name -> feature width; features precomputed, ``batch["features"][name]``). With one
    teacher this is a UNIEGO stage-1 proxy; with all, naive multi-teacher distillation; with none, the
    CE-only baseline (and the shared init of the proxies). ``input_key`` picks the batch's input (a
    teacher view name trains that view's teacher).
    """

    def __init__(
        self,
        student: ViewNet | None = None,
        teachers: dict[str, int] | None = None,
        cos_weight: float = 1.0,
        input_key: str = "x",
        conflict_every: int = 0,
        init_weights: str | None = None,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student, None, init_weights, {"cos": cos_weight}, optimizer, lr_scheduler)
        self.input_key, self.conflict_every = input_key, conflict_every
        self._setup_metrics()
        if teachers:
            self.teacher_set = TeacherSet(dict.fromkeys(teachers), teachers, self.student.feature_dim)
            self.projectors = self.teacher_set.projectors  # optimised with the student, never exported

    def distill_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        c, logits = self.student.both(batch[self.input_key])
        terms = {"ce": F.cross_entropy(logits, batch["y"])}
        if hasattr(self, "teacher_set"):
            losses = self.teacher_set.cosine_losses(c, batch)
            self._track_conflicts(list(losses.values()))
            terms["cos"] = sum(losses.values())
            for name, value in losses.items():
                self.log(f"train/cos_{name}", value.detach(), batch_size=self.batch_size(batch))
        return terms


# ----- proxies: export and learned soup ------------------------------------------------------------
@torch.no_grad()
def proxy_outputs(proxies: dict[str, ViewNet], loader) -> tuple[dict[str, Tensor], list[int]]:
    """Every proxy's feature ``c`` and logits on every sample of ``loader`` (in its fixed order): named
    outputs ``features`` [N, K, d], ``logits`` [N, K, C], ``index`` [N] (dataset rows), proxies in the order
    of ``proxies``, and the dataset rows, for a teacher-outputs entry (``zoo.export.export_outputs``)."""
    feats, logits, index = {k: [] for k in proxies}, {k: [] for k in proxies}, []
    for net in proxies.values():
        net.eval()
    for batch in loader:
        index.append(batch["index"])
        for k, net in proxies.items():
            c, z = net.both(batch["x"])
            feats[k].append(c)
            logits[k].append(z)
    rows = torch.cat(index).long()
    named = {
        "features": torch.stack([torch.cat(feats[k]) for k in proxies], dim=1).float(),
        "logits": torch.stack([torch.cat(logits[k]) for k in proxies], dim=1).float(),
        "index": rows,
    }
    return named, rows.tolist()


def _check_same_architecture(proxies: Sequence[nn.Module]) -> None:
    ref = {k: v.shape for k, v in proxies[0].state_dict().items()}
    for i, p in enumerate(proxies[1:], start=1):
        shapes = {k: v.shape for k, v in p.state_dict().items()}
        if shapes != ref:
            diff = sorted(set(ref.items()) ^ set(shapes.items()))[:3]
            raise ValueError(f"proxy {i} has a different architecture from proxy 0 (e.g. {diff}); a soup needs one")


def learned_soup(proxies: Sequence[ViewNet], loader, epochs: int = 2, lr: float = 0.01) -> tuple[ViewNet, Tensor]:
    """UNIEGO's merge: theta = sum_k softmax(w)_k theta_k, w initialised to 0 (uniform); only ``w`` is
    trained (Adam, CE of the blended model in eval mode, via ``functional_call``). Non-float buffers
    come from proxy 0; ``epochs=0`` gives the uniform average. Returns the merged network and softmax(w)."""
    import copy

    _check_same_architecture(proxies)
    params = [dict(p.named_parameters()) for p in proxies]
    names = list(params[0])
    stacked = {n: torch.stack([p[n].detach() for p in params]) for n in names}
    merged = copy.deepcopy(proxies[0]).eval()
    w = torch.zeros(len(proxies), requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)

    def blend() -> dict[str, Tensor]:
        a = torch.softmax(w, 0)
        return {n: torch.tensordot(a, t, dims=1) for n, t in stacked.items()}

    for _ in range(epochs):
        for batch in loader:
            loss = F.cross_entropy(functional_call(merged, blend(), (batch["x"],)), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        for n, value in blend().items():
            merged.get_parameter(n).copy_(value)
    return merged.train(), torch.softmax(w.detach(), 0)


# ----- stage 2: selective proxy distillation ------------------------------------------------------------
def select_proxies(
    proxy_logits: Tensor, labels: Tensor, student_ce: Tensor, top_k: int = 1, ce_floor: float = 4.0
) -> Tensor:
    """The official SPD rule. proxy_logits [K, B, C], labels [B], student_ce [B] (detached) ->
    weights [K, B]: among proxies that are correct, have lower CE than the student and CE <= ce_floor,
    the ``top_k`` with the lowest CE, each weighted 1 / (number selected); zeros where none is valid."""
    k, b, _ = proxy_logits.shape
    ce = F.cross_entropy(proxy_logits.reshape(k * b, -1), labels.repeat(k), reduction="none").view(k, b)
    valid = (proxy_logits.argmax(-1) == labels) & (ce < student_ce) & (ce <= ce_floor)
    ranked = ce.masked_fill(~valid, float("inf"))
    order = ranked.argsort(0)[:top_k]  # [top_k, B]
    chosen = torch.zeros_like(valid).scatter_(0, order, True) & valid
    return chosen.float() / chosen.sum(0, keepdim=True).clamp(min=1)


class SPD(_Classifier):
    """Stage 2 of UNIEGO: CE + per-sample distillation from the selected proxies' exported outputs.

    ``proxy_outputs``: the file ``export_proxy_outputs`` wrote (rows looked up by ``batch["index"]``).
    ``selection``: ``spd`` (the official rule), ``random`` (``top_k`` proxies drawn at random per
    sample), ``uniform`` (every proxy, weight 1/K). The student starts from ``init_weights`` (the
    learned soup, ``zoo:`` or a path) or at random. ``Q`` (Linear d -> d_proxy) maps its feature.
    """

    def __init__(
        self,
        proxy_outputs: str,
        student: ViewNet | None = None,
        init_weights: str | None = None,
        selection: Literal["spd", "random", "uniform"] = "spd",
        top_k: int = 1,
        lambda_f: float = 5.0,
        lambda_z: float = 1.0,
        ce_floor: float = 4.0,
        temperature: float = 1.0,
        conflict_every: int = 0,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(student, None, init_weights, {"feat": lambda_f, "kd": lambda_z}, optimizer, lr_scheduler)
        if selection not in ("spd", "random", "uniform"):
            raise ValueError(f"unknown selection {selection!r}; expected spd, random or uniform")
        self.selection, self.top_k, self.ce_floor, self.temperature = selection, top_k, ce_floor, temperature
        self.conflict_every = conflict_every
        found = store.read_outputs(proxy_outputs)  # sha256-checked; records which proxies and samples made it
        outputs = found.outputs
        missing = {"features", "logits", "index"} - set(outputs)
        if missing:
            raise ValueError(f"{proxy_outputs} holds no proxy outputs: it lacks {sorted(missing)}")
        self.proxy_ids = found
        rows = torch.full((int(outputs["index"].max()) + 1,), -1, dtype=torch.long)
        rows[outputs["index"]] = torch.arange(len(outputs["index"]))
        self.register_buffer("row_of", rows, persistent=False)
        # stored [N, K, ...] (one row per sample); used [K, N, ...]
        self.register_buffer("proxy_features", outputs["features"].transpose(0, 1).contiguous(), persistent=False)
        self.register_buffer("proxy_logits", outputs["logits"].transpose(0, 1).contiguous(), persistent=False)
        self._setup_metrics()
        self.projectors["q"] = nn.Linear(self.student.feature_dim, outputs["features"].shape[-1])

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and getattr(datamodule, "ids", None):  # the proxies' samples must be these
            train = [datamodule.ids[i] for i in datamodule.split_index["train"].tolist()]
            self.proxy_ids.rows(train)  # refuses other samples, naming both sample hashes

    def proxy_rows(self, index: Tensor) -> Tensor:
        if index.max() >= len(self.row_of) or (rows := self.row_of[index]).min() < 0:
            raise KeyError("a training sample has no exported proxy outputs; re-export them for this split")
        return rows

    def weights(self, logits: Tensor, labels: Tensor, student_ce: Tensor) -> Tensor:
        k, b = logits.shape[:2]
        if self.selection == "uniform":
            return torch.full((k, b), 1.0 / k, device=logits.device)
        if self.selection == "random":
            pick = torch.rand(k, b, device=logits.device).argsort(0)[: self.top_k]
            chosen = torch.zeros(k, b, dtype=torch.bool, device=logits.device).scatter_(0, pick, True)
            return chosen.float() / self.top_k
        return select_proxies(logits, labels, student_ce, self.top_k, self.ce_floor)

    def distill_loss(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        c, logits = self.student.both(batch["x"])
        y = batch["y"]
        ce = F.cross_entropy(logits, y, reduction="none")
        rows = self.proxy_rows(batch["index"])
        t, z = self.proxy_features[:, rows], self.proxy_logits[:, rows]  # [K, B, d], [K, B, C]
        w = self.weights(z, y, ce.detach())  # [K, B]
        covered = w.sum(0) > 0
        q = self.projectors["q"](c)
        cos = cosine_distance(q.unsqueeze(0).expand_as(t), t, reduction="none")  # [K, B]
        # KL(z_k || z_S) per proxy and sample, [K, B], without the T^2 factor (official SPD)
        kl = kd_kl(logits.unsqueeze(0).expand_as(z), z, self.temperature, scale_t2=False, reduction="none")
        self.log("train/covered", covered.float().mean(), batch_size=len(y))
        lf, lz = self.weight_of("feat"), self.weight_of("kd")
        per_proxy = (w * (lf * cos + lz * kl)).sum(1) / covered.sum().clamp(min=1)  # each proxy's share of the loss
        self._track_conflicts([per_proxy[i] for i in range(len(per_proxy)) if w[i].sum() > 0])
        return {
            "ce": ce.mean(),
            "feat": masked_mean((w * cos).sum(0), covered),
            "kd": masked_mean((w * kl).sum(0), covered),
        }
