"""Learning-rate schedules that recipes name and the template steps once per epoch."""

from __future__ import annotations

import math

import torch


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """MAE's schedule (facebookresearch/mae ``util/lr_sched.py``, shared by DMAE and G2SD): linear warmup
    over ``warmup_epochs`` from 0, then a half-cycle cosine from the base LR down to ``min_lr_ratio`` of it at
    ``max_epochs``. The official code updates it every iteration; the template steps schedulers once per
    epoch, so this is the same curve sampled per epoch (epoch e trains at the value for e + 1/2 of warmup)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_epochs: int, max_epochs: int, min_lr_ratio: float = 0.0
    ) -> None:
        if not 0 <= warmup_epochs < max_epochs:
            raise ValueError(f"need 0 <= warmup_epochs < max_epochs, got {warmup_epochs} and {max_epochs}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        self.warmup_epochs, self.max_epochs, self.min_lr_ratio = warmup_epochs, max_epochs, min_lr_ratio
        super().__init__(optimizer, self.factor)

    def factor(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 0.5) / self.warmup_epochs
        t = min(1.0, (epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class ExponentialTo(torch.optim.lr_scheduler.LambdaLR):
    """PH-Reg's schedule (0raiser0/PH-Reg ``distill_main.py``): epoch ``e`` trains at
    ``lr * (final_lr / lr) ** ((e + 1) / max_epochs)``, never below ``final_lr``, constant within an epoch
    (the official code sets it after each step from the epoch index). ``lr`` is each group's initial LR."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_epochs: int, final_lr: float = 5e-6) -> None:
        if max_epochs < 1 or final_lr <= 0:
            raise ValueError(f"need max_epochs >= 1 and final_lr > 0, got {max_epochs} and {final_lr}")
        self.max_epochs, self.final_lr = max_epochs, final_lr
        bases = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
        super().__init__(optimizer, [self._factor(base) for base in bases])

    def _factor(self, base: float):
        ratio = min(1.0, self.final_lr / base)
        return lambda epoch: max(ratio, ratio ** ((epoch + 1) / self.max_epochs))
