"""CNN-ViT collaborative segmentation's costs side by side: the training step of the full method, of deep mutual
learning and of the two students trained independently (the same two networks, no transfer terms), as ratios to
the independent step; and each student's inference time per image.

    python benchmarks/cnn_vit_cost.py [--recipe recipes/cnn_vit/collab.yaml] [--batch 8] [--steps 5] [--device cpu|cuda]

The students are built from the recipe's ``cnn`` / ``vit`` blocks, untrained (only the cost is measured), at its
crop size for training and its evaluation size for inference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import time_call, trainer_step_seconds  # noqa: E402
from cli import quiet  # noqa: E402
from modules.cnn_vit import CollaborativeSeg, DeepLabV3Plus, SegFormer  # noqa: E402

ARMS = {
    "independent (two students, no transfer)": {"hfd": False, "region": False, "logits": "none"},
    "deep mutual learning": {"hfd": False, "region": False, "logits": "all"},
    "full method (HFD + region + pixel BSD)": {},
}


class Crops(torch.utils.data.Dataset):
    """Random crops with the datamodule's keys and CamVid's 11 classes plus void."""

    def __init__(self, n: int, size: tuple[int, int]) -> None:
        self.images, self.masks = torch.rand(n, 3, *size), torch.randint(0, 12, (n, *size))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i], "index": torch.tensor(i)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/cnn_vit/collab.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    quiet()
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    model, data = recipe["model"]["init_args"], recipe["data"]["init_args"]
    crop = tuple(data.get("crop_size") or data["train_size"])
    evaluate = tuple(data.get("eval_size") or (360, 480))
    region_grid = model.get("region_grid", 4)

    def students() -> tuple[DeepLabV3Plus, SegFormer]:
        torch.manual_seed(0)
        return DeepLabV3Plus(**model["cnn"]["init_args"]), SegFormer(**model["vit"]["init_args"])

    steps = {}
    for label, flags in ARMS.items():
        module = CollaborativeSeg(*students(), region_grid=region_grid, **flags)
        loader = torch.utils.data.DataLoader(Crops(args.batch * (args.steps + 3), crop), batch_size=args.batch)
        steps[label] = trainer_step_seconds(module, loader, args.steps, args.device, warmup=3)
    base = steps[next(iter(ARMS))]
    print(f"CNN-ViT collaborative cost ({args.recipe}), batch {args.batch}, crops {crop[0]} x {crop[1]}, {args.device}")
    print(f"{'training step':48s} {'s/step':>8s} {'x indep.':>9s}")
    for label, seconds in steps.items():
        print(f"{label:48s} {seconds:8.3f} {seconds / base:9.2f}")

    cnn, vit = (s.eval().to(args.device) for s in students())
    images = torch.rand(args.batch, 3, *evaluate, device=args.device)
    with torch.no_grad():
        times = {
            name: time_call(lambda n=net: n(images), args.device, args.steps)
            for name, net in (("cnn", cnn), ("vit", vit))
        }
    params = {"cnn": sum(p.numel() for p in cnn.parameters()), "vit": sum(p.numel() for p in vit.parameters())}
    print(f"\n{'inference at ' + f'{evaluate[0]} x {evaluate[1]}':48s} {'ms/image':>8s} {'x CNN':>9s} {'params':>9s}")
    for name, label in (("cnn", "CNN student (DeepLabV3+)"), ("vit", "ViT student (SegFormer)")):
        print(
            f"{label:48s} {1000 * times[name] / args.batch:8.2f} {times[name] / times['cnn']:9.2f} {params[name]:9,d}"
        )


if __name__ == "__main__":
    main()
