"""The linear (rectified-flow) path shared by flow matching, SM and iSM.

Time runs from noise to data: t = 0 is x0 ~ N(0, I), t = 1 is the data x1 (METHOD.md §1).

    x_t = (1 - (1 - eps) t) x0 + t x1,        v = x1 - (1 - eps) x0

``eps`` (1e-5 in the SM release) keeps a sliver of noise at t = 1; with eps = 0 this is x_t = (1-t) x0 + t x1.
"""

from __future__ import annotations

import torch


def expand_like(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-row (B,) tensor so it broadcasts over the trailing dimensions of ``x``."""
    return values.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, eps: float) -> torch.Tensor:
    """x_t = (1 - (1 - eps) t) x0 + t x1."""
    t = expand_like(t, x1)
    return (1 - (1 - eps) * t) * x0 + t * x1


def velocity(x0: torch.Tensor, x1: torch.Tensor, eps: float) -> torch.Tensor:
    """v = d x_t / dt = x1 - (1 - eps) x0."""
    return x1 - (1 - eps) * x0


def uniform_grid_times(n: int, resolution: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """t ~ U{0, 1/R, …, (R-1)/R}: the discrete time grid of the SM release (R = M for flow-matching rows)."""
    return torch.randint(0, resolution, (n,), generator=generator, device=device).float() / resolution
