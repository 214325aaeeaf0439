"""Bucketed, rank-sharded, deterministic batches."""

from __future__ import annotations

from collections import Counter

import torch

from opensora.training.data import BucketBatchSampler, global_batches


def test_buckets_cover_every_row_once_and_shapes_never_mix():
    shapes = [(4, 8, 8)] * 7 + [(2, 16, 8)] * 5
    batches = global_batches(shapes, 4, seed=1, epoch=0)
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    seen = Counter(i for b in batches for i in b)
    assert set(seen) == set(range(12))  # everything once ...
    assert sum(seen.values()) == 16  # ... plus wrap-around filling of each bucket's last batch
    assert global_batches(shapes, 4, 1, 0) == batches  # deterministic under a seed
    assert global_batches(shapes, 4, 1, 1) != batches  # a new order each epoch


def test_ranks_split_each_global_batch():
    shapes = [(1, 2, 2)] * 8
    r0 = list(BucketBatchSampler(shapes, 2, 0, 2, seed=0, epoch=0))
    r1 = list(BucketBatchSampler(shapes, 2, 1, 2, seed=0, epoch=0))
    assert len(r0) == len(r1) == 2
    assert sorted(i for b in r0 + r1 for i in b) == list(range(8))
    resumed = list(BucketBatchSampler(shapes, 2, 0, 2, seed=0, epoch=0, start=1))
    assert resumed == r0[1:]


def test_one_loader_serves_every_epoch_with_persistent_workers(encoded_dataset):
    from opensora.data.dataset import EncodedDataset
    from opensora.training.data import make_loader

    data = EncodedDataset(encoded_dataset)
    loader, sampler = make_loader(data, 2, 0, 1, seed=3, num_workers=1)
    shapes = [data.latent_shape(i) for i in range(len(data))]
    for epoch, start in [(0, 0), (1, 0), (2, 1)]:
        sampler.set_position(epoch, start)
        got = [b["video"] for b in loader]
        expected = list(BucketBatchSampler(shapes, 2, 0, 1, seed=3, epoch=epoch, start=start))
        assert len(got) == len(expected) > 0
        for video, rows in zip(got, expected):
            assert torch.equal(video, torch.stack([torch.from_numpy(data[i]["video"].copy()) for i in rows]))
    assert loader._iterator is not None and loader._iterator._persistent_workers
