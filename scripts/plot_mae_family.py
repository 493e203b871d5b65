"""Figures for the MAE-family cards (DMAE, G2SD): reconstructions of held-out images and the training curves
of every loss term of the pre-training stages.

    python scripts/plot_mae_family.py --entry dmae-vit-cifar10 [--images 8] [--seed 0] [--fit-missing]

``reconstructions``: CIFAR-10 test images, the visible patches under one fixed mask (0.75), then the pixels
predicted for the masked patches by the MAE teacher (``zoo:mae-vit-cifar10``) and by each pre-training stage
of the entry that has a pixel decoder (a stage whose student learns no pixels, G2SD's generic stage, is left
out). A normalised-pixel model (``norm_pix_loss``) predicts each patch up to its own mean and scale, which
are taken from the original patch for display, as MAE's own visualisation does.

``curves``: the logged training terms (``train/pixel``, ``train/distill``, ``train/generic``...) of every stage
fitted at ``--seed``, read from the CSV that ``zoo evidence`` keeps beside each stage checkpoint, so a stuck
distillation term is visible (G2SD issue #7). ``--fit-missing`` refits the stages a new machine lost (CPU fits
are deterministic; a refit that differs from its recorded run is refused). Writes
docs/figures/<entry>-reconstructions.png and -curves.png.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import zoo  # noqa: E402
from modules.nets import MaskedAutoencoder, random_mask  # noqa: E402
from modules.nets.mae import patchify, unpatchify  # noqa: E402
from zoo import evidence, export, registry  # noqa: E402

TEACHER = "zoo:mae-vit-cifar10"


def reconstruct(mae: MaskedAutoencoder, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1]: the visible patches as given and the masked ones as ``mae`` predicts them."""
    mask = random_mask(images.shape[0], mae.encoder.num_patches, 0.75, noise=noise)
    with torch.no_grad():
        pred = mae(images, mask)
    p = mae.encoder.patch_size
    target = patchify(mae.encoder.normalize(images), p)
    if mae.norm_pix_loss:  # each patch up to its own mean and scale: take them from the original patch
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    m = mask.mask.unsqueeze(-1)
    mixed = unpatchify(target * (1 - m) + pred * m, p, mae.encoder.grid_size)
    return (mixed * mae.encoder.std + mae.encoder.mean).clamp(0, 1)


def visible_only(mae: MaskedAutoencoder, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    mask = random_mask(images.shape[0], mae.encoder.num_patches, 0.75, noise=noise)
    p = mae.encoder.patch_size
    keep = 1 - mask.mask.unsqueeze(-1)
    return unpatchify(patchify(images, p) * keep + 0.5 * (1 - keep), p, mae.encoder.grid_size)


def stage_files(name: str, seed: int, fit_missing: bool = False) -> list[tuple[str, Path]]:
    """(stage name, kept checkpoint) of every stage of ``name`` fitted at ``seed``; with ``fit_missing`` a lost
    one is refitted first and must reproduce its recorded run (:func:`zoo.evidence.kept_source`)."""
    meta = registry.get(name, pending=True).meta
    if fit_missing:
        recorded = {k for k, runs in meta.results.stage_runs.items() if any(r.seed == seed for r in runs)}
        for stage in meta.evidence.stages:
            if stage.arm in recorded:  # a stage never run is the evidence's to fit and record, not the figure's
                evidence.kept_source(name, meta, stage.arm, seed, cli.evidence_fit)
    found = [(s.arm, evidence.stage_checkpoint(name, s, seed)) for s in meta.evidence.stages]
    return [(arm, path) for arm, path in found if path.is_file()]


def plot_reconstructions(name: str, seed: int, count: int, out: Path) -> None:
    entry = registry.get(name, pending=True)
    arm = next(a for a in entry.meta.evidence.arms if a.role == "baseline")
    data = cli.lightning_main([*(f"--config={c}" for c in arm.config), *arm.args], run=False).datamodule
    data.setup("test")
    test = data.test_dataloader().dataset
    picks = [test[i * (len(test) // count)] for i in range(count)]
    images = torch.stack([p["image"] for p in picks])
    teacher = zoo.load(TEACHER)
    noise = torch.rand(count, teacher.encoder.num_patches, generator=torch.Generator().manual_seed(seed))
    columns = [("test image", images), ("visible (25%)", visible_only(teacher, images, noise))]
    columns.append(("MAE teacher", reconstruct(teacher, images, noise)))
    for stage, path in stage_files(name, seed):
        student = export.load_student(path)
        if isinstance(student, MaskedAutoencoder) and "generic" not in stage.lower():  # G2SD's learns no pixels
            columns.append((stage, reconstruct(student, images, noise)))
    fig, axes = plt.subplots(count, len(columns), figsize=(1.6 * len(columns), 1.6 * count), squeeze=False)
    for j, (title, batch) in enumerate(columns):
        for i in range(count):
            ax = axes[i, j]
            ax.imshow(batch[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(textwrap.fill(title, 18), fontsize=8)
    fig.suptitle(f"{name}: masked-patch reconstructions of CIFAR-10 test images (mask 0.75, seed {seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``train/*`` columns of a Lightning CSVLogger file, as (step, value) pairs (empty cells skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith("train/") and key != "train/loss" and value not in ("", None):
                    curves.setdefault(key, []).append((int(row["step"]), float(value)))
    return curves


def plot_curves(name: str, seed: int, out: Path) -> None:
    stages = [(arm, path.with_suffix(".metrics.csv")) for arm, path in stage_files(name, seed)]
    stages = [(arm, path) for arm, path in stages if path.is_file()]
    if not stages:
        raise SystemExit(f"no stage of {name} at seed {seed} has kept curves (run zoo evidence {name} first)")
    terms = sorted({k for _, path in stages for k in read_curves(path)})
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.2), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for arm, path in stages:
            points = read_curves(path).get(term)
            if points:
                ax.plot(*zip(*points), label=arm, lw=1.2)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if not math.isnan(ax.get_ylim()[0]):
            ax.legend(fontsize=7)
    fig.suptitle(f"{name}: pre-training terms per step (seed {seed})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entry", required=True)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-missing", action="store_true", help="refit lost stage checkpoints first")
    args = parser.parse_args()
    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    stage_files(args.entry, args.seed, args.fit_missing)
    plot_reconstructions(args.entry, args.seed, args.images, figures / f"{args.entry}-reconstructions.png")
    plot_curves(args.entry, args.seed, figures / f"{args.entry}-curves.png")


if __name__ == "__main__":
    main()
