"""Shared helpers of the benchmark scripts: interleaved timing (one run, noisy machines) and FLOP counts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.utils._python_dispatch
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


_GEMMS = {"mm", "addmm", "bmm", "baddbmm"}


def _gemm_flops(name: str, args: tuple) -> int:
    a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
    batch = a.shape[0] if a.dim() == 3 else 1
    return 2 * batch * a.shape[-2] * a.shape[-1] * b.shape[-1]


class GemmRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records every matmul (aten mm, addmm, bmm, baddbmm) a piece of code runs, forward and backward, with its
    operands' shapes and strides, so the same GEMMs can be replayed as bare calls (:meth:`replayer`)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in _GEMMS:
            layout = tuple(
                (tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a for a in args
            )
            self.calls.append((func, layout, dict(kwargs), _gemm_flops(name, args)))
        return func(*args, **kwargs)

    @property
    def flops(self) -> int:
        return sum(call[3] for call in self.calls)

    def replayer(self) -> Callable[[], None]:
        """A function that runs every recorded GEMM once, in order, on random operands of the same layout."""
        g = torch.Generator().manual_seed(0)

        def operand(spec):
            if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[2], torch.dtype)):
                return spec
            shape, stride, dtype = spec
            extent = 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
            return torch.randn(extent, generator=g).to(dtype).as_strided(shape, stride)

        calls = [(func, tuple(operand(a) for a in layout), kwargs) for func, layout, kwargs, _ in self.calls]

        def replay() -> None:
            for func, args, kwargs in calls:
                func(*args, **kwargs)

        return replay
