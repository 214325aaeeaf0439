"""Training batches from an encoded dataset: buckets of equal latent shape, sharded by data-parallel rank.

Dynamic resolution without rescaling: every batch holds latents of one shape. Each epoch, under
`seed + epoch`, each bucket's rows are shuffled and cut into global batches of
`per_rank_batch * dp_size`; the last global batch of a bucket is filled by wrapping around that
bucket (so every rank gets a full batch, as DistributedSampler does); global batches are then
shuffled across buckets, and rank r takes slice r of each. The position (epoch, batch) fully
determines what comes next, which is what exact resumption needs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from opensora.data.dataset import EncodedDataset


@dataclass
class DataPosition:
    """Where training is in the data."""

    epoch: int = 0
    batch: int = 0  # global batches already consumed in this epoch


def global_batches(shapes: list[tuple], global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's ordered list of global batches (lists of row indices of one latent shape)."""
    rng = np.random.default_rng([seed, epoch])
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(shapes):
        buckets[tuple(s)].append(i)
    batches = []
    for key in sorted(buckets):
        rows = np.array(buckets[key])
        rng.shuffle(rows)
        n = len(rows)
        n_batches = -(-n // global_batch)
        padded = np.resize(rows, n_batches * global_batch)  # wrap around to fill the last batch
        batches += [padded[b * global_batch : (b + 1) * global_batch].tolist() for b in range(n_batches)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


class BucketBatchSampler(torch.utils.data.Sampler):
    """This rank's batches of one epoch, from global batch `start` on; `set_position` moves it.

    The DataLoader iterates its batch sampler in the main process each time an epoch starts, so one
    loader with persistent workers serves every epoch: workers are not re-spawned at each epoch
    boundary (which cost a whole step per epoch on small datasets).
    """

    def __init__(self, shapes, per_rank_batch: int, dp_rank: int, dp_size: int, seed: int, epoch: int = 0,
                 start: int = 0):
        self.shapes, self.global_batch, self.seed = list(shapes), per_rank_batch * dp_size, seed
        self.lo, self.hi = dp_rank * per_rank_batch, (dp_rank + 1) * per_rank_batch
        self.set_position(epoch, start)

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Serve epoch `epoch` from its global batch `start` on."""
        self.batches = global_batches(self.shapes, self.global_batch, self.seed, epoch)[start:]

    def __iter__(self):
        for b in self.batches:
            yield b[self.lo : self.hi]

    def __len__(self) -> int:
        return len(self.batches)


def collate(rows: list[dict]) -> dict:
    """Stack same-shaped stored latents; text features (B, S, D) float32 and their mask."""
    video = torch.from_numpy(np.stack([r["video"] for r in rows]))
    text = torch.from_numpy(np.stack([r["text"] for r in rows]).astype(np.float32))
    lengths = torch.tensor([r["text_length"] for r in rows])
    mask = torch.arange(text.shape[1])[None] < lengths[:, None]
    return {"video": video, "text": text, "text_mask": mask}


def make_loader(data: EncodedDataset, per_rank_batch: int, dp_rank: int, dp_size: int, seed: int,
                num_workers: int) -> tuple[torch.utils.data.DataLoader, BucketBatchSampler]:
    """A DataLoader over this rank's batches, and its sampler (`set_position` before each epoch)."""
    shapes = [data.latent_shape(i) for i in range(len(data))]  # cached in the dataset, no row reads
    sampler = BucketBatchSampler(shapes, per_rank_batch, dp_rank, dp_size, seed)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        prefetch_factor=2 if num_workers > 0 else None, persistent_workers=num_workers > 0,
    )
    return loader, sampler
