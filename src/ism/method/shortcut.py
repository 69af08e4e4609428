"""Shortcut-model objective (Frans et al., ICLR 2025), with flow matching as its special case.

A shortcut network s_θ(x_t, t, d, c) predicts the average velocity over a jump of size d, so that
x_{t+d} ≈ x_t + d · s_θ(x_t, t, d, c). The network sees the integer level k = log2(1/d) ∈ {0, …, log2 M}
instead of d; the finest level k = log2 M (d = 1/M) stands for the paper's "d = 0" (METHOD.md §A2).

One batch of B rows mixes two kinds of rows (METHOD.md §A1, §A3, §A4):

Flow-matching rows (B - B_sc of them), level k = log2 M, t ∈ {0, 1/M, …, (M-1)/M}, labels dropped to ∅ with
probability p::

    L_FM = E ‖ s_θ(x_t, t, 1/M, c̃) − (x1 − x0) ‖²

Self-consistency rows (B_sc = ⌊B · sc_fraction⌋), trained step 2δ = 2^-k with the deterministic level split
k = [L-1, …, 0] repeated B_sc // L times and padded with k = 0, t on multiples of 2δ, true labels::

    s_tgt = clip(½ s⁻(x_t, t, δ, c) + ½ s⁻(x̃, t+δ, δ, c), ±4),   x̃ = clip(x_t + δ s⁻(x_t, t, δ, c), ±4)
    L_SC  = E ‖ s_θ(x_t, t, 2δ, c) − sg(s_tgt) ‖²

where s⁻ is the target network (an EMA of θ in the release). Classifier-free guidance enters the targets
only on the rows whose half-steps query the finest level (2δ = 2/M):
s⁻ ← s⁻(·, ∅) + w (s⁻(·, c) − s⁻(·, ∅)). The loss is the mean squared error over all rows, with equal
per-row weight. Flow matching (``fm``) is the same code path with B_sc = 0 and a network that ignores k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from ism.config import MethodConfig
from ism.method.flow import expand_like, interpolate, uniform_grid_times, velocity


class VelocityModel(Protocol):
    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        k: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


@dataclass
class TrainingRows:
    """One training batch after the objective has built inputs and targets (targets carry no gradient)."""

    x_t: torch.Tensor
    t: torch.Tensor
    k: torch.Tensor  # int64 level of the trained step, d = 2^-k
    y: torch.Tensor  # int64 labels, num_classes = ∅
    target: torch.Tensor
    is_self_consistency: torch.Tensor  # bool (B,)


def self_consistency_levels(num_rows: int, max_level: int, device: torch.device | None = None) -> torch.Tensor:
    """k_sc = repeat([L-1, …, 0], B_sc // L) ++ zeros(B_sc mod L), with L = log2 M (the release's split)."""
    per_level = num_rows // max_level
    levels = torch.arange(max_level - 1, -1, -1, device=device).repeat_interleave(per_level)
    padding = torch.zeros(num_rows - levels.numel(), dtype=torch.long, device=device)
    return torch.cat([levels, padding])


def times_on_level_grid(k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """t = randint(0, 2^k) / 2^k ∈ {0, D, 2D, …, 1 − D} with D = 2^-k, per row."""
    cells = torch.pow(2.0, k.float())
    u = torch.rand(k.shape, generator=generator, device=k.device)
    return torch.floor(u * cells) / cells


def guided(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v = v_u + w (v_c − v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)


def query_with_guidance(
    model: VelocityModel,
    x: torch.Tensor,
    t: torch.Tensor,
    k: torch.Tensor,
    y: torch.Tensor,
    *,
    guided_rows: torch.Tensor,
    scale: float,
    null_label: int,
) -> torch.Tensor:
    """s(x, t, k, y), with CFG at ``scale`` on ``guided_rows`` computed in the same forward pass."""
    if scale == 1.0 or not bool(guided_rows.any()):
        return model(x, t, k, y).float()
    idx = guided_rows.nonzero().squeeze(1)
    null = torch.full_like(idx, null_label)
    out = model(torch.cat([x, x[idx]]), torch.cat([t, t[idx]]), torch.cat([k, k[idx]]), torch.cat([y, null]))
    out = out.float()
    v, v_uncond = out[: x.shape[0]], out[x.shape[0] :]
    return v.index_copy(0, idx, guided(v[idx], v_uncond, scale))


@torch.no_grad()
def bootstrap_targets(
    target_model: VelocityModel,
    x_t: torch.Tensor,
    t: torch.Tensor,
    k: torch.Tensor,
    y: torch.Tensor,
    *,
    max_level: int,
    cfg_scale: float,
    null_label: int,
    clip: float,
) -> torch.Tensor:
    """s_tgt for a trained step 2δ = 2^-k from two δ = 2^-(k+1) steps of the target network.

    s_tgt = clip(½ s⁻(x_t, t, δ, c) + ½ s⁻(x̃, t+δ, δ, c), ±clip),  x̃ = clip(x_t + δ s⁻(x_t, t, δ, c), ±clip).
    CFG (scale ``cfg_scale``) applies to the rows whose half-step is the finest level (k + 1 = max_level).
    """
    half_level = k + 1
    delta = torch.pow(2.0, -half_level.float())
    finest = half_level == max_level
    kwargs = {"guided_rows": finest, "scale": cfg_scale, "null_label": null_label}
    v1 = query_with_guidance(target_model, x_t, t, half_level, y, **kwargs)
    x_mid = (x_t + expand_like(delta, x_t) * v1).clamp(-clip, clip)
    v2 = query_with_guidance(target_model, x_mid, t + delta, half_level, y, **kwargs)
    return ((v1 + v2) / 2).clamp(-clip, clip)


class ShortcutObjective:
    """Builds the mixed FM + SC batch and its loss; backbone-agnostic (any ``model(x, t, k, y)``)."""

    def __init__(self, method: MethodConfig, num_classes: int):
        self.method = method
        self.num_classes = num_classes
        self.null_label = num_classes

    def split_sizes(self, batch_size: int) -> tuple[int, int]:
        """(B_sc, B_fm): B_sc = ⌊B · sc_fraction⌋ self-consistency rows, the rest flow matching."""
        num_sc = math.floor(batch_size * self.method.effective_sc_fraction + 1e-9)
        return num_sc, batch_size - num_sc

    def flow_matching_rows(
        self, x1: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """x_t, t, k, ỹ and v for flow-matching rows (level log2 M, label dropout p)."""
        m = self.method
        n, device = x1.shape[0], x1.device
        t = uniform_grid_times(n, m.base_steps, generator, device)
        x0 = torch.randn(x1.shape, generator=generator, device=device, dtype=x1.dtype)
        dropped = torch.rand(n, generator=generator, device=device) < m.class_dropout
        y_dropped = torch.where(dropped, torch.full_like(y, self.null_label), y)
        k = torch.full((n,), m.max_level, dtype=torch.long, device=device)
        return interpolate(x0, x1, t, m.time_eps), t, k, y_dropped, velocity(x0, x1, m.time_eps)

    def self_consistency_rows(
        self, target_model: VelocityModel, x1: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, ...]:
        """x_t, t, k, c and the bootstrap target for self-consistency rows (true labels, no dropout)."""
        m = self.method
        k = self_consistency_levels(x1.shape[0], m.max_level, x1.device)
        t = times_on_level_grid(k, generator)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        x_t = interpolate(x0, x1, t, m.time_eps)
        target = bootstrap_targets(
            target_model,
            x_t,
            t,
            k,
            y,
            max_level=m.max_level,
            cfg_scale=m.bootstrap_cfg_scale,
            null_label=self.null_label,
            clip=m.target_clip,
        )
        return x_t, t, k, y, target

    def make_rows(
        self, target_model: VelocityModel, x1: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> TrainingRows:
        num_sc, num_fm = self.split_sizes(x1.shape[0])
        sc_slice = slice(0, num_sc)
        # The release takes FM rows from images[:B - B_sc], reusing the SC images; by default rows are disjoint.
        fm_slice = slice(0, num_fm) if self.method.release_slicing else slice(num_sc, None)
        parts = []
        if num_sc:
            parts.append(self.self_consistency_rows(target_model, x1[sc_slice], y[sc_slice], generator))
        parts.append(self.flow_matching_rows(x1[fm_slice], y[fm_slice], generator))
        x_t, t, k, labels, target = (torch.cat(column) for column in zip(*parts, strict=True))
        is_sc = torch.arange(x_t.shape[0], device=x_t.device) < num_sc
        return TrainingRows(x_t, t, k, labels, target.to(x_t.dtype), is_sc)

    @staticmethod
    def row_losses(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row mean squared error ‖pred − target‖² / dim."""
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)

    def __call__(
        self,
        model: VelocityModel,
        target_model: VelocityModel,
        x1: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss and detached per-part losses (for logging)."""
        rows = self.make_rows(target_model, x1, y, generator)
        pred = model(rows.x_t, rows.t, rows.k, rows.y)
        per_row = self.row_losses(pred, rows.target)
        loss = per_row.mean()
        logs = {"loss": loss.detach(), "loss_fm": per_row[~rows.is_self_consistency].detach().mean()}
        if bool(rows.is_self_consistency.any()):
            logs["loss_sc"] = per_row[rows.is_self_consistency].detach().mean()
        return loss, logs
