"""Is HFD transferring anything, or did the two projectors collapse? For each kept CNN-ViT arm trained with HFD,
the two students' projected stride-4 features on CamVid test frames: their variance over pixels (a collapsed
projector gives ~0) and the cosine of the two maps after removing each map's per-image mean (1: the same
spatial pattern; ~0 for unrelated features, as at initialisation), beside the HFD loss they reach.

    python scripts/cnn_vit_hfd_check.py [--entry collab-deeplabv3p-camvid] [--keep runs/publish/ENTRY] [--frames 8]

The students and projectors are the arms' seed-0 checkpoints in ``--keep`` (``zoo evidence --keep``); the
untrained row is the same arm's module built from its recipe at seed 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
from modules.cnn_vit import PARTS  # noqa: E402
from zoo import evidence, export, registry  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entry", default="collab-deeplabv3p-camvid")
    parser.add_argument("--keep", type=Path, help="the kept seed-0 checkpoints (default runs/publish/ENTRY)")
    parser.add_argument("--frames", type=int, default=8, help="the first N CamVid test frames")
    args = parser.parse_args()
    spec = registry.get(args.entry, pending=True).meta.evidence
    keep = args.keep or ROOT / "runs" / "publish" / args.entry
    print(f"{'arm':45s} {'':9s} {'var CNN':>8s} {'var ViT':>8s} {'cosine':>7s} {'MSE':>7s}")
    for arm in spec.arms:
        path = evidence.kept_checkpoint(keep, arm)
        if "--model.init_args.hfd=false" in arm.args or not path.is_file():
            continue
        built = cli.lightning_main([*(f"--config={c}" for c in arm.config), *arm.args], run=False)
        data = built.datamodule
        data.setup("test")
        images = torch.stack([data.dataset("test")[i]["image"] for i in range(args.frames)])
        rows = {"untrained": hfd_agreement(built.model, images)}
        missing, _ = built.model.load_state_dict(export.read_checkpoint(path)["state_dict"], strict=False)
        if any(k.startswith(("student.", "projectors.")) for k in missing):
            raise SystemExit(f"{path} does not hold the arm's students and projectors (missing {missing[:3]} ...)")
        rows["trained"] = hfd_agreement(built.model, images)
        for when, row in rows.items():
            print(f"{arm.arm[:45]:45s} {when:9s} {row['var_cnn']:8.3f} {row['var_vit']:8.3f} {row['cosine']:7.3f} "
                  f"{row['mse']:7.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
