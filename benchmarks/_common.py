"""Shared helpers of the benchmark scripts: interleaved timing (one run, noisy machines) and FLOP counts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def interleaved_ms(functions: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each function, measured round-robin so drift hits all alike."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (matmuls and convolutions, as torch's FLOP counter sees them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Achieved GFLOP/s of a plain fp32 square matmul on this machine (the practical peak)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    ms = interleaved_ms({"mm": lambda: a @ b}, repeats)["mm"]
    return 2 * size**3 / (ms * 1e-3) / 1e9
