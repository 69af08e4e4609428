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

Multi-GPU rule (METHOD.md §A3; DESIGN D9): B, B_sc, the level split, the CFG rows, t, w, label dropout and the
noise belong to the *global* batch. :meth:`ShortcutObjective.layout` draws them once from the step's generator
(identical on every rank), rank r of W trains rows r, r + W, … (:meth:`StepLayout.shard`), and with equal shares
DDP's average of the ranks' mean losses is the gradient of the global mean, so any world size takes the
single-process step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
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


@dataclass
class StepLayout:
    """Everything random or positional about one training step's rows, built once for the *global* batch.

    Row j trains on image ``source[j]`` of the step's batch with role, t, level k, guidance scale w, label dropout
    and (without optimal transport) noise x0. Data-parallel rank r of W takes rows r, r + W, r + 2W, …
    (:meth:`shard`), so the union over ranks is the single-process step at any world size (METHOD.md §A3,
    multi-GPU rule; DESIGN D9), and every rank gets a share of each role.
    """

    source: torch.Tensor  # int64 (R,): position in the step's batch of the image row j trains on
    role: torch.Tensor  # int64 (R,): SELF_CONSISTENCY, VELOCITY or GUIDANCE
    t: torch.Tensor
    k: torch.Tensor
    w: torch.Tensor | None
    dropped: torch.Tensor  # bool (R,): label replaced by ∅
    noise: torch.Tensor | None  # x0 per row (None: the caller pairs noise itself, e.g. sOT)

    def __len__(self) -> int:
        return self.source.numel()

    def select(self, index: torch.Tensor | slice) -> StepLayout:
        def take(value: torch.Tensor | None) -> torch.Tensor | None:
            return None if value is None else value[index]

        return StepLayout(*(take(getattr(self, f.name)) for f in fields(self)))

    def shard(self, rank: int, world_size: int) -> StepLayout:
        """Rank ``rank``'s rows: j ≡ rank (mod world_size)."""
        if len(self) % world_size:
            raise ValueError(f"{len(self)} rows do not split over {world_size} processes")
        return self.select(slice(rank, None, world_size))

    def level_counts(self) -> dict[str, dict[int, int]]:
        """{role name: {level k: rows}}: what a dry run prints."""
        counts: dict[str, dict[int, int]] = {}
        for role, name in ROLE_NAMES.items():
            levels = self.k[self.role == role].tolist()
            if levels:
                counts[name] = {k: levels.count(k) for k in sorted(set(levels), reverse=True)}
        return counts


class ShortcutObjective:
    """Builds the mixed batch (self-consistency, flow-matching velocity and, with intrinsic guidance, guidance
    rows) and its loss; backbone-agnostic (any ``model(x, t, k, y, w)``).

    Row layout of a batch of B: [0, B_sc) self-consistency, then B_fm − B_g velocity rows, then B_g guidance rows
    (B_g = ⌊B_fm · guidance.fraction⌋ with intrinsic guidance, else 0). :meth:`layout` draws it for the global
    batch; :meth:`loss` trains any subset of its rows (a data-parallel rank's shard).
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
            WaveletLoss(
                w.name,
                w.levels,
                w.weight,
                w.level_weights,
                w.low_weight,
                w.reduction,
                distance=w.distance,
                weighting=w.weighting,
            )
            if w.enabled
            else None
        )

    def split_sizes(self, batch_size: int) -> tuple[int, int]:
        """(B_sc, B_fm): B_sc = ⌊B · sc_fraction⌋ self-consistency rows, the rest flow matching."""
        num_sc = math.floor(batch_size * self.method.effective_sc_fraction + 1e-9)
        return num_sc, batch_size - num_sc

    def guidance_rows(self, num_fm: int) -> int:
        return math.floor(num_fm * self.method.guidance.fraction + 1e-9) if self.guidance_grid is not None else 0

    def layout(
        self,
        batch_size: int,
        generator: torch.Generator,
        *,
        noise_shape: tuple[int, ...] | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> StepLayout:
        """The global step's rows from the step's generator; x0 ~ N(0, I) per row when ``noise_shape`` is given.

        The draws happen in a fixed order and depend only on (B, generator), never on the world size."""
        m = self.method
        device = device if device is not None else generator.device
        num_sc, num_fm = self.split_sizes(batch_size)
        num_guidance = self.guidance_rows(num_fm)
        num_velocity = num_fm - num_guidance
        positions = torch.arange(batch_size, device=device)
        # The release takes FM rows from images[:B - B_sc], reusing the SC rows' images (METHOD.md §A3 quirk).
        source = torch.cat([positions[:num_sc], positions[:num_fm]]) if m.release_slicing else positions
        role = torch.cat(
            [
                torch.full((num_sc,), SELF_CONSISTENCY, dtype=torch.long, device=device),
                torch.full((num_velocity,), VELOCITY, dtype=torch.long, device=device),
                torch.full((num_guidance,), GUIDANCE, dtype=torch.long, device=device),
            ]
        )
        noise = None  # drawn first: the single-process step draws exactly what it drew before layouts existed
        if noise_shape is not None:
            noise = torch.randn((batch_size, *noise_shape), generator=generator, device=device, dtype=dtype)
        k_sc = self_consistency_levels(num_sc, m.max_level, device)
        k = torch.cat([k_sc, torch.full((num_fm,), m.max_level, dtype=torch.long, device=device)])
        t = torch.cat(
            [times_on_level_grid(k_sc, generator), uniform_grid_times(num_fm, m.base_steps, generator, device)]
        )
        # Label dropout to ∅ only on velocity rows; SC and guidance rows keep their true labels.
        dropped = torch.zeros(batch_size, dtype=torch.bool, device=device)
        dropped[num_sc : num_sc + num_velocity] = (
            torch.rand(num_velocity, generator=generator, device=device) < m.class_dropout
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
        return StepLayout(source, role, t, k, w, dropped, noise)

    def rows(
        self,
        target_model: VelocityModel,
        layout: StepLayout,
        x1: torch.Tensor,
        y: torch.Tensor,
        x0: torch.Tensor | None = None,
    ) -> TrainingRows:
        """Inputs and targets of ``layout``'s rows; ``x1``, ``y`` (and ``x0``, when the layout has no noise, e.g.
        sOT's paired noise) are already row-aligned: row j's image, label and noise."""
        m = self.method
        x0 = layout.noise if x0 is None else x0
        if x0 is None:
            raise ValueError("the layout carries no noise: pass x0")
        t, k, w = layout.t, layout.k, layout.w
        x_t, v = interpolate(x0, x1, t, m.time_eps), velocity(x0, x1, m.time_eps)
        labels = torch.where(layout.dropped, torch.full_like(y, self.null_label), y)
        sc = (layout.role == SELF_CONSISTENCY).nonzero().squeeze(1)
        gd = (layout.role == GUIDANCE).nonzero().squeeze(1)
        target = v.clone()
        first_velocity = direction = None
        if sc.numel() and gd.numel():
            first_velocity, direction = self._first_queries(target_model, x_t, t, k, labels, w, sc, gd)
        if sc.numel():
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
        if gd.numel() and direction is not None:
            target[gd] = guided_velocity(v[gd], w[gd], t[gd], direction, self.t_interval).to(target.dtype)
        elif gd.numel():
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
        return TrainingRows(x_t, t, k, labels, w, target, layout.role)

    def make_rows(
        self,
        target_model: VelocityModel,
        x1: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        x0: torch.Tensor | None = None,
    ) -> TrainingRows:
        """The single-process step: layout of the batch ``x1`` and its rows (``x0``: noise paired with ``x1``)."""
        layout, x1, y, x0 = self._single_process(x1, y, generator, x0)
        return self.rows(target_model, layout, x1, y, x0)

    def _single_process(self, x1, y, generator, x0):
        """The whole batch's layout and its row-aligned images, labels and paired noise (None: the layout's)."""
        noise_shape = None if x0 is not None else tuple(x1.shape[1:])
        layout = self.layout(x1.shape[0], generator, noise_shape=noise_shape, dtype=x1.dtype, device=x1.device)
        src = layout.source
        return layout, x1[src], y[src], None if x0 is None else x0[src]

    @torch.no_grad()
    def _first_queries(self, target_model, x_t, t, k, labels, w, sc: torch.Tensor, gd: torch.Tensor):
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

    def loss(
        self,
        model: VelocityModel,
        target_model: VelocityModel,
        layout: StepLayout,
        x1: torch.Tensor,
        y: torch.Tensor,
        x0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss over ``layout``'s rows (equal weights: α = β = γ = 1) and role statistics: a (3, 2) tensor
        of (sum of row losses, rows) per role, which data-parallel ranks add up (:func:`role_logs`).

        With equal shares per rank, DDP's gradient average of the ranks' means is the gradient of the global mean.
        """
        rows = self.rows(target_model, layout, x1, y, x0)
        pred = model(rows.x_t, rows.t, rows.k, rows.y, rows.w)
        per_row = self.row_losses(pred, rows.target)
        detached = per_row.detach().double()
        stats = torch.stack(
            [torch.stack([detached[rows.role == r].sum(), (rows.role == r).sum().double()]) for r in ROLE_NAMES]
        )
        return per_row.mean(), stats

    def __call__(
        self,
        model: VelocityModel,
        target_model: VelocityModel,
        x1: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator,
        x0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The single-process step's loss and its logs (overall and per-role mean row losses)."""
        layout, x1, y, x0 = self._single_process(x1, y, generator, x0)
        loss, stats = self.loss(model, target_model, layout, x1, y, x0)
        return loss, role_logs(stats)


def role_logs(stats: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'loss': mean over all rows, 'loss_<role>': mean over that role's rows} from (sum, count) per role."""
    total = stats.sum(0)
    logs = {"loss": (total[0] / total[1]).float()}
    for name, (loss_sum, count) in zip(ROLE_NAMES.values(), stats, strict=True):
        if count > 0:
            logs[f"loss_{name}"] = (loss_sum / count).float()
    return logs
