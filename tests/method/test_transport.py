"""Scaling OT: a true permutation, never costlier than random pairing, labels untouched, K = 1 is minibatch OT,
and the prefetched pairing equals the synchronous one."""

import itertools

import pytest
import torch

from ism.data import BatchSchedule
from ism.method.transport import PooledPairing, assignment_to_permutation, solve_assignment, squared_distances
from ism.runtime import seeded_generator


def optimal_pairing(noise, data):
    """perm such that noise[perm[j]] is the optimal partner of data[j]: one exact assignment over the whole set."""
    return assignment_to_permutation(*solve_assignment(squared_distances(noise, data).cpu().numpy()))


def pairing_cost(noise, data):
    """Σ_j ‖noise_j − data_j‖² of the rows as they are paired."""
    return float((noise.flatten(1).double() - data.flatten(1).double()).pow(2).sum())


def _points(n, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_squared_distances_is_the_pairwise_cost():
    a, b = _points(5), _points(7, seed=1)
    assert torch.allclose(squared_distances(a, b), torch.cdist(a.double(), b.double()).pow(2), atol=1e-9)


def test_assignment_is_a_permutation_and_optimal_on_a_brute_forced_case():
    noise, data = _points(6), _points(6, seed=1)
    perm = optimal_pairing(noise, data)
    assert sorted(perm.tolist()) == list(range(6))
    best = min(pairing_cost(noise[list(p)], data) for p in itertools.permutations(range(6)))
    assert pairing_cost(noise[perm], data) == pytest.approx(best)


def test_never_costlier_than_random_pairing_and_cheaper_on_average():
    gains = []
    for seed in range(20):
        noise, data = _points(64, d=4, seed=seed), _points(64, d=4, seed=100 + seed) + 2.0
        optimal = pairing_cost(noise[optimal_pairing(noise, data)], data)
        random = pairing_cost(noise, data)  # the identity pairing of independent draws is a random pairing
        assert optimal <= random + 1e-9
        gains.append(1 - optimal / random)
    assert sum(gains) / len(gains) > 0.05


def _pairing(pool_batches, prefetch, seed=0, num_items=50, batch=8):
    images = torch.randn(num_items, 1, 2, 2, generator=torch.Generator().manual_seed(9))
    return PooledPairing(images, BatchSchedule(num_items, batch, seed=seed), pool_batches, seed=3, prefetch=prefetch)


def test_batches_keep_the_data_order_so_labels_stay_with_their_images():
    pairing = _pairing(pool_batches=4, prefetch=False)
    for step in range(10):
        indices, noise = pairing.batch(step)
        assert torch.equal(indices, pairing.schedule.indices(step)), "only the noise is re-paired"
        assert noise.shape == (8, 1, 2, 2)


def test_pool_of_one_batch_is_plain_minibatch_ot():
    pairing = _pairing(pool_batches=1, prefetch=False)
    indices, noise = pairing.batch(5)
    data = pairing.images[indices]
    pool_shard = seeded_generator(torch.device("cpu"), "sot-noise", 3, 5, 0)  # (seed, pool, shard)
    raw = torch.randn(data.shape, generator=pool_shard)
    assert torch.equal(noise, raw[optimal_pairing(raw, data)]), "K = 1: OT within the training batch"
    assert torch.equal(optimal_pairing(noise, data), torch.arange(8)), "the returned pairing is already optimal"


def test_larger_pools_lower_the_per_batch_cost_than_random_pairing():
    pooled = _pairing(pool_batches=4, prefetch=False, num_items=256, batch=32)
    generator = torch.Generator().manual_seed(0)
    pooled_cost = random_cost = 0.0
    for step in range(8):
        indices, noise = pooled.batch(step)
        data = pooled.images[indices]
        pooled_cost += pairing_cost(noise, data)
        random_cost += pairing_cost(torch.randn(noise.shape, generator=generator), data)
    assert pooled_cost < 0.95 * random_cost


def test_prefetch_gives_the_same_pairing_as_the_synchronous_path_and_resumes():
    sync, ahead = _pairing(pool_batches=3, prefetch=False), _pairing(pool_batches=3, prefetch=True)
    try:
        for step in range(12):
            a, b = sync.batch(step), ahead.batch(step)
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        resumed = _pairing(pool_batches=3, prefetch=True)  # as after loading a checkpoint at step 7
        for step in range(7, 12):
            assert torch.equal(resumed.batch(step)[1], sync.batch(step)[1])
        resumed.close()
    finally:
        ahead.close()


def _class_from_noise(noise: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> float:
    """Accuracy of a nearest-class-mean rule that guesses each row's label from its paired noise alone."""
    means = torch.stack([images[labels == c].flatten(1).mean(0) for c in range(10)])
    guess = torch.cdist(noise.flatten(1), means).argmin(1)
    return float((guess == labels).double().mean())


def test_class_wise_ot_pairs_within_classes_and_keeps_noise_independent_of_the_label():
    from ism.data import load_dataset

    data = load_dataset("digits")
    images, labels = data.train.images, data.train.labels
    schedule = BatchSchedule(len(labels), 64, seed=0)
    pooled = PooledPairing(images, schedule, 8, seed=0, prefetch=False)
    class_wise = PooledPairing(images, schedule, 8, seed=0, prefetch=False, labels=labels)
    random_noise = torch.randn(512, *images.shape[1:], generator=torch.Generator().manual_seed(0))
    idx, noise_global = pooled.solve_pool(0)
    idx_cw, noise_cw = class_wise.solve_pool(0)
    assert torch.equal(idx, idx_cw), "the data order is the same"
    # Every noise vector of the pool is used once, and class-wise it stays with an image of its own class.
    _, [(raw, _, classes)] = class_wise._prepare(0)  # one shard: the whole pool, in data order
    origin = torch.cdist(noise_cw.flatten(1), raw.flatten(1)).argmin(1).numpy()
    assert sorted(origin.tolist()) == list(range(512))
    assert (classes[origin] == labels[idx].numpy()).all()
    # Cost: global OT <= class-wise OT < random pairing.
    x1 = images[idx]
    costs = [pairing_cost(n, x1) for n in (noise_global, noise_cw, raw)]
    assert costs[0] <= costs[1] < costs[2]
    # Class-agnostic OT leaks the label into the noise; class-wise OT does not (chance is about 0.1).
    y = labels[idx]
    assert _class_from_noise(noise_global, y, x1) > 0.3
    assert _class_from_noise(noise_cw, y, x1) < 0.2
    assert _class_from_noise(random_noise, y, x1) < 0.2


@pytest.mark.parametrize("shards", [1, 2, 4])
def test_sharded_pool_gives_every_rank_the_single_process_pairing_and_survives_a_resume(shards):
    """Each rank solves only the shards of its rows (j = rank mod W); what it trains on is the noise the whole
    pool's pairing gives those rows, at any world size, and a fresh instance (a resumed job) re-solves the same."""
    from ism.method.transport import shards_of_rank

    images = torch.randn(96, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    schedule = BatchSchedule(len(images), 8, seed=1)
    full = PooledPairing(images, schedule, 3, seed=5, prefetch=False, shards=shards)
    for world_size in (1, 2, 4, 8):
        for rank in range(world_size):
            mine = shards_of_rank(8, shards, rank, world_size)
            resumed = PooledPairing(images, schedule, 3, seed=5, prefetch=True, shards=shards, shard_ids=mine)
            for step in (0, 4, 7, 4):  # pools 0, 1, 2 and back to 1 (a resume re-solves a pool)
                idx_full, noise_full = full.batch(step)
                idx, noise = resumed.batch(step)
                assert torch.equal(idx, idx_full)
                assert torch.equal(noise[rank::world_size], noise_full[rank::world_size])
                assert not noise[rank::world_size].isnan().any()
            resumed.close()
    # Shards are independent pools: each one's noise is a permutation of its own draw, never another shard's.
    _, noise = full.solve_pool(0)
    assert not noise.isnan().any() and len({tuple(r.flatten().tolist()) for r in noise}) == len(noise)


def test_shards_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"method\.transport\.shards"):
        PooledPairing(torch.zeros(16, 2), BatchSchedule(16, 8, seed=0), 2, seed=0, shards=3)
