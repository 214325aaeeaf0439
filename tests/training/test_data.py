"""Bucketed, rank-sharded, deterministic, honest batches; latents cropped to the patch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from opensora.errors import UserError
from opensora.training.data import BucketBatchSampler, crop_to_patch, epoch_steps, plan_buckets


def _rows(steps):
    return [i for step in steps for b in step for i in b]


def test_every_row_once_per_epoch_and_no_batch_repeats_a_row():
    shapes = [(4, 8, 8)] * 7 + [(2, 16, 8)] * 5 + [(1, 4, 4)] * 1
    batch_of = {(4, 8, 8): 4, (2, 16, 8): 4, (1, 4, 4): 4}
    for dp in (1, 2, 3):
        steps = epoch_steps(shapes, batch_of, dp, seed=1, epoch=0)
        assert all(len(step) == dp for step in steps)
        for step in steps:
            for b in step:
                assert len({shapes[i] for i in b}) == 1  # a rank's batch is one shape
                assert len(set(b)) == len(b)  # and never repeats a row
        assert Counter(_rows(steps)) == Counter(range(13))  # each row exactly once
    assert epoch_steps(shapes, batch_of, 2, 1, 0) == epoch_steps(shapes, batch_of, 2, 1, 0)  # deterministic
    assert epoch_steps(shapes, batch_of, 2, 1, 1) != epoch_steps(shapes, batch_of, 2, 1, 0)  # new order each epoch


def test_single_row_batches_that_cannot_be_dealt_evenly_sit_out_at_most_dp_minus_one():
    shapes = [(1, 2, 2)] * 5
    steps = epoch_steps(shapes, {(1, 2, 2): 1}, 2, seed=0, epoch=0)
    assert len(steps) == 2 and len(set(_rows(steps))) == 4


def test_ranks_split_each_step_and_resume_mid_epoch():
    shapes = [(1, 2, 2)] * 8
    batch_of = {(1, 2, 2): 2}
    r0 = list(BucketBatchSampler(shapes, batch_of, 0, 2, seed=0, epoch=0))
    r1 = list(BucketBatchSampler(shapes, batch_of, 1, 2, seed=0, epoch=0))
    assert len(r0) == len(r1) == 2
    assert sorted(i for b in r0 + r1 for i in b) == list(range(8))
    assert list(BucketBatchSampler(shapes, batch_of, 0, 2, seed=0, epoch=0, start=1)) == r0[1:]


def test_token_budget_gives_small_shapes_bigger_batches():
    shapes = [(4, 16, 16, 3)] * 10 + [(4, 64, 64, 3)] * 10
    plan = plan_buckets(shapes, (0, 1, 2), (1, 2, 2), per_rank_batch=2, dp_size=1, max_tokens=1024)
    by = {b.shape: b for b in plan.buckets}
    assert by[(4, 16, 16, 3)].tokens == 256 and by[(4, 16, 16, 3)].batch == 4
    assert by[(4, 64, 64, 3)].tokens == 4096 and by[(4, 64, 64, 3)].batch == 1
    assert plan.steps_per_epoch == 3 + 10


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
    batch_of = {tuple(s): 2 for s in shapes}
    loader, sampler = make_loader(data, batch_of, 0, 1, seed=3, num_workers=1)
    for epoch, start in [(0, 0), (1, 0), (2, 1)]:
        sampler.set_position(epoch, start)
        got = [b["video"] for b in loader]
        expected = list(BucketBatchSampler(shapes, batch_of, 0, 1, seed=3, epoch=epoch, start=start))
        assert len(got) == len(expected) > 0
        for video, rows in zip(got, expected):
            assert torch.equal(video, torch.stack([torch.from_numpy(data[i]["video"].copy()) for i in rows]))
    assert loader._iterator is not None and loader._iterator._persistent_workers
