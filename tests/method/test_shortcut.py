"""The shortcut objective pinned to METHOD.md §A on hand-checkable cases."""

import pytest
import torch

from ism.config import MethodConfig
from ism.method.shortcut import (
    ShortcutObjective,
    bootstrap_targets,
    self_consistency_levels,
    times_on_level_grid,
)

NULL = 10  # num_classes = 10 -> the null label is 10


class AffineModel(torch.nn.Module):
    """s(x, t, k, y) = a·x + b·t + c·k + mu[y]: a closed form for bootstrap targets."""

    def __init__(self, a=2.0, b=1.0, c=0.1, mu=None):
        super().__init__()
        self.a, self.b, self.c = a, b, c
        self.mu = torch.zeros(NULL + 1) if mu is None else mu
        self.calls = []

    def forward(self, x, t, k, y, w=None):
        self.calls.append((t.clone(), k.clone(), y.clone()))
        shape = (-1,) + (1,) * (x.dim() - 1)
        return self.a * x + (self.b * t + self.c * k.float() + self.mu[y]).reshape(shape)


def test_level_split_matches_release_for_imagenet_batch():
    # B = 256, 1/8 -> B_sc = 32: levels 6..1 get 4 rows each, level 0 gets 4 + 4 padding rows (METHOD.md A3).
    k = self_consistency_levels(32, max_level=7)
    assert k.tolist() == [6] * 4 + [5] * 4 + [4] * 4 + [3] * 4 + [2] * 4 + [1] * 4 + [0] * 8
    assert 7 not in k.tolist()  # the flow-matching level is never a trained self-consistency step


def test_level_split_pads_with_one_step_rows_when_batch_is_small():
    assert self_consistency_levels(5, max_level=7).tolist() == [0] * 5
    assert self_consistency_levels(16, max_level=7).tolist() == [
        6,
        6,
        5,
        5,
        4,
        4,
        3,
        3,
        2,
        2,
        1,
        1,
        0,
        0,
        0,
        0,
    ]


def test_times_are_multiples_of_the_trained_step_and_cover_the_grid():
    g = torch.Generator().manual_seed(0)
    for level in range(7):
        k = torch.full((4000,), level)
        t = times_on_level_grid(k, g)
        cells = t * 2**level
        assert torch.equal(cells, cells.round()), "t must lie on multiples of D = 2^-k"
        assert set(cells.long().tolist()) == set(range(2**level)), "every grid point 0..1-D is drawn"


def test_bootstrap_target_of_affine_model_by_hand():
    # x_t = 0.5, t = 0.25, trained step 2δ = 1/2 (k = 1), half steps δ = 1/4 at level 2.
    # v1 = 2·0.5 + 0.25 + 0.1·2 = 1.45;  x̃ = 0.5 + 0.25·1.45 = 0.8625
    # v2 = 2·0.8625 + (0.25 + 0.25) + 0.2 = 2.425;  s_tgt = (1.45 + 2.425)/2 = 1.9375
    model = AffineModel()
    target = bootstrap_targets(
        model,
        torch.tensor([[0.5]]),
        torch.tensor([0.25]),
        torch.tensor([1]),
        torch.tensor([3]),
        max_level=7,
        cfg_scale=1.5,
        null_label=NULL,
        clip=4.0,
    )
    assert target.item() == pytest.approx(1.9375, abs=1e-6)
    (t1, k1, _), (t2, k2, _) = model.calls
    assert k1.tolist() == [2] and k2.tolist() == [2], "half steps query level k + 1"
    assert t1.tolist() == [0.25] and t2.tolist() == [0.5], "second half step starts at t + δ"


def test_bootstrap_clips_midpoint_and_target():
    model = AffineModel(a=0.0, b=0.0, c=0.0, mu=torch.full((NULL + 1,), 100.0))
    x_t = torch.zeros(2, 3)
    target = bootstrap_targets(
        model,
        x_t,
        torch.zeros(2),
        torch.tensor([0, 3]),
        torch.tensor([1, 2]),
        max_level=7,
        cfg_scale=1.0,
        null_label=NULL,
        clip=4.0,
    )
    assert torch.all(target == 4.0)
    # The midpoint is clipped too: with a = 1 the second query sees x̃ = clip(0 + δ·100, ±clip).
    model = AffineModel(a=1.0, b=0.0, c=0.0, mu=torch.full((NULL + 1,), 100.0))

    def one_step_target(clip):  # one row at k = 0: δ = 1/2, v1 = 100, x̃ = clip(50)
        zero = torch.zeros(1, dtype=torch.long)
        return bootstrap_targets(
            model,
            torch.zeros(1, 1),
            torch.zeros(1),
            zero,
            zero + 1,
            max_level=7,
            cfg_scale=1.0,
            null_label=NULL,
            clip=clip,
        ).item()

    assert one_step_target(1000.0) == pytest.approx(125.0), "x̃ = 50, v2 = 150 -> (100 + 150)/2"
    assert one_step_target(40.0) == pytest.approx(40.0), "x̃ = 40, v2 = 140 -> 120, clipped to 40"


def test_cfg_only_on_rows_whose_half_steps_query_the_finest_level():
    mu = torch.ones(NULL + 1)
    mu[NULL] = 0.0  # conditional velocity 1, unconditional 0
    model = AffineModel(a=0.0, b=0.0, c=0.0, mu=mu)
    k = self_consistency_levels(14, max_level=7)  # two rows per level 6..0
    target = bootstrap_targets(
        model,
        torch.zeros(14, 1),
        torch.zeros(14),
        k,
        torch.arange(14) % NULL,
        max_level=7,
        cfg_scale=1.5,
        null_label=NULL,
        clip=4.0,
    ).squeeze(1)
    # v_u + 1.5 (v_c - v_u) = 1.5 on the k = 6 rows (half steps at level 7); plain conditional 1.0 elsewhere.
    assert target[k == 6].tolist() == [1.5, 1.5]
    assert torch.all(target[k != 6] == 1.0)


def _objective(**overrides):
    return ShortcutObjective(MethodConfig(**overrides), num_classes=NULL)


def test_batch_split_fractions():
    assert _objective(sc_fraction=0.125).split_sizes(256) == (32, 224)
    assert _objective(sc_fraction=0.25).split_sizes(64) == (16, 48)
    assert _objective(name="fm", sc_fraction=0.25).split_sizes(64) == (0, 64)


def test_flow_matching_rows_lie_on_the_path_with_velocity_targets():
    objective = _objective(sc_fraction=0.25, time_eps=0.0, class_dropout=0.0)
    x1 = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(64) % NULL
    rows = objective.make_rows(AffineModel(), x1, y, torch.Generator().manual_seed(2))
    fm = ~rows.is_self_consistency
    assert int(fm.sum()) == 48 and rows.is_self_consistency[:16].all()
    # x_t + (1 - t) v = x1 exactly when eps = 0; FM rows use the images not given to SC rows (disjoint slices).
    t = rows.t[fm].reshape(-1, 1, 1, 1)
    assert torch.allclose(rows.x_t[fm] + (1 - t) * rows.target[fm], x1[16:], atol=1e-5)
    assert torch.all(rows.k[fm] == 7)
    grid = rows.t[fm] * 128
    assert torch.equal(grid, grid.round()) and grid.max() <= 127


def test_release_slicing_reuses_the_first_images_for_flow_matching():
    objective = _objective(sc_fraction=0.25, time_eps=0.0, class_dropout=0.0, release_slicing=True)
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    rows = objective.make_rows(AffineModel(), x1, torch.zeros(64, dtype=torch.long), torch.Generator())
    fm = ~rows.is_self_consistency
    t = rows.t[fm].unsqueeze(1)
    assert torch.allclose(rows.x_t[fm] + (1 - t) * rows.target[fm], x1[:48], atol=1e-5)


def test_label_dropout_only_on_flow_matching_rows():
    y = torch.arange(256) % NULL
    x1 = torch.zeros(256, 2)
    rows = _objective(sc_fraction=0.25, class_dropout=1.0).make_rows(AffineModel(), x1, y, torch.Generator())
    sc = rows.is_self_consistency
    assert torch.all(rows.y[~sc] == NULL), "every FM label dropped at p = 1"
    assert torch.equal(rows.y[sc], y[:64]), "SC rows keep their true labels"
    rows = _objective(sc_fraction=0.25, class_dropout=0.1).make_rows(
        AffineModel(), torch.zeros(4096, 2), torch.arange(4096) % NULL, torch.Generator().manual_seed(0)
    )
    dropped = (rows.y[~rows.is_self_consistency] == NULL).float().mean().item()
    assert 0.08 < dropped < 0.12
    assert not torch.any(rows.y[rows.is_self_consistency] == NULL)


def test_targets_carry_no_gradient_and_loss_is_mean_of_row_errors():
    net = torch.nn.Linear(2, 2)

    def model(x, t, k, y, w=None):
        return net(x) + t[:, None]

    objective = _objective(sc_fraction=0.25)
    x1 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(16, dtype=torch.long)
    loss, logs = objective(model, model, x1, y, torch.Generator().manual_seed(3))
    rows = objective.make_rows(model, x1, y, torch.Generator().manual_seed(3))
    assert not rows.target.requires_grad
    expected = ((model(rows.x_t, rows.t, rows.k, rows.y) - rows.target) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(logs) == {"loss", "loss_fm", "loss_sc"}
    loss.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_same_generator_seed_gives_identical_rows():
    objective = _objective()
    x1 = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(32) % NULL
    a = objective.make_rows(AffineModel(), x1, y, torch.Generator().manual_seed(7))
    b = objective.make_rows(AffineModel(), x1, y, torch.Generator().manual_seed(7))
    for field in ("x_t", "t", "k", "y", "target"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_flow_matching_has_no_self_consistency_rows_and_no_target_queries():
    model = AffineModel()
    rows = _objective(name="fm").make_rows(
        model, torch.zeros(8, 2), torch.zeros(8, dtype=torch.long), torch.Generator()
    )
    assert not rows.is_self_consistency.any()
    assert model.calls == [], "flow matching never queries the target network"
