"""Scaling optimal transport (sOT, iSM §B4): one exact noise–data assignment over a pool of K batches.

Random pairing of noise x0 and data x1 makes the conditional paths cross; minibatch OT re-pairs them along the
optimal assignment, and its quality grows with the number of points matched. sOT decouples that number from
the training batch B: pool K consecutive batches (P = K·B images), draw P noise vectors once, solve

    π* = argmin_π Σ_j ‖x0_π(j) − x1_j‖²        (an exact assignment; scipy.optimize.linear_sum_assignment)

on the squared Euclidean cost C_ij = ‖x0_i‖² + ‖x1_j‖² − 2 x0_i·x1_j (one matrix product), and hand the
re-paired (x0_π(j), x1_j, y_j) back as the K batches. Only the noise moves: every image keeps its label and its
place in the data order, so the batches are exactly those of training without OT (ASSUMPTION: class-agnostic
OT over the pool, METHOD.md §B4). Pool p is a pure function of (seed, p), so a resumed run re-solves the same
pool, and the next pool's assignment can be solved ahead of time in a background thread (scipy only).

Class-wise OT (``class_wise``, ASSUMPTION; off by default, on in the digits study): noise row i is drawn for
image i, so it starts with that image's class c_i; the assignment is solved per class,

    π*_c = argmin Σ_{j: c_j = c} ‖x0_π(j) − x1_j‖²   over bijections of {i: c_i = c},

so every noise vector stays with an image of its own class. x0 then remains independent of y, as at sampling
time. Class-agnostic OT sends noise near each class's images to that class, so the noise "predicts" the label
(measured on digits: a nearest-class-mean rule on the paired noise finds the class 53% of the time, chance 10%),
and a conditional model learns to expect that.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ism.data import BatchSchedule
from ism.runtime import seeded_generator


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """C_ij = ‖a_i − b_j‖² for flattened rows, as ‖a‖² + ‖b‖² − 2 a bᵀ (float64 for an exact assignment)."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min_(0)


def assignment_to_permutation(noise_rows: np.ndarray, data_cols: np.ndarray) -> torch.Tensor:
    """perm with perm[data_cols[i]] = noise_rows[i]: noise[perm[j]] is the partner of data[j]."""
    perm = np.empty_like(noise_rows)
    perm[data_cols] = noise_rows
    return torch.from_numpy(perm).long()


def optimal_pairing(noise: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """perm such that noise[perm[j]] is the optimal partner of data[j] (an exact assignment)."""
    return assignment_to_permutation(*linear_sum_assignment(squared_distances(noise, data).cpu().numpy()))


def solve_assignment(cost: np.ndarray, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noise rows, data columns) of the exact assignment; with ``classes`` (of the rows and the columns alike),
    one assignment per class block, so row i only meets columns of class classes[i]."""
    if classes is None:
        return linear_sum_assignment(cost)
    rows, cols = [], []
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        r, k = linear_sum_assignment(cost[np.ix_(members, members)])
        rows.append(members[r])
        cols.append(members[k])
    return np.concatenate(rows), np.concatenate(cols)


def pairing_cost(noise: torch.Tensor, data: torch.Tensor) -> float:
    """Σ_j ‖noise_j − data_j‖² of the rows as they are paired."""
    return float((noise.flatten(1).double() - data.flatten(1).double()).pow(2).sum())


class PooledPairing:
    """Noise for every training step, re-paired by one exact OT assignment per pool of K batches."""

    def __init__(
        self,
        images: torch.Tensor,
        schedule: BatchSchedule,
        pool_batches: int,
        seed: int,
        prefetch: bool = True,
        labels: torch.Tensor | None = None,
    ):
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be at least 1, got {pool_batches}")
        self.images = images.cpu()
        self.schedule = schedule
        self.pool_batches = pool_batches
        self.seed = seed
        self.labels = None if labels is None else labels.cpu().numpy()  # class-wise OT when given
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sot") if prefetch else None
        self._pending: dict[int, tuple[torch.Tensor, torch.Tensor, Future]] = {}
        self._current: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _prepare(self, pool: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray | None]:
        """Data indices, noise, cost matrix and classes of pool ``pool`` (torch work: on the calling thread)."""
        steps = range(pool * self.pool_batches, (pool + 1) * self.pool_batches)
        indices = torch.cat([self.schedule.indices(s) for s in steps])
        data = self.images[indices]
        generator = seeded_generator(torch.device("cpu"), "sot-noise", self.seed, pool)
        noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
        classes = None if self.labels is None else self.labels[indices.numpy()]
        return indices, noise, squared_distances(noise, data).numpy(), classes

    def solve_pool(self, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(data indices (P,), noise (P, …) paired row by row) of pool ``pool``, solved on this thread."""
        indices, noise, cost, classes = self._prepare(pool)
        return indices, noise[assignment_to_permutation(*solve_assignment(cost, classes))]

    def _pool(self, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._current is not None and self._current[0] == pool:
            return self._current[1], self._current[2]
        pending = self._pending.pop(pool, None)
        if pending is not None:
            indices, noise, future = pending
            noise = noise[assignment_to_permutation(*future.result())]
        else:
            indices, noise = self.solve_pool(pool)
        self._current = (pool, indices, noise)
        if self._executor is not None and pool + 1 not in self._pending:
            # The worker only runs scipy's solver: a thread that has run torch ops keeps an OpenMP team alive that
            # halves the training thread's speed on a small CPU (measured: 40 -> 77 ms per step).
            indices_next, noise_next, cost, classes = self._prepare(pool + 1)
            future = self._executor.submit(solve_assignment, cost, classes)
            self._pending = {pool + 1: (indices_next, noise_next, future)}
        return indices, noise

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(data indices (B,), paired noise (B, …)) of training step ``step``."""
        indices, noise = self._pool(step // self.pool_batches)
        rows = slice((step % self.pool_batches) * self.schedule.batch_size, None)
        size = self.schedule.batch_size
        return indices[rows][:size], noise[rows][:size]

    def wait(self) -> None:
        """Block until the prefetched pool is solved (benchmarks use it to keep solves inside their own timing)."""
        for _, _, future in list(self._pending.values()):
            future.result()

    def close(self) -> None:
        """Stop prefetching (later calls solve synchronously)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor, self._pending = None, {}
