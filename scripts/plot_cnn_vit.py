"""Figures for the CNN-ViT collaborative cards: CamVid test frames with both students' predictions per arm beside
the labels, and, for one frame, the selection masks of the full method: which pixels pixel-wise BSD would send
from the CNN to the ViT (the CNN right, the ViT wrong) and back, and which student teaches each region.

    python scripts/plot_cnn_vit.py [--entry collab-deeplabv3p-camvid] [--keep runs/publish/ENTRY] [--frames 0 39]
                                   [--noisy] [--arms NAME ...]

The students are the arms' seed-0 checkpoints in ``--keep`` (``zoo evidence --keep`` / ``zoo publish`` keep them
there; one lost with the machine is refitted and checked against its recorded run, ``publish.arm_checkpoint``).
The selection frame is cropped to the nearest size the region grid divides at stride 4. Writes
docs/figures/<entry>-predictions.png (the clean-label arms) and -selection.png, or with ``--noisy``
-predictions-noisy.png (the noisy-label arms); the ``diagnostic:`` arms are not drawn. ``--arms`` draws only the
named ones (each arm whose checkpoint was lost is a refit, so a publish draws few).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
from datamodules.images.camvid import camvid_rgb  # noqa: E402
from modules.cnn_vit import PARTS, CollaborativeSeg  # noqa: E402
from zoo import export, publish, registry  # noqa: E402

FLOW_COLOURS = {  # pixel-wise selection classes -> RGB
    "CNN -> ViT (CNN right, ViT wrong)": (0.95, 0.55, 0.1),
    "ViT -> CNN (ViT right, CNN wrong)": (0.15, 0.45, 0.9),
    "both right": (0.85, 0.85, 0.85),
    "both wrong": (0.35, 0.35, 0.35),
    "void": (0.0, 0.0, 0.0),
}


def selection_maps(cnn: torch.nn.Module, vit: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor, grid: int):
    """(pixel flow classes [H, W] indexing FLOW_COLOURS, region directions [grid, grid]: +1 CNN teaches, -1 the
    ViT teaches, 0 neither), by the module's own selection rules on one frame."""
    module = CollaborativeSeg(cnn, vit, hfd=False, region=True, logits="selective", region_grid=grid)
    module.eval()
    with torch.no_grad():
        shared = module.shared_forward({"image": image[None], "mask": mask[None]})
    c, v, valid = shared["cnn"]["right"][0], shared["vit"]["right"][0], shared["valid"][0]
    classes = torch.full_like(mask, 4)
    classes[valid & c & ~v], classes[valid & v & ~c] = 0, 1
    classes[valid & c & v], classes[valid & ~c & ~v] = 2, 3
    regions = shared["vit"]["region_taught"][0].int() - shared["cnn"]["region_taught"][0].int()
    return classes, regions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entry", default="collab-deeplabv3p-camvid")
    parser.add_argument("--keep", type=Path, help="the kept seed-0 checkpoints (default runs/publish/ENTRY)")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 39], help="indices into the test split")
    parser.add_argument("--noisy", action="store_true", help="show the noisy-label arms instead of the clean ones")
    parser.add_argument("--arms", nargs="+", help="the arms drawn, in order (default: all but the diagnostics)")
    args = parser.parse_args()
    spec = registry.get(args.entry, pending=True).meta.evidence
    keep = args.keep or publish.keep_dir(args.entry)
    if args.arms:
        shown = [spec.arm(name) for name in args.arms]  # an unknown name fails naming the arms there are
    else:  # the arms and the published one; the one-seed diagnostics are left to the tables
        shown = [a for a in spec.arms if a.arm.startswith("noisy") == args.noisy and not a.arm.startswith("diag")]
    kept = [(arm, publish.arm_checkpoint(args.entry, arm.arm, cli.evidence_fit, keep)) for arm in shown]
    data = cli.lightning_main([*(f"--config={c}" for c in spec.arms[0].config)], run=False).datamodule
    data.setup("test")
    test = data.dataset("test")
    batch = torch.utils.data.default_collate([test[i] for i in args.frames])
    images, masks = batch["image"], batch["mask"]

    students = {arm.arm: {part: export.load_student(path, part) for part in PARTS} for arm, path in kept}
    rows = 1 + len(students)
    cols = 2 * len(args.frames)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 1.85 * rows), squeeze=False)
    for f in range(len(args.frames)):
        axes[0, 2 * f].imshow(images[f].permute(1, 2, 0).numpy())
        axes[0, 2 * f].set_title(f"test frame {args.frames[f]}", fontsize=8)
        axes[0, 2 * f + 1].imshow(camvid_rgb(masks[f]).numpy(), interpolation="nearest")
        axes[0, 2 * f + 1].set_title("labels", fontsize=8)
    for r, (arm, nets) in enumerate(students.items(), start=1):
        with torch.no_grad():
            preds = {part: net(images).argmax(1) for part, net in nets.items()}
        for f in range(len(args.frames)):
            for k, part in enumerate(PARTS):
                ax = axes[r, 2 * f + k]
                ax.imshow(camvid_rgb(preds[part][f]).numpy(), interpolation="nearest")
                ax.set_title(f"{part.upper()}", fontsize=7)
        axes[r, 0].set_ylabel(arm.replace(" (", "\n("), fontsize=6, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{args.entry}: seed-0 students per arm on CamVid test frames", fontsize=9)
    fig.tight_layout()
    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    out = figures / f"{args.entry}-predictions{'-noisy' if args.noisy else ''}.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")

    full = next((arm for arm, _ in kept if arm.role == "distilled"), None)
    if full is None:  # the noisy figure
        return
    full_path = next(path for arm, path in kept if arm is full)
    grid = int(export.read_checkpoint(full_path)["hyper_parameters"].get("region_grid", 4))
    step = 4 * grid  # the labels and the stride-4 features must both split into the grid
    image, mask = images[0], masks[0]
    h, w = (s // step * step for s in image.shape[-2:])
    image, mask = image[:, :h, :w], mask[:h, :w]
    classes, regions = selection_maps(students[full.arm]["cnn"], students[full.arm]["vit"], image, mask, grid)
    palette = torch.tensor(list(FLOW_COLOURS.values()))
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.9))
    axes[0].imshow(image.permute(1, 2, 0).numpy())
    axes[0].set_title(f"test frame {args.frames[0]} ({h} x {w})", fontsize=8)
    axes[1].imshow(camvid_rgb(mask).numpy(), interpolation="nearest")
    axes[1].set_title("labels", fontsize=8)
    axes[2].imshow(palette[classes].numpy(), interpolation="nearest")
    axes[2].set_title("pixel-wise BSD: where knowledge flows", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in FLOW_COLOURS.values()]
    axes[2].legend(handles, list(FLOW_COLOURS), fontsize=5, loc="lower left", framealpha=0.8)
    axes[3].imshow(image.permute(1, 2, 0).numpy())
    axes[3].imshow(regions.float().numpy(), cmap="coolwarm", vmin=-1, vmax=1, alpha=0.45,
                   extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")  # fmt: skip
    axes[3].set_title("region-wise BSD: red = CNN teaches, blue = ViT teaches", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{args.entry}: the full method's selections (seed 0, {full.arm})", fontsize=9)
    fig.tight_layout()
    out = figures / f"{args.entry}-selection.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
