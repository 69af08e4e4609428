"""Intrinsic guidance with interval guidance (iSM, METHOD.md §B2).

The network takes the guidance scale w as an input, s_θ(x_t, t, c, d, w), and learns the guided field itself, so
sampling with any w costs one forward per step. Guidance is defined once, at d = 0 (the finest level), by

    g   = sg( s⁻(x_t, t, c, 0, 0) − s⁻(x_t, t, ∅, 0, 0) )         (the class direction of the target network)
    tgt = (x1 − x0) + w · m(t) · g,      m(t) = 1[t ≥ t_int]        (interval guidance: off at high noise)
    L_guidance = ‖ s_θ(x_t, t, c, 0, w) − tgt ‖²

whose expectation over (x0, x1) | x_t, c is v_c + w (v_c − v_u): CFG with scale λ = 1 + w. Larger steps learn the
guided field only through self-consistency with the same w in student and teacher (no CFG mixing), which
removes SM's compounding of guidance across levels. w is drawn uniformly from the grid {0, step, …, w_max}
(guidance rows: without 0).
"""

from __future__ import annotations

import torch

from ism.method.flow import expand_like


def guidance_grid(w_max: float, step: float) -> torch.Tensor:
    """{0, step, 2·step, …, w_max}: 15 values for iSM's w_max = 3.5, step = 0.25."""
    count = round(w_max / step)
    return torch.arange(count + 1, dtype=torch.float32) * step


def draw_guidance(
    n: int, grid: torch.Tensor, generator: torch.Generator, device: torch.device, exclude_zero: bool = False
) -> torch.Tensor:
    """w ~ U(grid) (or U(grid ∖ {0})) for ``n`` rows."""
    values = grid[1:] if exclude_zero else grid
    index = torch.randint(0, len(values), (n,), generator=generator, device=device)
    return values.to(device)[index]


def interval_mask(t: torch.Tensor, t_interval: float) -> torch.Tensor:
    """m(t) = 1[t ≥ t_int] (t = 0 is noise): no guidance target in the high-noise region."""
    return (t >= t_interval).float()


def direction_queries(
    x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, level: int, null_label: int
) -> tuple[torch.Tensor, ...]:
    """Inputs (x, t, k, y, w) of the two target-network queries that give g: class c and ∅, at d = 0 and w = 0."""
    n = x_t.shape[0]
    k = torch.full((2 * n,), level, dtype=torch.long, device=x_t.device)
    labels = torch.cat([y, torch.full_like(y, null_label)])
    return torch.cat([x_t, x_t]), torch.cat([t, t]), k, labels, torch.zeros(2 * n, device=x_t.device)


def guided_velocity(
    velocity: torch.Tensor, w: torch.Tensor, t: torch.Tensor, direction: torch.Tensor, t_interval: float
) -> torch.Tensor:
    """tgt = v + w · m(t) · g."""
    return velocity + expand_like(w * interval_mask(t, t_interval), velocity) * direction


@torch.no_grad()
def guidance_targets(
    target_model,
    x_t: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    velocity: torch.Tensor,
    w: torch.Tensor,
    *,
    level: int,
    null_label: int,
    t_interval: float,
) -> torch.Tensor:
    """tgt = v + w · m(t) · sg(s⁻(x_t, t, c, 0, 0) − s⁻(x_t, t, ∅, 0, 0)), one batched forward for c and ∅."""
    n = x_t.shape[0]
    out = target_model(*direction_queries(x_t, t, y, level=level, null_label=null_label)).float()
    return guided_velocity(velocity, w, t, out[:n] - out[n:], t_interval)
