"""2-D toy distributions and the sliced Wasserstein-2 distance used to score samples of them.

Both samplers draw every random number from the given ``torch.Generator``, so a seed fixes the data.
"""

from __future__ import annotations

import math

import torch

CHECKERBOARD_CELLS = 4  # a 4 x 4 board of unit squares covering [-2, 2]^2
EIGHT_GAUSSIANS_RADIUS = 2.0
# Adjacent centres are 2 * 2 * sin(pi / 8) ≈ 1.53 apart, about 15 standard deviations: clearly 8 modes.
EIGHT_GAUSSIANS_STD = 0.1


def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points, float32 (n, 2), uniform on the 8 black squares of a 4 x 4 board of unit squares.

    The board covers [-2, 2]^2. Cell (col, row), both in 0..3, is [col - 2, col - 1) x [row - 2, row - 1)
    and is black when ``col + row`` is even (so the corner cell at (-2, -2) is black). A point picks one of
    the 8 black cells uniformly, then a uniform position inside it. No rescaling: each coordinate is
    uniform on [-2, 2] (std 2/sqrt(3) ≈ 1.15), close to unit spread.
    """
    _check_count(n)
    black = torch.randint(0, 2 * CHECKERBOARD_CELLS, (n,), generator=generator)
    row = black // 2
    # Two black cells per row: columns 0, 2 on even rows and 1, 3 on odd rows.
    col = 2 * (black % 2) + row % 2
    offset = torch.rand(n, 2, generator=generator)
    corner = torch.stack([col, row], dim=1).to(torch.float32) - CHECKERBOARD_CELLS / 2
    return corner + offset


def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points, float32 (n, 2), from an equal mixture of 8 isotropic Gaussians.

    Centres ``2 * (cos(k pi/4), sin(k pi/4))`` for k = 0..7, standard deviation 0.1 in each coordinate.
    """
    _check_count(n)
    component = torch.randint(0, 8, (n,), generator=generator)
    centres = eight_gaussian_centres()[component]
    return centres + EIGHT_GAUSSIANS_STD * torch.randn(n, 2, generator=generator)


def eight_gaussian_centres() -> torch.Tensor:
    """The 8 mixture centres, float32 (8, 2), in order k = 0..7."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return (EIGHT_GAUSSIANS_RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)).to(torch.float32)


def sliced_wasserstein2(
    a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between the empirical distributions of the rows of ``a`` and ``b``.

    Both sets are projected on ``num_projections`` random unit directions (Gaussian draws, normalised, from
    ``generator``; a fixed seed 0 when None, so the value never depends on global RNG state). The result is
    ``sqrt(mean over directions of W2^2)`` of the 1-D projections. The 1-D W2 is exact for any n and m: it
    integrates the squared difference of the two empirical quantile (step) functions over [0, 1], which is
    the familiar mean of squared differences of sorted values when n == m. Computed in float64.
    """
    _check_point_sets(a, b, num_projections)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    directions = torch.randn(num_projections, a.shape[1], generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    a_sorted = (a.detach().cpu().to(torch.float64) @ directions.T).sort(dim=0).values
    b_sorted = (b.detach().cpu().to(torch.float64) @ directions.T).sort(dim=0).values
    return math.sqrt(_squared_w2_of_sorted(a_sorted, b_sorted).mean().item())


def _squared_w2_of_sorted(a_sorted: torch.Tensor, b_sorted: torch.Tensor) -> torch.Tensor:
    """Per-column squared 1-D W2 between sorted samples (n, P) and (m, P): one value per column (P,).

    Quantile levels are measured in integer units of 1/(n*m) so the breakpoints i/n and j/m merge exactly.
    Between consecutive breakpoints both quantile functions are constant, so the integral is a weighted sum.
    """
    n, m = a_sorted.shape[0], b_sorted.shape[0]
    if n == m:
        return (a_sorted - b_sorted).square().mean(dim=0)
    breakpoints = torch.cat([torch.arange(0, n * m, m), torch.arange(0, n * m, n), torch.tensor([n * m])])
    breakpoints = breakpoints.unique(sorted=True)
    starts, widths = breakpoints[:-1], breakpoints.diff()
    difference = a_sorted[starts // m] - b_sorted[starts // n]
    return (difference.square() * (widths.to(torch.float64) / (n * m)).unsqueeze(1)).sum(dim=0)


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"number of points must be non-negative, got {n}")


def _check_point_sets(a: torch.Tensor, b: torch.Tensor, num_projections: int) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ValueError(f"expected point sets of shapes (n, d) and (m, d), got {shapes}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("sliced_wasserstein2 needs at least one point in each set")
    if num_projections < 1:
        raise ValueError(f"num_projections must be at least 1, got {num_projections}")
