"""BatchSchedule: a data order that is a pure function of (seed, step), so resumed runs repeat it exactly."""

from __future__ import annotations

import time

import pytest
import torch

from ism.data import BatchSchedule
from ism.data.batches import epoch_seed


def stream(schedule: BatchSchedule, steps: int) -> torch.Tensor:
    return torch.cat([schedule.indices(s) for s in range(steps)])


@pytest.mark.parametrize(("num_items", "batch_size"), [(10, 3), (12, 4), (7, 1), (3, 8), (5, 5)])
def test_every_epoch_covers_every_item_once(num_items: int, batch_size: int):
    schedule = BatchSchedule(num_items, batch_size, seed=0)
    epochs = stream(schedule, steps=6 * num_items).reshape(-1, num_items)  # 6 * batch_size full epochs
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(num_items))
    assert not torch.equal(epochs[0], epochs[1])  # each epoch is reshuffled


def test_batches_have_the_requested_shape_and_dtype():
    batch = BatchSchedule(100, 16, seed=3).indices(41)
    assert batch.shape == (16,) and batch.dtype == torch.int64
    assert batch.min() >= 0 and batch.max() < 100


def test_batch_size_larger_than_the_dataset_spans_several_epochs():
    schedule = BatchSchedule(3, 8, seed=1)
    batch = schedule.indices(0)
    assert batch.shape == (8,)
    assert sorted(batch[:3].tolist()) == sorted(batch[3:6].tolist()) == [0, 1, 2]
    assert schedule.epoch_of(0) == 0 and schedule.epoch_of(1) == 2


def test_indices_do_not_depend_on_call_order_or_on_a_fresh_schedule():
    reference = [BatchSchedule(50, 7, seed=5).indices(s) for s in range(40)]
    shuffled_steps = torch.randperm(40, generator=torch.Generator().manual_seed(0)).tolist()
    out_of_order = BatchSchedule(50, 7, seed=5)
    for step in shuffled_steps:
        assert torch.equal(out_of_order.indices(step), reference[step])
    resumed = BatchSchedule(50, 7, seed=5)  # as after loading a checkpoint at step 23
    assert all(torch.equal(resumed.indices(s), reference[s]) for s in range(23, 40))


def test_indices_follow_the_documented_epoch_seeds():
    schedule = BatchSchedule(20, 6, seed=9)
    permutations = [torch.randperm(20, generator=torch.Generator().manual_seed(epoch_seed(9, e))) for e in range(3)]
    assert len({epoch_seed(s, e) for s in range(50) for e in range(50)}) == 2500, "no (seed, epoch) collisions"
    assert torch.equal(stream(schedule, 10), torch.cat(permutations))


def test_different_seeds_give_different_orders():
    assert not torch.equal(stream(BatchSchedule(30, 5, seed=0), 6), stream(BatchSchedule(30, 5, seed=1), 6))


def test_mutating_a_returned_batch_does_not_change_later_ones():
    schedule = BatchSchedule(30, 5, seed=0)
    first = schedule.indices(1)
    expected = first.clone()
    first.zero_()
    assert torch.equal(schedule.indices(1), expected)
    assert torch.equal(schedule.indices(2), BatchSchedule(30, 5, seed=0).indices(2))


def test_a_far_step_costs_one_epoch_not_the_whole_history():
    schedule = BatchSchedule(1000, 32, seed=0)
    started = time.perf_counter()
    batch = schedule.indices(10**12)
    assert time.perf_counter() - started < 1.0
    assert schedule.epoch_of(10**12) == 32 * 10**12 // 1000
    assert len(set(batch.tolist())) == 32  # starts an epoch (32 * 10**12 is a multiple of 1000): no repeats


def test_epoch_of_counts_whole_epochs():
    schedule = BatchSchedule(10, 4, seed=0)
    assert [schedule.epoch_of(s) for s in range(6)] == [0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize(("num_items", "batch_size"), [(0, 4), (10, 0), (-1, 4)])
def test_invalid_sizes_are_rejected(num_items: int, batch_size: int):
    with pytest.raises(ValueError, match="must be at least 1"):
        BatchSchedule(num_items, batch_size, seed=0)


def test_negative_step_is_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        BatchSchedule(10, 2, seed=0).indices(-1)
