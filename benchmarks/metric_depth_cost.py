"""MetricAnything reconstruction's costs side by side: the prompt teacher's and the prompt-free student's
inference per image at two resolutions, and the ray-cast generator's time per training image, as ratios to the
student at the training resolution.

    python benchmarks/metric_depth_cost.py [--widths 16 32 64 128] [--batch 8] [--steps 5] [--device cpu|cuda]

Networks are untrained (only the cost is measured); the student runs at its input size (no ``net_size``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import time_call  # noqa: E402
from datamodules.synthetic.scenes3d import render_scene, simulate_source  # noqa: E402
from modules.metric_depth import MetricDepthStudent, PromptDepthNet, sample_prompt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--sizes", type=int, nargs=2, default=[64, 256], help="two square resolutions")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = PromptDepthNet(args.widths).eval().to(args.device)
    student = MetricDepthStudent(args.widths).eval().to(args.device)
    rows = []
    with torch.no_grad():
        for size in args.sizes:
            images = torch.rand(args.batch, 3, size, size, device=args.device)
            prompt = sample_prompt(1 + 9 * torch.rand(args.batch, size, size), 0.01).to(args.device)
            f_px = torch.full((args.batch,), float(size), device=args.device)
            student_s = time_call(lambda x=images, f=f_px: student(x, f), args.device, args.steps)
            teacher_s = time_call(lambda x=images, p=prompt: teacher(x, p), args.device, args.steps)
            rows += [(f"student, {size} x {size}", student_s), (f"teacher (1% prompt), {size} x {size}", teacher_s)]
    rng = np.random.default_rng(0)
    start, n = time.perf_counter(), 2 * args.batch
    for i in range(n):
        simulate_source(render_scene(i, size=(args.sizes[0], args.sizes[0]))["depth"], "lidar", rng)
    generator_s = (time.perf_counter() - start) / n * args.batch
    rows.append((f"generator (ray cast + a source), {args.sizes[0]} x {args.sizes[0]}, CPU", generator_s))
    base = rows[0][1]
    print(f"MetricAnything cost, U-Net widths {args.widths}, batch {args.batch}, {args.device}")
    print(f"{'what':52s} {'ms/image':>9s} {'x student':>10s}")
    for label, seconds in rows:
        print(f"{label:52s} {1000 * seconds / args.batch:9.2f} {seconds / base:10.2f}")


if __name__ == "__main__":
    main()
