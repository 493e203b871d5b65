"""Shared timing helpers for the benchmarks: median wall times after a warm-up, CUDA-synchronised."""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L
import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


class StepTimer(L.Callback):
    """Wall time of every training batch (forward, backward, optimiser step)."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def on_train_batch_start(self, *args) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self.start)


def trainer_step_seconds(module: L.LightningModule, data: Any, steps: int, device: str, warmup: int = 5) -> float:
    """Median seconds of a ``training_step`` run by a Lightning Trainer, after ``warmup`` steps; ``data`` is a
    LightningDataModule or a train dataloader with at least ``steps + warmup`` batches."""
    timer = StepTimer(device)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps + warmup, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )  # fmt: skip
    if isinstance(data, L.LightningDataModule):
        trainer.fit(module, datamodule=data)
    else:
        trainer.fit(module, train_dataloaders=data)
    return statistics.median(timer.times[warmup:])
