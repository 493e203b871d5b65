"""Figures for the PH-Reg card, on the same CamVid test frames: per-token feature norms and the first three
principal components of the dense features (as RGB) for the teacher, the teacher with TTA and the PH-Reg
student; then the linear-probe predictions of the raw-teacher and PH-Reg arms beside the labels.

    python scripts/plot_phreg.py [--entry phreg-vit-camvid] [--keep runs/publish/phreg-vit-camvid] [--frames 0 26 52]

The student is the seed-0 PH-Reg stage kept by ``zoo evidence``; the probes are the arms' seed-0 checkpoints
in ``--keep`` (``zoo publish`` keeps them there); one lost with the machine is refitted first (a few CPU
minutes) and checked against its recorded run. The principal components are fitted on the teacher's
features of the shown frames and applied to all three, so the colours compare. Writes
docs/figures/<entry>-features.png and -probes.png.
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
from datamodules.images.camvid import camvid_rgb as colour  # noqa: E402
from modules.dense_probe import LinearProbe, load_backbone  # noqa: E402
from modules.phreg import TTADense  # noqa: E402
from zoo import evidence, export, publish, registry  # noqa: E402

TEACHER = "zoo:mae-vit-cifar10-ft"


def pca_rgb(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """[B, D, h, w] maps -> [B, h, w, 3] in [0, 1]: the first three principal components of the first map's
    tokens, applied to every map, each channel min-max scaled over all of them."""
    first = maps[0].permute(0, 2, 3, 1).reshape(-1, maps[0].shape[1])
    mean = first.mean(0)
    _, _, v = torch.pca_lowrank(first - mean, q=3, center=False)
    out = [((m.permute(0, 2, 3, 1) - mean) @ v[:, :3]) for m in maps]
    lo = torch.stack([o.amin(dim=(0, 1, 2)) for o in out]).amin(0)
    hi = torch.stack([o.amax(dim=(0, 1, 2)) for o in out]).amax(0)
    return [((o - lo) / (hi - lo + 1e-8)).clamp(0, 1) for o in out]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entry", default="phreg-vit-camvid")
    parser.add_argument("--keep", type=Path, help="the kept seed-0 probe checkpoints (default runs/publish/ENTRY)")
    parser.add_argument("--frames", type=int, nargs="+", default=[0, 26, 52], help="indices into the test split")
    args = parser.parse_args()
    entry = registry.get(args.entry, pending=True)
    spec = entry.meta.evidence
    keep = args.keep or ROOT / "runs" / "publish" / args.entry
    probe_arm = spec.arm("PH-Reg")
    stage = spec.stage(probe_arm.after)
    stage_ckpt = evidence.kept_source(args.entry, entry.meta, stage.arm, 0, cli.evidence_fit)  # refits a lost one
    student = export.load_student(stage_ckpt)
    teacher = load_backbone(TEACHER)
    tta = TTADense(teacher, views=10)
    data = cli.lightning_main([*(f"--config={c}" for c in probe_arm.config)], run=False).datamodule
    data.setup("test")
    test = data.dataset("test")
    batch = torch.utils.data.default_collate([test[i] for i in args.frames])
    images, masks = batch["image"], batch["mask"]
    with torch.no_grad():
        maps = [net.dense_features(images) for net in (teacher, tta, student)]
    names = ["teacher", "teacher + TTA (10 passes)", "PH-Reg student"]
    norms = [m.norm(dim=1) for m in maps]
    top = max(float(n.max()) for n in norms)
    rgb = pca_rgb(maps)

    figures = ROOT / "docs" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    cols = 1 + 2 * len(names)
    fig, axes = plt.subplots(len(args.frames), cols, figsize=(2.2 * cols, 1.9 * len(args.frames)), squeeze=False)
    for i in range(len(args.frames)):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).numpy())
        for j, name in enumerate(names):
            shown = axes[i, 1 + j].imshow(norms[j][i].numpy(), vmin=0, vmax=top, cmap="magma")
            axes[i, 1 + len(names) + j].imshow(rgb[j][i].numpy(), interpolation="nearest")
            if i == 0:
                axes[i, 1 + j].set_title(f"norm: {name}", fontsize=7)
                axes[i, 1 + len(names) + j].set_title(f"PCA: {name}", fontsize=7)
        if i == 0:
            axes[i, 0].set_title("CamVid test frame", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[:, 1 : 1 + len(names)].ravel().tolist(), shrink=0.6, label="token norm")
    fig.suptitle(f"{args.entry}: dense features at {images.shape[-2]} x {images.shape[-1]} (teacher made for 32 x 32)",
                 fontsize=9)  # fmt: skip
    out = figures / f"{args.entry}-features.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")

    probes = []
    for arm_name in ("raw teacher", "PH-Reg"):
        arm = spec.arm(arm_name)
        ckpt = export.read_checkpoint(publish.arm_checkpoint(args.entry, arm_name, cli.evidence_fit, keep))
        backbone = ckpt["hyper_parameters"]["backbone"]
        probe = LinearProbe(backbone=backbone if arm.after is None else str(stage_ckpt))
        probe.student.load_state_dict(export.student_tensors(ckpt))
        with torch.no_grad():
            probes.append((arm_name, probe.eval()(images).argmax(1)))
    cols = 2 + len(probes)
    fig, axes = plt.subplots(len(args.frames), cols, figsize=(2.4 * cols, 1.9 * len(args.frames)), squeeze=False)
    for i in range(len(args.frames)):
        panels = [("frame", images[i].permute(1, 2, 0)), ("labels", colour(masks[i]))]
        panels += [(f"probe: {name}", colour(pred[i])) for name, pred in probes]
        for j, (title, panel) in enumerate(panels):
            axes[i, j].imshow(panel.numpy(), interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(title, fontsize=8)
    fig.tight_layout()
    out = figures / f"{args.entry}-probes.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
