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


def shards_of_rank(batch_size: int, shards: int, rank: int, world_size: int) -> list[int]:
    """The pool shards whose rows rank ``rank`` of ``world_size`` trains on: it takes batch positions
    j ≡ rank (mod world_size) (:meth:`ism.method.shortcut.StepLayout.shard`), shard s holds positions j ≡ s (mod S)."""
    return sorted({j % shards for j in range(rank, batch_size, world_size)})


class PooledPairing:
    """Noise for every training step, re-paired by exact OT assignments over a pool of K batches.

    Data-parallel scheme (ASSUMPTION, METHOD.md §B4 is silent): the pool splits into ``shards`` S independent
    sub-pools, shard s holding batch positions j ≡ s (mod S) of each of the K batches (P/S rows; K·B/S). Shard s of
    pool p is a pure function of (seed, p, s), so every rank that needs a shard solves the same assignment, and
    the pairing of a step is the same at any world size and across a resume. A rank solves only the shards its
    rows come from (``shard_ids``): with S = world size, one sub-pool per rank and no communication; with S = 1,
    one global pool that every rank solves redundantly (no broadcast to wait for, at S-fold compute).
    """

    def __init__(
        self,
        images: torch.Tensor,
        schedule: BatchSchedule,
        pool_batches: int,
        seed: int,
        prefetch: bool = True,
        labels: torch.Tensor | None = None,
        shards: int = 1,
        shard_ids: list[int] | None = None,
    ):
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be at least 1, got {pool_batches}")
        if shards < 1 or schedule.batch_size % shards:
            raise ValueError(
                f"method.transport.shards: {shards} does not divide train.batch_size {schedule.batch_size}"
            )
        self.images = images.cpu()
        self.schedule = schedule
        self.pool_batches = pool_batches
        self.seed = seed
        self.shards = shards
        self.shard_ids = list(range(shards)) if shard_ids is None else sorted(shard_ids)
        self.labels = None if labels is None else labels.cpu().numpy()  # class-wise OT when given
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sot") if prefetch else None
        self._pending: dict[int, tuple[torch.Tensor, list, Future]] = {}
        self._current: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _prepare(self, pool: int) -> tuple[torch.Tensor, list[tuple[torch.Tensor, np.ndarray, np.ndarray | None]]]:
        """Data indices (K, B) of pool ``pool`` and, per solved shard, its noise, cost matrix and classes
        (torch work: on the calling thread)."""
        steps = range(pool * self.pool_batches, (pool + 1) * self.pool_batches)
        indices = torch.stack([self.schedule.indices(s) for s in steps])
        work = []
        for shard in self.shard_ids:
            rows = indices[:, shard :: self.shards].reshape(-1)
            data = self.images[rows]
            generator = seeded_generator(torch.device("cpu"), "sot-noise", self.seed, pool, shard)
            noise = torch.randn(data.shape, generator=generator, dtype=data.dtype)
            classes = None if self.labels is None else self.labels[rows.numpy()]
            work.append((noise, squared_distances(noise, data).numpy(), classes))
        return indices, work

    @staticmethod
    def _solve(work: list[tuple[torch.Tensor, np.ndarray, np.ndarray | None]]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [solve_assignment(cost, classes) for _, cost, classes in work]

    def _assemble(self, indices: torch.Tensor, work: list, solutions: list) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (K·B,), noise (K·B, …)): each solved shard's paired noise at its batch positions; NaN at the
        positions of shards this process does not solve (it never trains on them)."""
        k, b = indices.shape
        shape = work[0][0].shape[1:]
        noise = torch.full((k, b, *shape), float("nan"), dtype=work[0][0].dtype)
        for shard, (shard_noise, _, _), solution in zip(self.shard_ids, work, solutions, strict=True):
            paired = shard_noise[assignment_to_permutation(*solution)]
            noise[:, shard :: self.shards] = paired.reshape(k, b // self.shards, *shape)
        return indices.reshape(-1), noise.reshape(k * b, *shape)

    def solve_pool(self, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(data indices (P,), noise (P, …) paired row by row) of pool ``pool``, solved on this thread."""
        indices, work = self._prepare(pool)
        return self._assemble(indices, work, self._solve(work))

    def _pool(self, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._current is not None and self._current[0] == pool:
            return self._current[1], self._current[2]
        pending = self._pending.pop(pool, None)
        if pending is not None:
            indices, work, future = pending
            indices, noise = self._assemble(indices, work, future.result())
        else:
            indices, noise = self.solve_pool(pool)
        self._current = (pool, indices, noise)
        if self._executor is not None and pool + 1 not in self._pending:
            # The worker only runs scipy's solver: a thread that has run torch ops keeps an OpenMP team alive that
            # halves the training thread's speed on a small CPU (measured: 40 -> 77 ms per step).
            indices_next, work = self._prepare(pool + 1)
            future = self._executor.submit(self._solve, work)
            self._pending = {pool + 1: (indices_next, work, future)}
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
