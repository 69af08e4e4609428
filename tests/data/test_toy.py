"""Toy distributions and the sliced Wasserstein-2 distance."""

from __future__ import annotations

import math

import pytest
import torch

from ism.data import checkerboard, eight_gaussians, sliced_wasserstein2
from ism.data.toy import eight_gaussian_centres


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", [checkerboard, eight_gaussians])
def test_samplers_are_deterministic_given_the_generator(sampler):
    points = sampler(1000, seeded(0))
    assert points.shape == (1000, 2) and points.dtype == torch.float32
    assert torch.equal(points, sampler(1000, seeded(0)))
    assert not torch.equal(points, sampler(1000, seeded(1)))


def test_checkerboard_points_lie_on_the_black_squares_evenly():
    points = checkerboard(16000, seeded(0))
    assert points.min() >= -2 and points.max() <= 2
    cells = points.floor().to(torch.int64) + 2  # (col, row) in 0..3
    assert torch.all((cells.sum(dim=1) % 2) == 0)
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    black = counts[counts > 0]
    assert len(black) == 8
    assert torch.all((black - 2000).abs() < 200)
    # Uniform within the cells: each coordinate is uniform on [-2, 2], mean 0 and variance 4/3.
    assert points.mean(dim=0).abs().max() < 0.05
    assert torch.allclose(points.var(dim=0), torch.full((2,), 4 / 3), rtol=0.05)


def test_eight_gaussians_has_eight_equal_tight_clusters():
    points = eight_gaussians(16000, seeded(0))
    centres = eight_gaussian_centres()
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0))
    distances = torch.cdist(points, centres)
    nearest = distances.argmin(dim=1)
    assert torch.all((torch.bincount(nearest, minlength=8) - 2000).abs() < 200)
    to_nearest = distances.min(dim=1).values
    # For a 2-D Gaussian with std 0.1 the distance to the centre has mean 0.1 * sqrt(pi / 2).
    assert to_nearest.mean().item() == pytest.approx(0.1 * math.sqrt(math.pi / 2), rel=0.05)
    assert to_nearest.max() < 0.7  # no point between clusters (adjacent centres are 1.53 apart)


def test_sliced_w2_of_identical_sets_is_zero():
    points = torch.randn(500, 3, generator=seeded(0))
    assert sliced_wasserstein2(points, points.clone()) == 0.0
    assert sliced_wasserstein2(points, points[torch.randperm(500, generator=seeded(1))]) == pytest.approx(0.0)


def test_sliced_w2_of_a_translation_is_the_rms_projected_shift():
    points = torch.randn(400, 3, generator=seeded(0))
    shift = torch.tensor([1.0, -2.0, 0.5])
    value = sliced_wasserstein2(points, points + shift, num_projections=512, generator=seeded(7))
    # Same directions as the function draws: every 1-D distance is exactly |u . s|.
    directions = torch.randn(512, 3, generator=seeded(7), dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    exact = (directions @ shift.double()).square().mean().sqrt().item()
    assert value == pytest.approx(exact, rel=1e-6)
    # In expectation over uniform directions E[(u . s)^2] = |s|^2 / d.
    assert value == pytest.approx(shift.norm().item() / math.sqrt(3), rel=0.1)


def test_sliced_w2_is_symmetric_for_unequal_sizes():
    a = torch.randn(300, 2, generator=seeded(0))
    b = torch.randn(170, 2, generator=seeded(1)) * 1.5 + 0.3
    forward = sliced_wasserstein2(a, b, generator=seeded(5))
    assert forward > 0.1
    assert forward == pytest.approx(sliced_wasserstein2(b, a, generator=seeded(5)), rel=1e-12)


@pytest.mark.parametrize("scale", [3.0, -0.5])
def test_sliced_w2_scales_with_the_data(scale: float):
    a = torch.randn(200, 2, generator=seeded(0))
    b = checkerboard(250, seeded(1))
    base = sliced_wasserstein2(a, b, generator=seeded(2))
    scaled = sliced_wasserstein2(a * scale, b * scale, generator=seeded(2))
    assert scaled == pytest.approx(abs(scale) * base, rel=1e-6)


def test_sliced_w2_for_unequal_sizes_matches_replicated_equal_sizes():
    # Repeating each point k times leaves an empirical distribution unchanged, so sizes n = 6 and m = 4
    # can be compared as 12 vs 12 with plain sorting.
    a = torch.randn(6, 2, generator=seeded(0))
    b = torch.randn(4, 2, generator=seeded(1))
    unequal = sliced_wasserstein2(a, b, generator=seeded(3))
    equal = sliced_wasserstein2(a.repeat(2, 1), b.repeat(3, 1), generator=seeded(3))
    assert unequal == pytest.approx(equal, rel=1e-9)
    assert sliced_wasserstein2(a, a.repeat(5, 1)) == pytest.approx(0.0, abs=1e-12)


def test_sliced_w2_in_one_dimension_is_the_exact_w2():
    # Quantile functions: a is 0 on (0, 1); b is 0 on (0, 1/2) and 1 on (1/2, 1) -> W2^2 = 1/2.
    value = sliced_wasserstein2(torch.tensor([[0.0]]), torch.tensor([[0.0], [1.0]]))
    assert value == pytest.approx(math.sqrt(0.5))


def test_sliced_w2_ignores_the_global_rng():
    a, b = torch.randn(50, 2, generator=seeded(0)), torch.randn(60, 2, generator=seeded(1))
    torch.manual_seed(123)
    first = sliced_wasserstein2(a, b)
    torch.manual_seed(456)
    assert sliced_wasserstein2(a, b) == first


def test_sliced_w2_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes"):
        sliced_wasserstein2(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least one point"):
        sliced_wasserstein2(torch.zeros(0, 2), torch.zeros(5, 2))
