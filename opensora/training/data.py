"""Training batches from an encoded dataset: global batches of one latent shape, the same on any layout.

Dynamic resolution without rescaling: a batch holds latents of one stored shape, centre-cropped at
train time to multiples of the model's patch (`crop_to_patch`). Each epoch, under (seed, epoch),
each bucket's rows are shuffled and cut into global batches of that bucket's size (`--batch-size`,
or from `--max-tokens-per-batch`); the last one of a bucket is smaller, so no batch repeats a row
and every row is seen once per epoch. The global batches of all buckets are shuffled together.

The sequence of global batches does not depend on the number of processes: a step takes the next
global batch and deals it to the data-parallel ranks as evenly as possible. A rank left without a
row (a batch smaller than the ranks) gets a padding row of weight 0, which adds nothing to the
loss. Each sample carries a seed derived from (seed, epoch, batch, index), from which its timestep
and noise are drawn, and the loss is the mean over the global batch: a run resumed on another
`--nproc` or `--sp-size` continues with the same samples, noise and losses. The position
(epoch, batch) is all that resumption needs.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from opensora.errors import UserError


@dataclass
class DataPosition:
    """Where training is in the data."""

    epoch: int = 0
    batch: int = 0  # steps already taken in this epoch


@dataclass
class Bucket:
    """One stored latent shape: what training makes of it."""

    shape: tuple[int, ...]  # stored
    thw: tuple[int, int, int]  # latent frames x height x width as stored
    train_thw: tuple[int, int, int]  # after the centre crop to the patch
    rows: int
    tokens: int  # per sample
    batch: int  # per rank (the global batch over the data-parallel ranks, rounded up)
    global_batch: int


@dataclass
class BucketPlan:
    """Every bucket of a dataset for one model and layout; `steps_per_epoch` counts optimizer steps."""

    buckets: list[Bucket] = field(default_factory=list)
    patch: tuple[int, int, int] = (1, 1, 1)
    dp_size: int = 1
    steps_per_epoch: int = 0

    def mix_images(self, image_ratio: float | None) -> None:
        """Recount `steps_per_epoch` for `epoch_batches`'s image share (one-frame buckets are the images)."""
        if image_ratio is None:
            return
        per = [(-(-b.rows // b.global_batch), b.thw[0] == 1) for b in self.buckets]
        videos, images = sum(n for n, img in per if not img), sum(n for n, img in per if img)
        self.steps_per_epoch = sum(mixed_batch_counts(videos, images, image_ratio))
        if not self.steps_per_epoch:
            raise UserError(f"--image-ratio {image_ratio:g} leaves no batch: the data has {videos} video and {images} "
                            "image batches an epoch; pass another ratio or drop --image-ratio")

    def global_batch_of(self) -> dict[tuple, int]:
        """Global batch size by stored shape (what defines the data order)."""
        return {b.shape: b.global_batch for b in self.buckets}


def crop_thw(thw: tuple[int, int, int], patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """The largest multiple of the patch inside `thw`."""
    return tuple(x // p * p for x, p in zip(thw, patch))


def crop_to_patch(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """Centre-crop (B, C, T, H, W) in space and keep the first frames, to multiples of the patch."""
    t, h, w = crop_thw(tuple(x.shape[-3:]), patch)
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., :t, top : top + h, left : left + w]


def plan_buckets(shapes: list[tuple], thw_axes: tuple[int, int, int], patch: tuple[int, int, int],
                 per_rank_batch: int, dp_size: int, max_tokens: int | None = None,
                 files: list[str] | None = None) -> BucketPlan:
    """Each bucket's latent shape, rows, tokens and batch; a UserError for any the model cannot train."""
    counts = Counter(tuple(s) for s in shapes)
    plan = BucketPlan(patch=tuple(patch), dp_size=dp_size)
    too_small = []
    for shape, rows in sorted(counts.items()):
        thw = tuple(shape[a] for a in thw_axes)
        train = crop_thw(thw, patch)
        if min(train) == 0:
            too_small.append((shape, rows))
            continue
        tokens = math.prod(x // p for x, p in zip(train, patch))
        batch = max(1, max_tokens // tokens) if max_tokens else per_rank_batch
        plan.buckets.append(Bucket(shape, thw, train, rows, tokens, batch, batch * dp_size))
    if too_small:
        n = sum(r for _, r in too_small)
        example = ""
        if files is not None:
            bad = {s for s, _ in too_small}
            example = f" (e.g. {next(f for f, s in zip(files, shapes) if tuple(s) in bad)})"
        shape = "x".join(map(str, too_small[0][0]))
        raise UserError(f"{n} rows have latents smaller than one patch {tuple(patch)} (stored {shape}){example}; "
                        "re-encode with a larger --resolution or a longer --max-frames, or train a model with a "
                        "smaller patch (--model DiT/S-2, --temporal-patch 1)")
    plan.steps_per_epoch = sum(-(-b.rows // b.global_batch) for b in plan.buckets)
    return plan


def plan_dataset(data, patch: tuple[int, int, int], batch_size: int, dp_size: int,
                 max_tokens: int | None = None) -> BucketPlan:
    """`plan_buckets` for an EncodedDataset: the check `train` runs before starting, and the trainer's plan."""
    from opensora.compression import COMPRESSIONS

    if batch_size % dp_size:
        raise UserError(f"--batch-size {batch_size} is not divisible by the data-parallel size {dp_size}")
    thw_axes = COMPRESSIONS[data.manifest["compression"]["name"]].thw_axes
    return plan_buckets([data.latent_shape(i) for i in range(len(data))], thw_axes, patch, batch_size // dp_size, dp_size, max_tokens, data.files)


def epoch_batches(shapes: list[tuple], global_batch_of: dict[tuple, int], seed: int, epoch: int,
                  image_ratio: float | None = None, image_shapes: frozenset = frozenset()) -> list[list[int]]:
    """The epoch's global batches (row indices of one shape each), in order; independent of the layout.

    With `image_ratio`, batches of `image_shapes` (one-frame latents: images) make that share of the
    epoch: the video batches once each, and as many image batches as the share asks, cycling through
    them in a shuffled order (so an image may come twice an epoch, or not at all).
    """
    rng = np.random.default_rng([seed, epoch])
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(shapes):
        buckets[tuple(s)].append(i)
    batches: list[list[int]] = []
    for key in sorted(buckets):
        rows = np.array(buckets[key])
        rng.shuffle(rows)
        g = global_batch_of[key]
        batches += [rows[lo : lo + g].tolist() for lo in range(0, len(rows), g)]
    if image_ratio is not None and image_shapes:
        images = [b for b in batches if shapes[b[0]] in image_shapes]
        videos = [b for b in batches if shapes[b[0]] not in image_shapes]
        n_videos, n_images = mixed_batch_counts(len(videos), len(images), image_ratio)
        order = rng.permutation(len(images)) if images else []
        batches = videos[:n_videos] + [images[order[k % len(images)]] for k in range(n_images)]
    return [batches[i] for i in rng.permutation(len(batches))]


def mixed_batch_counts(videos: int, images: int, image_ratio: float) -> tuple[int, int]:
    """(video, image) batches of an epoch whose natural counts are `videos` and `images`, for `image_ratio`."""
    if not images:
        return videos, 0
    if image_ratio >= 1:
        return 0, images
    if not videos:
        return 0, images if image_ratio > 0 else 0
    return videos, round(image_ratio / (1 - image_ratio) * videos)


def sample_seed(seed: int, epoch: int, batch: int, index: int) -> int:
    """The seed of one sample's timestep, noise and text dropout (the same on any layout)."""
    return int(np.random.SeedSequence([seed, epoch, batch, index]).generate_state(1, np.uint64)[0] >> 1)


def deal(batch: list[int], dp_rank: int, dp_size: int) -> tuple[list[int], list[int]]:
    """This rank's share of a global batch: (positions in the batch, weights); a weight-0 pad if none."""
    n = len(batch)
    lo, hi = dp_rank * n // dp_size, (dp_rank + 1) * n // dp_size
    if hi > lo:
        return list(range(lo, hi)), [1] * (hi - lo)
    return [min(lo, n - 1)], [0]


class BucketBatchSampler(torch.utils.data.Sampler):
    """This rank's share of each global batch of one epoch, from batch `start` on; `set_position` moves it.

    Yields lists of (row, weight, sample seed, global batch size) for `StepRows`. The DataLoader
    iterates its batch sampler in the main process each time an epoch starts, so one loader with
    persistent workers serves every epoch (re-spawning workers cost a whole step per epoch).
    """

    def __init__(self, shapes, global_batch_of: dict[tuple, int], dp_rank: int, dp_size: int, seed: int,
                 epoch: int = 0, start: int = 0, image_ratio: float | None = None, image_shapes: frozenset = frozenset()):
        self.shapes, self.global_batch_of, self.seed = [tuple(s) for s in shapes], global_batch_of, seed
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.image_ratio, self.image_shapes = image_ratio, image_shapes
        self.set_position(epoch, start)

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Serve epoch `epoch` from its global batch `start` on."""
        self.epoch, self.start = epoch, start
        self.batches = epoch_batches(self.shapes, self.global_batch_of, self.seed, epoch, self.image_ratio,
                                     self.image_shapes)[start:]

    def __iter__(self):
        for b, batch in enumerate(self.batches, self.start):
            positions, weights = deal(batch, self.dp_rank, self.dp_size)
            yield [(batch[j], w, sample_seed(self.seed, self.epoch, b, j), len(batch)) for j, w in zip(positions, weights)]

    def __len__(self) -> int:
        return len(self.batches)


class StepRows(torch.utils.data.Dataset):
    """Dataset rows with their loss weight, sample seed and global batch size attached."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, int, int, int]) -> dict:
        row, weight, seed, n = item
        return {**self.data[row], "weight": weight, "seed": seed, "global_batch": n}


def stack_batch(rows: list[dict]) -> dict:
    """Stack same-shaped stored latents; text features (B, S, D) float32 and their mask."""
    video = torch.from_numpy(np.stack([r["video"] for r in rows]))
    text = torch.from_numpy(np.stack([r["text"] for r in rows]).astype(np.float32))
    lengths = torch.tensor([r["text_length"] for r in rows])
    mask = torch.arange(text.shape[1])[None] < lengths[:, None]
    out = {"video": video, "text": text, "text_mask": mask}
    if "weight" in rows[0]:
        out["weight"] = torch.tensor([float(r["weight"]) for r in rows])
        out["seeds"] = [r["seed"] for r in rows]
        out["global_batch"] = rows[0]["global_batch"]
    return out


def image_shapes(data) -> frozenset:
    """The stored latent shapes of one frame (images, and one-frame videos) in an EncodedDataset."""
    from opensora.compression import COMPRESSIONS

    t_axis = COMPRESSIONS[data.manifest["compression"]["name"]].thw_axes[0]
    return frozenset(s for s in {data.latent_shape(i) for i in range(len(data))} if s[t_axis] == 1)


def make_loader(data, global_batch_of: dict[tuple, int], dp_rank: int, dp_size: int, seed: int,
                num_workers: int, image_ratio: float | None = None) -> tuple[torch.utils.data.DataLoader, BucketBatchSampler]:
    """A DataLoader over this rank's batches, and its sampler (`set_position` before each epoch)."""
    shapes = [data.latent_shape(i) for i in range(len(data))]  # cached in the dataset, no row reads
    sampler = BucketBatchSampler(shapes, global_batch_of, dp_rank, dp_size, seed, image_ratio=image_ratio,
                                 image_shapes=image_shapes(data) if image_ratio is not None else frozenset())
    loader = torch.utils.data.DataLoader(
        StepRows(data), batch_sampler=sampler, collate_fn=stack_batch, num_workers=num_workers,
        prefetch_factor=2 if num_workers > 0 else None, persistent_workers=num_workers > 0,
    )
    return loader, sampler
