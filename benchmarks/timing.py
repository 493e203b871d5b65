"""Shared timing helper for the benchmarks: median wall time after a warm-up, CUDA-synchronised."""

from __future__ import annotations

import statistics
import time

import torch


def time_call(fn, device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])
