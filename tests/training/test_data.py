"""Bucketed, rank-sharded, deterministic, honest batches; latents cropped to the patch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from opensora.errors import UserError
from opensora.training.data import (
    BucketBatchSampler,
    crop_to_patch,
    deal,
    epoch_batches,
    plan_buckets,
    sample_seed,
)


def test_every_row_once_per_epoch_and_no_batch_repeats_a_row():
    shapes = [(4, 8, 8)] * 7 + [(2, 16, 8)] * 5 + [(1, 4, 4)] * 1
    global_batch_of = {(4, 8, 8): 4, (2, 16, 8): 4, (1, 4, 4): 4}
    batches = epoch_batches(shapes, global_batch_of, seed=1, epoch=0)
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)  # one shape per batch
    assert all(len(set(b)) == len(b) for b in batches)  # never a row twice
    assert Counter(i for b in batches for i in b) == Counter(range(13))  # each row exactly once
    assert sorted(map(len, batches)) == [1, 1, 3, 4, 4]  # the last batch of a bucket is smaller
    assert epoch_batches(shapes, global_batch_of, 1, 0) == batches  # deterministic
    assert epoch_batches(shapes, global_batch_of, 1, 1) != batches  # a new order each epoch


def test_ranks_share_each_global_batch_and_pad_with_weight_zero():
    assert deal([10, 11, 12, 13, 14], 0, 2) == ([0, 1], [1, 1])
    assert deal([10, 11, 12, 13, 14], 1, 2) == ([2, 3, 4], [1, 1, 1])
    assert deal([10], 0, 2) == ([0], [0]) and deal([10], 1, 2) == ([0], [1])  # a pad of weight 0 for rank 0
    shapes = [(1, 2, 2)] * 8
    g = {(1, 2, 2): 4}
    r0 = list(BucketBatchSampler(shapes, g, 0, 2, seed=0, epoch=0))
    r1 = list(BucketBatchSampler(shapes, g, 1, 2, seed=0, epoch=0))
    assert len(r0) == len(r1) == 2
    assert sorted(row for b in r0 + r1 for row, w, _, _ in b if w) == list(range(8))
    assert list(BucketBatchSampler(shapes, g, 0, 2, seed=0, epoch=0, start=1)) == r0[1:]
    # One process sees the same samples with the same seeds as two together
    one = list(BucketBatchSampler(shapes, g, 0, 1, seed=0, epoch=0))
    assert [sorted(x) for x in one] == [sorted(a + b) for a, b in zip(r0, r1)]
    assert sample_seed(0, 0, 1, 2) != sample_seed(0, 0, 2, 1)


def test_token_budget_gives_small_shapes_bigger_batches():
    shapes = [(4, 16, 16, 3)] * 10 + [(4, 64, 64, 3)] * 10
    plan = plan_buckets(shapes, (0, 1, 2), (1, 2, 2), per_rank_batch=2, dp_size=1, max_tokens=1024)
    by = {b.shape: b for b in plan.buckets}
    assert by[(4, 16, 16, 3)].tokens == 256 and by[(4, 16, 16, 3)].batch == 4
    assert by[(4, 64, 64, 3)].tokens == 4096 and by[(4, 64, 64, 3)].batch == 1
    assert by[(4, 16, 16, 3)].global_batch == 4 and plan.steps_per_epoch == 3 + 10


def test_odd_latents_are_cropped_to_the_patch_and_too_small_ones_refused():
    plan = plan_buckets([(4, 10, 45, 80)], (1, 2, 3), (1, 2, 2), 1, 1)  # SD-VAE latent of 640x360
    assert plan.buckets[0].train_thw == (10, 44, 80) and plan.buckets[0].tokens == 10 * 22 * 40
    x = torch.arange(45 * 81, dtype=torch.float32).reshape(1, 1, 1, 45, 81)
    y = crop_to_patch(x, (1, 2, 4))
    assert y.shape == (1, 1, 1, 44, 80) and torch.equal(y, x[..., 0:44, 0:80])
    with pytest.raises(UserError, match=r"smaller than one patch .*\(e\.g\. tiny\.mp4\)"):
        plan_buckets([(5, 1, 1, 3), (4, 8, 8, 3)], (0, 1, 2), (1, 2, 2), 1, 1, files=["tiny.mp4", "ok.mp4"])


def test_one_loader_serves_every_epoch_with_persistent_workers(encoded_dataset):
    from opensora.data.dataset import EncodedDataset
    from opensora.training.data import make_loader

    data = EncodedDataset(encoded_dataset)
    shapes = [data.latent_shape(i) for i in range(len(data))]
    g = {tuple(s): 2 for s in shapes}
    loader, sampler = make_loader(data, g, 0, 1, seed=3, num_workers=1)
    for epoch, start in [(0, 0), (1, 0), (2, 1)]:
        sampler.set_position(epoch, start)
        got = list(loader)
        expected = list(BucketBatchSampler(shapes, g, 0, 1, seed=3, epoch=epoch, start=start))
        assert len(got) == len(expected) > 0
        for batch, rows in zip(got, expected):
            assert torch.equal(batch["video"], torch.stack([torch.from_numpy(data[r]["video"].copy()) for r, *_ in rows]))
            assert batch["seeds"] == [seed for _, _, seed, _ in rows] and batch["global_batch"] == 2
    assert loader.persistent_workers  # the same worker processes served all three epochs
