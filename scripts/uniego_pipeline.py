"""UNIEGO's stages on a multi-view dataset, writing every artefact the student recipes read.

1. teachers: one MLP per teacher view (CE), its feature ``c`` for every sample -> one feature file
   per teacher (``teacher_<view>.safetensors``, rows in sample-id order; the official format);
2. shared init: the student's network trained with CE on the student's view (``init.safetensors``),
   so that all proxies share one init, as the ImageNet init does in the paper;
3. proxies: one per teacher from the shared init, CE + cosine to that teacher's features;
4. proxy outputs on every training sample (``proxy_outputs.safetensors``);
5. the learned soup of the proxies (``soup.safetensors``) and a uniform average (``uniform.safetensors``).

    python scripts/uniego_pipeline.py [--dataset uci|generated] [--root DIR] [--out runs/uniego] [--epochs 60]

Optimiser as the official configs (SGD momentum 0.9, lr 0.005, wd 1e-4, LR x0.1 at 11/15 and x0.01 at
14/15 of the epochs); ``--epochs`` scales the official 15 up for data this small.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import save
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.multiview import MultiViewDataModule, write_teacher_features  # noqa: E402
from modules.ego_proxies import FeatureDistill, ViewNet, export_proxy_outputs, learned_soup  # noqa: E402
from zoo import store  # noqa: E402
from zoo.files import atomic_write_bytes  # noqa: E402
from zoo.specs import module_spec  # noqa: E402


def optimiser(epochs: int):
    def opt(params):
        return torch.optim.SGD(params, lr=0.005, momentum=0.9, weight_decay=1e-4)

    def sched(o):
        return torch.optim.lr_scheduler.MultiStepLR(o, [round(epochs * 11 / 15), round(epochs * 14 / 15)], 0.1)

    return opt, sched


def fit(module: L.LightningModule, dm: MultiViewDataModule | None, epochs: int, loaders: tuple = ()) -> None:
    trainer = L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    if dm is not None:
        trainer.fit(module, datamodule=dm)
    else:
        trainer.fit(module, *loaders)


def view_loader(dm: MultiViewDataModule, view: str, stage: str) -> DataLoader:
    """Batches {view: [B, d], "y": [B]} of one teacher view, to train that view's teacher."""
    idx = dm.split_index[stage]
    pairs = TensorDataset(dm.views[view][idx], dm.y[idx])
    return DataLoader(
        pairs, batch_size=64, shuffle=stage == "train",
        collate_fn=lambda items: {view: torch.stack([a for a, _ in items]), "y": torch.stack([b for _, b in items])},
    )  # fmt: skip


def save_network(net: torch.nn.Module, path: Path) -> Path:
    """Weights + constructor spec, readable as ``--model.init_args.init_weights PATH``."""
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={store.SPEC_KEY: json.dumps(module_spec(net), sort_keys=True)}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="uci", choices=["uci", "generated"])
    parser.add_argument("--root", default=None)
    parser.add_argument("--out", default="runs/uniego")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(args.seed)
    dm = MultiViewDataModule(root=args.root, dataset=args.dataset)
    dm.setup()
    opt, sched = optimiser(args.epochs)
    num_classes, shape = dm.num_classes, tuple(dm.student_x.shape[1:])

    # 1. teachers on their own views -> feature files
    feature_files = {}
    for view, x in dm.views.items():
        net = ViewNet((x.shape[1],), num_classes, hidden=128)
        teacher = FeatureDistill(net, input_key=view, optimizer=opt, lr_scheduler=sched)
        fit(teacher, None, args.epochs, (view_loader(dm, view, "train"), view_loader(dm, view, "val")))
        with torch.no_grad():
            feats = net.eval().both(x)[0]
            acc = (net(x[dm.split_index["test"]]).argmax(1) == dm.y[dm.split_index["test"]]).float().mean()
        feature_files[view] = str(out / f"teacher_{view}.safetensors")
        write_teacher_features(feature_files[view], feats, dm.ids)
        print(f"[uniego] teacher {view}: test acc {acc:.4f}, features {tuple(feats.shape)}", flush=True)

    # 2. the shared init: CE on the student's view
    dm = MultiViewDataModule(root=args.root, dataset=args.dataset, teacher_features=feature_files)
    dm.setup()
    init = ViewNet(shape, num_classes, hidden=128, backbone="cnn", input_max=dm.student_input_max)
    fit(FeatureDistill(init, optimizer=opt, lr_scheduler=sched), dm, args.epochs)
    save_network(init, out / "init.safetensors")

    # 3. one proxy per teacher, from the shared init
    proxies = {}
    widths = {k: v.shape[1] for k, v in dm.features.items()}
    for view in feature_files:
        net = copy.deepcopy(init)
        fit(FeatureDistill(net, teachers={view: widths[view]}, optimizer=opt, lr_scheduler=sched), dm, args.epochs)
        proxies[view] = net.eval()

    # 4. their outputs on every training sample; 5. the soups
    export_proxy_outputs(proxies, dm.full_train_dataloader(), out / "proxy_outputs.safetensors")
    soup, weights = learned_soup(list(proxies.values()), dm.full_train_dataloader(), epochs=2, lr=0.01)
    save_network(soup, out / "soup.safetensors")
    uniform, _ = learned_soup(list(proxies.values()), dm.full_train_dataloader(), epochs=0)  # weights stay 1/K
    save_network(uniform, out / "uniform.safetensors")
    summary = {"soup_weights": dict(zip(proxies, weights.tolist())), "feature_files": feature_files}
    (out / "pipeline.json").write_text(json.dumps(summary, indent=2))
    print(f"[uniego] {summary}", flush=True)


if __name__ == "__main__":
    main()
