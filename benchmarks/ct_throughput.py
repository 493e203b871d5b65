"""GloReDi cost per slice as the image grows: one training iteration (teacher step + student step with
both distillation terms), student inference, and the FBP simulation of one slice (sparse, teacher and
full views), at 64, 128 and 256 pixels, with the growth ratio against the smallest size.

    python benchmarks/ct_throughput.py [--sizes 64 128 256] [--batch 8] [--repeats 3] [--device cpu|cuda]
                                       [--ngf 32 --e-blocks 3 --d-blocks 1]   (the recipe's network)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import time_call, trainer_step_seconds  # noqa: E402
from datamodules.ct import hu_to_mu, simulate  # noqa: E402
from datamodules.synthetic.phantoms import random_ellipse_phantoms  # noqa: E402
from modules.sparse_ct import GloReDi, Reconstructor  # noqa: E402


def measure(size: int, args: argparse.Namespace) -> tuple[int, float, float, float]:
    """Seconds per slice: one training iteration, one inference, one simulation."""
    net = Reconstructor(ngf=args.ngf, e_blocks=args.e_blocks, d_blocks=args.d_blocks)
    module = GloReDi(net, scl_memory=args.batch, finetune_epochs=0)
    x = {k: torch.rand(args.batch, 1, size, size) * 0.3 for k in ("sparse", "teacher", "full")}
    batches = torch.utils.data.DataLoader([x] * (args.repeats + 1), batch_size=None)
    # GloReDi.training_step in a Trainer: the teacher step, then the student step with both distillation terms
    train = trainer_step_seconds(module, batches, args.repeats, args.device, warmup=1) / args.batch
    x = {k: v.to(args.device) for k, v in x.items()}
    module.eval()
    with torch.no_grad():
        infer = time_call(lambda: module.student(x["sparse"]), args.device, args.repeats) / args.batch
    mu = hu_to_mu(random_ellipse_phantoms(1, size, seed=0)[0])
    sim = time_call(lambda: simulate(mu, args.views, 2 * args.views, 180), "cpu", args.repeats)
    return size, train, infer, sim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--views", type=int, default=18)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--e-blocks", type=int, default=3)
    parser.add_argument("--d-blocks", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = [measure(size, args) for size in args.sizes]
    base = rows[0]
    print(f"GloReDi per slice (batch {args.batch}, ngf {args.ngf}, {args.e_blocks}+{args.d_blocks} FFC blocks, "
          f"{args.device}); simulation: {args.views}/{2 * args.views}/180 views, CPU")  # fmt: skip
    print(f"{'size':>6}{'train ms':>11}{'x':>7}{'infer ms':>11}{'x':>7}{'simulate ms':>13}{'x':>7}")
    for size, train, infer, sim in rows:
        print(f"{size:>6}{train * 1e3:>11.1f}{train / base[1]:>7.1f}{infer * 1e3:>11.2f}{infer / base[2]:>7.1f}"
              f"{sim * 1e3:>13.1f}{sim / base[3]:>7.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
