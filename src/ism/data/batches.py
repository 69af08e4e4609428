"""A deterministic, resumable data order: the batch of step s is a pure function of (seed, s).

Epoch e is the permutation ``torch.randperm(num_items)`` drawn from a fresh generator seeded with
``derived_seed("epoch", seed, e)`` (a hash, so no two (seed, epoch) pairs share a seed). The epochs'
permutations are concatenated into one endless stream and step s takes stream items [s * B, (s + 1) * B).
A batch may therefore straddle two (or, when B exceeds the number of items, several) epochs, and every item is
seen exactly once per epoch. Nothing depends on earlier calls, so a resumed run draws exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import torch

from ism.runtime import derived_seed


class BatchSchedule:
    """Batch indices for any step, in O(batch size) per call once an epoch's permutation is cached."""

    def __init__(self, num_items: int, batch_size: int, seed: int):
        if num_items < 1:
            raise ValueError(f"num_items must be at least 1, got {num_items}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        # Only the epochs of the latest call are kept: steps usually advance by one.
        self._permutations: dict[int, torch.Tensor] = {}

    def indices(self, step: int) -> torch.Tensor:
        """Item indices of batch ``step``: int64 (batch_size,)."""
        _check_step(step)
        start = step * self.batch_size
        stop = start + self.batch_size
        first_epoch, last_epoch = start // self.num_items, (stop - 1) // self.num_items
        permutations = {e: self._permutation(e) for e in range(first_epoch, last_epoch + 1)}
        self._permutations = permutations
        # Slice before concatenating so a call copies only batch_size items, not whole epochs.
        pieces = []
        for epoch, permutation in permutations.items():
            epoch_start = epoch * self.num_items
            pieces.append(permutation[max(start - epoch_start, 0) : min(stop - epoch_start, self.num_items)])
        return torch.cat(pieces)

    def epoch_of(self, step: int) -> int:
        """The epoch that the first item of batch ``step`` belongs to."""
        _check_step(step)
        return step * self.batch_size // self.num_items

    def _permutation(self, epoch: int) -> torch.Tensor:
        cached = self._permutations.get(epoch)
        if cached is not None:
            return cached
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.num_items, generator=generator)


def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch's permutation."""
    return derived_seed("epoch", seed, epoch)


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
