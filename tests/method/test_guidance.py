"""Intrinsic and interval guidance pinned to METHOD.md §B2 on closed-form cases."""

import pytest
import torch

from ism.config import MethodConfig
from ism.method.guidance import draw_guidance, guidance_grid, guidance_targets, interval_mask
from ism.method.shortcut import GUIDANCE, SELF_CONSISTENCY, VELOCITY, ShortcutObjective

NULL = 2  # two classes; label 2 is ∅
MU = torch.tensor([[1.5, -0.5], [-1.0, 2.0]])  # class means (x1 | c = μ_c exactly)
MU_BAR = MU.mean(0)


class ClosedFormVelocity(torch.nn.Module):
    """With x1 | c = μ_c (a point mass), v_c(x_t) = E[x1 − x0 | x_t, c] = (μ_c − x_t)/(1 − t) (ε = 0);
    the unconditional output uses the class-mean point (μ̄ − x_t)/(1 − t). Records every query."""

    def __init__(self):
        super().__init__()
        self.queries = []

    def forward(self, x, t, k, y, w=None):
        self.queries.append((k.clone(), y.clone(), None if w is None else w.clone()))
        centre = torch.where((y == NULL)[:, None], MU_BAR.expand(len(y), 2), MU[y.clamp(max=1)])
        return (centre - x) / (1 - t)[:, None]


def _objective(**guidance):
    method = MethodConfig(
        name="ism",
        sc_fraction=0.25,
        time_eps=0.0,
        class_dropout=0.0,
        guidance={"intrinsic": True, **guidance},
    )
    return ShortcutObjective(method, num_classes=2)


def test_guidance_grid_and_draws():
    grid = guidance_grid(3.5, 0.25)
    assert len(grid) == 15 and grid[0] == 0 and grid[-1] == 3.5
    g = torch.Generator().manual_seed(0)
    w = draw_guidance(3000, grid, g, torch.device("cpu"), exclude_zero=True)
    assert set(w.tolist()) == set(grid[1:].tolist()), "every nonzero value is drawn, zero never"
    assert 0 in draw_guidance(3000, grid, g, torch.device("cpu")).tolist()


def test_guidance_target_is_cfg_with_scale_one_plus_w_in_expectation():
    """For x1 | c = μ_c the sampled velocity x1 − x0 equals v_c(x_t) exactly, so the target equals its
    expectation: tgt = v_c + w (v_c − v_u) for t ≥ t_int and v_c below (interval guidance)."""
    objective = _objective(t_interval=0.3)
    y = torch.arange(256) % 2
    x1 = MU[y]
    rows = objective.make_rows(ClosedFormVelocity(), x1, y, torch.Generator().manual_seed(0))
    gd = rows.role == GUIDANCE
    assert int(gd.sum()) == 96, "half of the 192 flow-matching rows"
    x_t, t, w = rows.x_t[gd], rows.t[gd], rows.w[gd]
    v_c = (MU[y[gd]] - x_t) / (1 - t)[:, None]
    v_u = (MU_BAR - x_t) / (1 - t)[:, None]
    on = (t >= 0.3).float()[:, None]
    expected = v_c + on * w[:, None] * (v_c - v_u)
    assert torch.allclose(rows.target[gd], expected, atol=1e-4)
    assert (t < 0.3).any() and (t >= 0.3).any(), "both sides of the interval are exercised"
    assert torch.all(w > 0) and torch.equal(rows.y[gd], y[gd]), "guidance rows: w > 0, true labels"


def test_interval_switch_and_mask():
    assert interval_mask(torch.tensor([0.0, 0.29, 0.3, 0.9]), 0.3).tolist() == [0, 0, 1, 1]
    objective = _objective(interval=False)
    y = torch.arange(64) % 2
    rows = objective.make_rows(ClosedFormVelocity(), MU[y], y, torch.Generator().manual_seed(1))
    gd = rows.role == GUIDANCE
    x_t, t, w = rows.x_t[gd], rows.t[gd], rows.w[gd]
    v_c = (MU[y[gd]] - x_t) / (1 - t)[:, None]
    v_u = (MU_BAR - x_t) / (1 - t)[:, None]
    assert torch.allclose(rows.target[gd], v_c + w[:, None] * (v_c - v_u), atol=1e-4), "no mask when off"


def test_guidance_direction_comes_from_w0_queries_of_the_target_network_at_the_finest_level():
    model = ClosedFormVelocity()
    x_t = torch.zeros(3, 2)
    t = torch.tensor([0.5, 0.5, 0.1])
    out = guidance_targets(
        model,
        x_t,
        t,
        torch.tensor([0, 1, 0]),
        torch.zeros(3, 2),
        torch.tensor([1.0, 2.0, 3.0]),
        level=7,
        null_label=NULL,
        t_interval=0.3,
    )
    k, y, w = model.queries[-1]
    assert torch.all(k == 7) and torch.all(w == 0), "g = s⁻(c, d=0, w=0) − s⁻(∅, d=0, w=0)"
    assert y.tolist() == [0, 1, 0, NULL, NULL, NULL]
    assert torch.allclose(out[0], 1.0 * (MU[0] - MU_BAR) / 0.5)
    assert torch.allclose(out[1], 2.0 * (MU[1] - MU_BAR) / 0.5)
    assert torch.all(out[2] == 0), "t < t_int: no guidance"


def test_row_roles_labels_and_w():
    objective = ShortcutObjective(
        MethodConfig(name="ism", sc_fraction=0.25, class_dropout=1.0, guidance={"intrinsic": True}), num_classes=2
    )
    y = torch.arange(64) % 2
    model = ClosedFormVelocity()
    rows = objective.make_rows(model, MU[y], y, torch.Generator().manual_seed(2))
    sc, vel, gd = (rows.role == r for r in (SELF_CONSISTENCY, VELOCITY, GUIDANCE))
    assert (int(sc.sum()), int(vel.sum()), int(gd.sum())) == (16, 24, 24)
    assert torch.all(rows.w[vel] == 0) and torch.all(rows.y[vel] == NULL), "velocity rows: w = 0, dropout"
    assert torch.equal(rows.y[sc], y[:16]) and torch.equal(rows.y[gd], y[gd]), "no dropout elsewhere"
    assert torch.all(rows.k[vel | gd] == 7)
    # Self-consistency rows: the same w in both teacher half-steps, and no CFG (∅) queries among them. The first
    # half-step shares one forward with the guidance queries (16 SC rows, then 24 with c and 24 with ∅).
    (k1, labels1, w1), (k2, labels2, w2) = model.queries
    assert len(k1) == 16 + 2 * 24 and len(k2) == 16
    for k, labels, w in ((k1[:16], labels1[:16], w1[:16]), (k2, labels2, w2)):
        assert torch.equal(w, rows.w[sc]) and not torch.any(labels == NULL)
        assert torch.equal(k, rows.k[sc] + 1)
    assert torch.all(w1[16:] == 0) and torch.all(labels1[40:] == NULL) and torch.all(k1[16:] == 7)


def test_without_intrinsic_guidance_rows_have_no_w():
    objective = ShortcutObjective(MethodConfig(name="sm"), num_classes=2)
    rows = objective.make_rows(
        ClosedFormVelocity(), torch.zeros(16, 2), torch.zeros(16, dtype=torch.long), torch.Generator()
    )
    assert rows.w is None and not (rows.role == GUIDANCE).any()


def test_grid_must_divide():
    with pytest.raises(ValueError, match="multiple of w_step"):
        MethodConfig(guidance={"w_max": 1.0, "w_step": 0.3})


def test_fused_first_queries_give_the_same_targets_as_separate_calls():
    """make_rows batches the SC rows' first half-step with both guidance queries into one forward."""
    from ism.method.shortcut import bootstrap_targets
    from ism.models import DiT

    torch.manual_seed(0)
    net = DiT(
        input_size=4,
        in_channels=1,
        num_classes=2,
        patch_size=2,
        hidden_size=32,
        depth=1,
        num_heads=2,
        guidance_embedding=True,
    )
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape) * 0.05)  # leave the zero init so every input matters
    objective = _objective()
    y = torch.arange(32) % 2
    x1 = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    rows = objective.make_rows(net, x1, y, torch.Generator().manual_seed(2))
    sc, gd = rows.role == SELF_CONSISTENCY, rows.role == GUIDANCE
    separate_sc = bootstrap_targets(
        net,
        rows.x_t[sc],
        rows.t[sc],
        rows.k[sc],
        rows.y[sc],
        max_level=7,
        cfg_scale=1.0,
        null_label=NULL,
        clip=4.0,
        w=rows.w[sc],
    )
    assert torch.allclose(rows.target[sc], separate_sc, atol=1e-5)
    t = rows.t[gd].reshape(-1, 1, 1, 1)
    velocity = (x1[gd] - rows.x_t[gd]) / (1 - t)  # ε = 0: x_t = (1 − t) x0 + t x1, v = x1 − x0
    separate_gd = guidance_targets(
        net, rows.x_t[gd], rows.t[gd], rows.y[gd], velocity, rows.w[gd], level=7, null_label=NULL, t_interval=0.3
    )
    assert torch.allclose(rows.target[gd], separate_gd, atol=1e-4)
