"""Overhead of the distillation core: one DistillModule training step inside a Lightning Trainer versus a
hand-written step (teacher forward under no_grad + student forward/backward + optimiser step), on the same
batch and networks. Goal: ratio <= 1.05.

    python benchmarks/core_overhead.py [--steps 50] [--hidden 1024] [--batch 512] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import sync, trainer_step_seconds  # noqa: E402
from modules.core import DistillModule, Teacher, kd_kl  # noqa: E402


def mlp(width: int, hidden: int, classes: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(width if i == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, classes))


class KD(DistillModule):
    def distill_loss(self, batch):
        x, y = batch
        logits = self.student(x)
        return {"ce": F.cross_entropy(logits, y), "kd": kd_kl(logits, self.teacher(x), temperature=4.0)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    width, classes = 1024, 100
    x = torch.randn(args.batch, width, device=args.device)
    y = torch.randint(0, classes, (args.batch,), device=args.device)
    student, teacher = mlp(width, args.hidden, classes, 2), mlp(width, 2 * args.hidden, classes, 3)

    # Hand-written reference step.
    ref_student, ref_teacher = [m.to(args.device) for m in (mlp(width, args.hidden, classes, 2), Teacher(teacher))]
    ref_student.load_state_dict(student.state_dict())
    opt = torch.optim.Adam(ref_student.parameters(), lr=1e-3)
    plain = []
    for _ in range(args.steps + 5):
        sync(args.device)
        start = time.perf_counter()
        with torch.no_grad():
            t = ref_teacher(x)
        s = ref_student(x)
        loss = F.cross_entropy(s, y) + kd_kl(s, t, temperature=4.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(args.device)
        plain.append(time.perf_counter() - start)

    # The same step through DistillModule in a Lightning Trainer (logging included).
    module = KD(student=student, teacher=teacher, optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    batches = torch.utils.data.DataLoader([(x.cpu(), y.cpu())] * (args.steps + 5), batch_size=None)
    ours = trainer_step_seconds(module, batches, args.steps, args.device)

    ref = statistics.median(plain[5:])
    print(f"device {args.device}, batch {args.batch}, student hidden {args.hidden}, {args.steps} timed steps (median)")
    print(f"{'plain step + teacher forward':32s} {1000 * ref:8.2f} ms")
    print(f"{'DistillModule step (Trainer)':32s} {1000 * ours:8.2f} ms")
    print(f"{'ratio (goal <= 1.05)':32s} {ours / ref:8.3f}")


if __name__ == "__main__":
    main()
