"""Training and inference throughput of the MAE family, side by side: images per second of one training step
for MAE alone, DMAE with the teacher cut at its aligned block (as here) and with the whole teacher and its
decoder (as the official code), and G2SD's generic stage; teacher and student inference; peak memory on CUDA.
Ratios are against MAE alone (training) and the teacher (inference).

    python benchmarks/vision_distill_speed.py [--scale cpu|paper] [--batch 64] [--steps 5] [--device cpu|cuda]

``cpu`` is the scale of recipes/dmae/cpu.yaml (TinyMAE-L teacher, depth 8 x 192, student depth 4 x 96, 32 px,
4-px patches); ``paper`` is ViT-L/16 -> ViT-B/16 at 224 px (the teacher cut after block 17 of 24).
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
from modules.dmae import DMAE, MAEPretrain  # noqa: E402
from modules.g2sd import GenericDistill  # noqa: E402
from modules.nets import MaskedAutoencoder  # noqa: E402

SCALES = {
    "cpu": {"img": 32, "patch": 4, "teacher": (192, 8, 3, 128, 2), "student": (96, 4, 3, 128, 2), "blocks": (2, 5)},
    "paper": {"img": 224, "patch": 16, "teacher": (1024, 24, 16, 512, 8), "student": (768, 12, 12, 512, 8),
              "blocks": (8, 17)},
}  # fmt: skip


def mae(scale: dict, which: str) -> MaskedAutoencoder:
    dim, depth, heads, dec_dim, dec_depth = scale[which]
    sizes = {"embed_dim": dim, "depth": depth, "num_heads": heads, "decoder_dim": dec_dim, "decoder_depth": dec_depth}
    return MaskedAutoencoder(img_size=scale["img"], patch_size=scale["patch"], decoder_heads=4, **sizes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=list(SCALES), default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    quiet()
    scale = SCALES[args.scale]
    torch.manual_seed(0)
    teacher_net = mae(scale, "teacher")
    s_block, t_block = scale["blocks"]
    images = torch.rand(args.batch, 3, scale["img"], scale["img"])
    loader = torch.utils.data.DataLoader([{"image": images}] * (args.steps + 6), batch_size=None)
    arms = {
        "MAE alone (student)": lambda: MAEPretrain(mae(scale, "student")),
        "DMAE, teacher cut at its block": lambda: DMAE(mae(scale, "student"), Teacher(teacher_net),
                                                       student_block=s_block, teacher_block=t_block),
        "DMAE, whole teacher (official)": lambda: DMAE(mae(scale, "student"), Teacher(teacher_net),
                                                       student_block=s_block, teacher_block=t_block,
                                                       truncate_teacher=False),
        "G2SD generic stage": lambda: GenericDistill(mae(scale, "student"), Teacher(teacher_net),
                                                     teacher_layer=max(1, scale["teacher"][4] // 2)),
    }  # fmt: skip
    print(f"MAE-family training step, {args.scale} scale, batch {args.batch}, {args.device}")
    print(f"{'arm':<34}{'img/s':>10}{'x MAE':>8}{'peak MiB':>10}")
    base = None
    for name, build in arms.items():
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = trainer_step_seconds(build(), loader, args.steps, args.device)
        rate = args.batch / seconds
        base = base or rate
        peak = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else float("nan")
        print(f"{name:<34}{rate:>10.1f}{rate / base:>8.2f}{peak:>10.0f}")
    print(f"\ninference (every patch visible), batch {args.batch}")
    print(f"{'network':<34}{'img/s':>10}{'x teacher':>10}")
    x = images.to(args.device)
    rates = {}
    for name, net in (("teacher encoder", teacher_net.encoder), ("student encoder", mae(scale, "student").encoder)):
        net = net.to(args.device).eval()
        with torch.no_grad():
            rates[name] = args.batch / time_call(lambda n=net: n(x), args.device, args.steps)
        print(f"{name:<34}{rates[name]:>10.1f}{rates[name] / rates['teacher encoder']:>10.2f}")


if __name__ == "__main__":
    main()
