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
from ism.method.guidance import direction_queries, draw_guidance, guidance_grid, guidance_targets, guided_velocity
from ism.method.wavelet import WaveletLoss


class VelocityModel(Protocol):
    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        k: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


SELF_CONSISTENCY, VELOCITY, GUIDANCE = 0, 1, 2
ROLE_NAMES = {SELF_CONSISTENCY: "sc", VELOCITY: "fm", GUIDANCE: "guidance"}


@dataclass
class TrainingRows:
    """One training batch after the objective has built inputs and targets (targets carry no gradient)."""

    x_t: torch.Tensor
    t: torch.Tensor
    k: torch.Tensor  # int64 level of the trained step, d = 2^-k
    y: torch.Tensor  # int64 labels, num_classes = ∅
    w: torch.Tensor | None  # guidance scale per row (intrinsic guidance only)
    target: torch.Tensor
    role: torch.Tensor  # int64: SELF_CONSISTENCY, VELOCITY (flow matching) or GUIDANCE

    @property
    def is_self_consistency(self) -> torch.Tensor:
        return self.role == SELF_CONSISTENCY


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
    w: torch.Tensor | None = None,
) -> torch.Tensor:
    """s(x, t, k, y[, w]), with CFG at ``scale`` on ``guided_rows`` computed in the same forward pass."""
    if scale == 1.0 or not bool(guided_rows.any()):
        return model(x, t, k, y, w).float()
    idx = guided_rows.nonzero().squeeze(1)
    null = torch.full_like(idx, null_label)
    w_all = None if w is None else torch.cat([w, w[idx]])
    out = model(torch.cat([x, x[idx]]), torch.cat([t, t[idx]]), torch.cat([k, k[idx]]), torch.cat([y, null]), w_all)
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
    w: torch.Tensor | None = None,
    first_velocity: torch.Tensor | None = None,
) -> torch.Tensor:
    """s_tgt for a trained step 2δ = 2^-k from two δ = 2^-(k+1) steps of the target network.

    s_tgt = clip(½ s⁻(x_t, t, δ, c) + ½ s⁻(x̃, t+δ, δ, c), ±clip),  x̃ = clip(x_t + δ s⁻(x_t, t, δ, c), ±clip).
    CFG (scale ``cfg_scale``) applies to the rows whose half-step is the finest level (k + 1 = max_level).
    With intrinsic guidance the same ``w`` goes to both half-steps and ``cfg_scale`` is 1 (no CFG mixing).
    ``first_velocity`` is s⁻(x_t, t, δ, c) when the caller already queried it (batched with other queries).
    """
    half_level = k + 1
    delta = torch.pow(2.0, -half_level.float())
    finest = half_level == max_level
    kwargs = {"guided_rows": finest, "scale": cfg_scale, "null_label": null_label, "w": w}
    v1 = (
        first_velocity
        if first_velocity is not None
        else query_with_guidance(target_model, x_t, t, half_level, y, **kwargs)
    )
    x_mid = (x_t + expand_like(delta, x_t) * v1).clamp(-clip, clip)
    v2 = query_with_guidance(target_model, x_mid, t + delta, half_level, y, **kwargs)
    return ((v1 + v2) / 2).clamp(-clip, clip)


class ShortcutObjective:
    """Builds the mixed batch (self-consistency, flow-matching velocity and, with intrinsic guidance, guidance
    rows) and its loss; backbone-agnostic (any ``model(x, t, k, y, w)``).

    Row layout of a batch of B: [0, B_sc) self-consistency, then B_fm − B_g velocity rows, then B_g guidance rows
    (B_g = ⌊B_fm · guidance.fraction⌋ with intrinsic guidance, else 0).
    """

    def __init__(self, method: MethodConfig, num_classes: int):
        self.method = method
        self.num_classes = num_classes
        self.null_label = num_classes
        g = method.guidance
        self.guidance_grid = guidance_grid(g.w_max, g.w_step) if g.intrinsic else None
        self.t_interval = g.t_interval if g.interval else 0.0
        w = method.wavelet
        self.wavelet = (
            WaveletLoss(w.name, w.levels, w.weight, w.level_weights, w.low_weight, w.reduction) if w.enabled else None
        )

    def split_sizes(self, batch_size: int) -> tuple[int, int]:
        """(B_sc, B_fm): B_sc = ⌊B · sc_fraction⌋ self-consistency rows, the rest flow matching."""
        num_sc = math.floor(batch_size * self.method.effective_sc_fraction + 1e-9)
        return num_sc, batch_size - num_sc

    def guidance_rows(self, num_fm: int) -> int:
        return math.floor(num_fm * self.method.guidance.fraction + 1e-9) if self.guidance_grid is not None else 0

    def make_rows(
        self,
        target_model: VelocityModel,
        x1: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        x0: torch.Tensor | None = None,
    ) -> TrainingRows:
        """Inputs and targets of one batch; ``x0`` is the noise paired with ``x1`` (e.g. by optimal transport)."""
        m, device = self.method, x1.device
        num_sc, num_fm = self.split_sizes(x1.shape[0])
        num_guidance = self.guidance_rows(num_fm)
        num_velocity = num_fm - num_guidance
        if m.release_slicing:  # the release takes FM rows from images[:B - B_sc], reusing the SC images
            x1, y = torch.cat([x1[:num_sc], x1[:num_fm]]), torch.cat([y[:num_sc], y[:num_fm]])
        if x0 is None:
            x0 = torch.randn(x1.shape, generator=generator, device=device, dtype=x1.dtype)
        sc, gd = slice(0, num_sc), slice(num_sc + num_velocity, None)

        k_sc = self_consistency_levels(num_sc, m.max_level, device)
        t = torch.cat(
            [times_on_level_grid(k_sc, generator), uniform_grid_times(num_fm, m.base_steps, generator, device)]
        )
        k = torch.cat([k_sc, torch.full((num_fm,), m.max_level, dtype=torch.long, device=device)])
        x_t, v = interpolate(x0, x1, t, m.time_eps), velocity(x0, x1, m.time_eps)

        # Label dropout to ∅ only on velocity rows; SC and guidance rows keep their true labels.
        dropped = torch.rand(num_velocity, generator=generator, device=device) < m.class_dropout
        y_velocity = y[num_sc : num_sc + num_velocity]
        labels = torch.cat(
            [y[sc], torch.where(dropped, torch.full_like(y_velocity, self.null_label), y_velocity), y[gd]]
        )
        w = None
        if self.guidance_grid is not None:
            w = torch.cat(
                [
                    draw_guidance(num_sc, self.guidance_grid, generator, device),
                    torch.zeros(num_velocity, device=device),
                    draw_guidance(num_guidance, self.guidance_grid, generator, device, exclude_zero=True),
                ]
            )

        target = v.clone()
        first_velocity = direction = None
        if num_sc and num_guidance:
            first_velocity, direction = self._first_queries(target_model, x_t, t, k, labels, w, sc, gd)
        if num_sc:
            target[sc] = bootstrap_targets(
                target_model,
                x_t[sc],
                t[sc],
                k[sc],
                labels[sc],
                max_level=m.max_level,
                cfg_scale=1.0 if w is not None else m.bootstrap_cfg_scale,
                null_label=self.null_label,
                clip=m.target_clip,
                w=None if w is None else w[sc],
                first_velocity=first_velocity,
            ).to(target.dtype)
        if num_guidance and direction is not None:
            target[gd] = guided_velocity(v[gd], w[gd], t[gd], direction, self.t_interval).to(target.dtype)
        elif num_guidance:
            target[gd] = guidance_targets(
                target_model,
                x_t[gd],
                t[gd],
                labels[gd],
                v[gd],
                w[gd],
                level=m.max_level,
                null_label=self.null_label,
                t_interval=self.t_interval,
            ).to(target.dtype)
        role = torch.full((x1.shape[0],), VELOCITY, dtype=torch.long, device=device)
        role[sc] = SELF_CONSISTENCY
        role[gd] = GUIDANCE
        return TrainingRows(x_t, t, k, labels, w, target, role)

    @torch.no_grad()
    def _first_queries(self, target_model, x_t, t, k, labels, w, sc: slice, gd: slice):
        """The first half-step of the SC rows and both guidance queries depend only on x_t: one forward for all.

        Fewer, larger calls: at small batch sizes a forward's fixed cost is a large share of its time.
        Returns (s⁻(x_t, t, δ, c, w) of the SC rows, g of the guidance rows)."""
        num_sc, num_guidance = x_t[sc].shape[0], x_t[gd].shape[0]
        queries = direction_queries(x_t[gd], t[gd], labels[gd], level=self.method.max_level, null_label=self.null_label)
        first = (x_t[sc], t[sc], k[sc] + 1, labels[sc], w[sc])
        out = target_model(*(torch.cat([a, b]) for a, b in zip(first, queries, strict=True))).float()
        guided_out = out[num_sc:]
        return out[:num_sc], guided_out[:num_guidance] - guided_out[num_guidance:]

    def row_losses(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row distance: ‖pred − target‖² / dim, plus λ_w · L_wave with the wavelet loss."""
        if self.wavelet is not None:
            return self.wavelet(pred, target)
        return (pred.float() - target.float()).pow(2).flatten(1).mean(1)

    def __call__(
        self,
        model: VelocityModel,
        target_model: VelocityModel,
        x1: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        x0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss (mean over rows, equal weights: α = β = γ = 1) and detached per-role losses."""
        rows = self.make_rows(target_model, x1, y, generator, x0)
        pred = model(rows.x_t, rows.t, rows.k, rows.y, rows.w)
        per_row = self.row_losses(pred, rows.target)
        loss = per_row.mean()
        logs = {"loss": loss.detach()}
        detached = per_row.detach()
        for role, name in ROLE_NAMES.items():
            mask = rows.role == role
            if bool(mask.any()):
                logs[f"loss_{name}"] = detached[mask].mean()
        return loss, logs
