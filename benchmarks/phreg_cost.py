"""PH-Reg's costs side by side: the TTA target precompute per image, one training step, and the inference of
the student (one pass), the teacher (one pass) and the TTA teacher (``views`` passes), as ratios.

    python benchmarks/phreg_cost.py [--scale cpu|paper] [--batch 8] [--steps 5] [--device cpu|cuda]

``cpu`` is the scale of recipes/phreg/distill.yaml (a depth-8 x 192 ViT with 4-px patches on 72 x 96 frames,
16 registers, 10 views); ``paper`` is ViT-B/14 at 518 px (DINOv2-B's geometry). Networks are untrained: only
the cost is measured. Ratios are against the teacher's one pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import time_call, trainer_step_seconds  # noqa: E402
from cli import quiet  # noqa: E402
from modules.core import Teacher  # noqa: E402
from modules.nets import TimmViT  # noqa: E402
from modules.phreg import PHReg, RegisterViT, TTADense  # noqa: E402
from zoo import outputs  # noqa: E402

SCALES = {
    "cpu": {"vit": {"img_size": 32, "patch_size": 4, "embed_dim": 192, "depth": 8, "num_heads": 3}, "size": (72, 96)},
    "paper": {"vit": {"img_size": 518, "patch_size": 14, "embed_dim": 768, "depth": 12, "num_heads": 12},
              "size": (518, 518)},
}  # fmt: skip


class Frames(torch.utils.data.Dataset):
    """Random frames with the datamodule's keys, for the training-step timing."""

    def __init__(self, n: int, size: tuple[int, int]) -> None:
        self.images = torch.rand(n, 3, *size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "index": torch.tensor(i)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=list(SCALES), default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    quiet()
    scale, device = SCALES[args.scale], args.device
    torch.manual_seed(0)
    teacher = TimmViT(timm_kwargs=scale["vit"] | {"num_classes": 10}).as_dynamic().eval().to(device)
    student = RegisterViT.from_vit(teacher, 16).eval().to(device)
    tta = TTADense(teacher, args.views).eval()
    images = torch.rand(args.batch, 3, *scale["size"], device=device)
    with torch.no_grad():
        one = time_call(lambda: teacher.dense_features(images), device, args.steps)
        rows = [
            ("teacher, one pass", one),
            ("student (PH-Reg), one pass", time_call(lambda: student.dense_features(images), device, args.steps)),
            (f"TTA teacher, {args.views} passes (= target precompute)",
             time_call(lambda: tta.dense_features(images), device, args.steps)),
        ]  # fmt: skip

    module = PHReg(teacher=Teacher(teacher), num_registers=16, views=args.views)
    n = args.batch * (args.steps + 6)
    grid = [s // scale["vit"]["patch_size"] for s in scale["size"]]
    ids = module.train_ids = [str(i) for i in range(n)]  # precomputed targets stand in for the file a fit reads
    dense = {"dense": torch.zeros(n, scale["vit"]["embed_dim"], *grid)}
    module.train_targets = outputs.TeacherOutputs(dense, ids, "bench", "", outputs.ids_sha256(ids))
    loader = torch.utils.data.DataLoader(Frames(n, scale["size"]), batch_size=args.batch)
    step = trainer_step_seconds(module, loader, args.steps, device, warmup=3)

    print(f"PH-Reg cost, {args.scale} scale, batch {args.batch}, {scale['size'][0]} x {scale['size'][1]}, {device}")
    print(f"{'what':52s} {'ms/image':>9s} {'x teacher':>9s}")
    for label, seconds in [*rows, ("training step (precomputed targets, 16 registers)", step)]:
        print(f"{label:52s} {1000 * seconds / args.batch:9.2f} {seconds / one:9.2f}")


if __name__ == "__main__":
    main()
