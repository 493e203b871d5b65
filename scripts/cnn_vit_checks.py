"""Why does an arm of the CNN-ViT grid score what it does? Two checks on the kept seed-0 checkpoints:

- ``hfd``: is HFD transferring anything, or did the two projectors collapse? For each arm trained with HFD, the
  two students' projected stride-4 features on CamVid test frames: their variance over pixels (a collapsed
  projector gives ~0) and the cosine of the two maps after removing each map's per-image mean (1: the same
  spatial pattern; ~0 for unrelated features, as at initialisation), beside the HFD loss they reach; the
  untrained row is the same arm's module built from its recipe at seed 0.
- ``fit``: under- or over-fitting? Each student's mIoU on the (clean, unaugmented) training frames beside its
  test mIoU, and how much its validation mIoU still rose over the last 10 epochs of its curve. A transfer term
  that regularises shows as a smaller train-test gap; one that competes with the labels in a schedule too short
  to converge shows as lower train mIoU and a curve still rising.

    python scripts/cnn_vit_checks.py [hfd|fit ...] [--entry collab-deeplabv3p-camvid] [--keep runs/publish/ENTRY]

The students and projectors are the arms' seed-0 checkpoints in ``--keep`` (``zoo evidence --keep``); arms
without one are listed as missing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassJaccardIndex

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
from modules.cnn_vit import PARTS  # noqa: E402
from zoo import evidence, export, publish, registry, schema  # noqa: E402


def hfd_agreement(module: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Per-pixel variance of each projected map, their centred cosine and the HFD MSE, on ``images``."""
    module.eval()
    with torch.no_grad():
        maps = {p: module.projectors[f"hfd_{p}"](module.student[p].parts(images).low) for p in PARTS}
    cnn, vit = maps["cnn"], F.interpolate(maps["vit"], size=maps["cnn"].shape[-2:], mode="bilinear")
    centred = [m - m.mean((2, 3), keepdim=True) for m in (cnn, vit)]
    return {
        "var_cnn": float(cnn.var(dim=(0, 2, 3)).mean()),
        "var_vit": float(vit.var(dim=(0, 2, 3)).mean()),
        "cosine": float(F.cosine_similarity(*centred, dim=1).mean()),
        "mse": float(F.mse_loss(cnn, vit)),
    }


def built_arm(arm: schema.Arm) -> cli.DistillCLI:
    """The arm's module and datamodule as its recipe builds them (untrained, seed 0)."""
    return cli.lightning_main([*(f"--config={c}" for c in arm.config), *arm.args], run=False)


def kept(arms: list[schema.Arm], keep: Path) -> list[tuple[schema.Arm, Path]]:
    """The arms whose seed-0 checkpoint is kept, with its path; the others are listed as missing."""
    found = [(arm, evidence.kept_checkpoint(keep, arm)) for arm in arms]
    for arm, path in found:
        if not path.is_file():
            print(f"{arm.arm[:58]:58s} missing {path}")
    return [(arm, path) for arm, path in found if path.is_file()]


def load_trained(module: torch.nn.Module, path: Path) -> None:
    missing, _ = module.load_state_dict(export.read_checkpoint(path)["state_dict"], strict=False)
    if any(k.startswith(("student.", "projectors.")) for k in missing):
        raise SystemExit(f"{path} does not hold the arm's students and projectors (missing {missing[:3]} ...)")


def check_hfd(arms: list[schema.Arm], keep: Path, frames: int) -> None:
    print(f"{'arm':45s} {'':9s} {'var CNN':>8s} {'var ViT':>8s} {'cosine':>7s} {'MSE':>7s}")
    for arm, path in kept([a for a in arms if "--model.init_args.hfd=false" not in a.args], keep):
        built = built_arm(arm)
        images = torch.stack([built.datamodule.dataset("test")[i]["image"] for i in range(frames)])
        rows = {"untrained": hfd_agreement(built.model, images)}
        load_trained(built.model, path)
        rows["trained"] = hfd_agreement(built.model, images)
        for when, row in rows.items():
            print(f"{arm.arm[:45]:45s} {when:9s} {row['var_cnn']:8.3f} {row['var_vit']:8.3f} {row['cosine']:7.3f} "
                  f"{row['mse']:7.4f}")  # fmt: skip


def miou(module: torch.nn.Module, loader: torch.utils.data.DataLoader) -> dict[str, float]:
    """Each student's mIoU over ``loader`` (the module's classes, its ignore index left out)."""
    metrics = {p: MulticlassJaccardIndex(module.num_classes, ignore_index=module.ignore_index) for p in PARTS}
    module.eval()
    with torch.no_grad():
        for batch in loader:
            for part in PARTS:
                metrics[part].update(module.student[part](batch["image"]), batch["mask"])
    return {p: 100 * float(m.compute()) for p, m in metrics.items()}


def late_rise(curve: Path, part: str, epochs: int = 10) -> float:
    """How much the validation mIoU of ``part`` rose over the curve's last ``epochs`` epochs (points)."""
    rows = [r for r in csv.DictReader(curve.open()) if r.get(f"val/{part}_miou")]
    values = [float(r[f"val/{part}_miou"]) for r in rows]
    return 100 * (max(values[-epochs:]) - max(values[: -epochs or None]))


def check_fit(arms: list[schema.Arm], keep: Path) -> None:
    """Train and test mIoU per student, all arms on the clean training frames of the first arm's data."""
    data = None
    print(f"{'arm':58s} {'student':7s} {'train':>6s} {'test':>6s} {'gap':>6s} {'late rise':>9s}")
    for arm, path in kept(arms, keep):
        built = built_arm(arm)
        data = data or built.datamodule  # the clean labels: every arm is scored on the same frames
        load_trained(built.model, path)
        scores = {
            split: miou(built.model, data.loader(data.dataset(split, augment=False))) for split in ("train", "test")
        }
        curve = path.with_suffix(".metrics.csv")
        for part in PARTS:
            train, test = scores["train"][part], scores["test"][part]
            rise = f"{late_rise(curve, part):9.2f}" if curve.is_file() else f"{'?':>9s}"
            print(f"{arm.arm[:58]:58s} {part:7s} {train:6.2f} {test:6.2f} {train - test:6.2f} {rise}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checks", nargs="*", choices=["hfd", "fit"], default=["hfd", "fit"])
    parser.add_argument("--entry", default="collab-deeplabv3p-camvid")
    parser.add_argument("--keep", type=Path, help="the kept seed-0 checkpoints (default runs/publish/ENTRY)")
    parser.add_argument("--frames", type=int, default=8, help="hfd: the first N CamVid test frames")
    args = parser.parse_args()
    arms = registry.get(args.entry, pending=True).meta.evidence.arms
    keep = args.keep or publish.keep_dir(args.entry)
    if "hfd" in args.checks:
        check_hfd(arms, keep, args.frames)
    if "fit" in args.checks:
        check_fit(arms, keep)


if __name__ == "__main__":
    main()
