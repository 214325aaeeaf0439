"""Training batches from an encoded dataset: buckets of one latent shape, honest and token-budgeted.

Dynamic resolution without rescaling: a rank's batch holds latents of one stored shape, centre-
cropped at train time to multiples of the model's patch (`crop_to_patch`). Each epoch, under
`seed + epoch`, each bucket's rows are shuffled and cut into per-rank batches of that bucket's size
(`--batch-size / dp`, or from `--max-tokens-per-batch`); the last batch of a bucket is simply
smaller, so no batch repeats a row. The batches of all buckets are shuffled together and dealt to
the data-parallel ranks, one per rank per step (ranks may hold different shapes in one step). When
their number is not a multiple of the ranks, the largest batches are split; only when every batch is
a single row can up to dp-1 rows sit out the epoch. The position (epoch, step) fully determines what
comes next, which is what exact resumption needs.
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
    batch: int  # per rank


@dataclass
class BucketPlan:
    """Every bucket of a dataset for one model and layout; `steps_per_epoch` counts optimizer steps."""

    buckets: list[Bucket] = field(default_factory=list)
    patch: tuple[int, int, int] = (1, 1, 1)
    dp_size: int = 1
    steps_per_epoch: int = 0

    def batch_of(self) -> dict[tuple, int]:
        """Per-rank batch size by stored shape."""
        return {b.shape: b.batch for b in self.buckets}


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
        plan.buckets.append(Bucket(shape, thw, train, rows, tokens, batch))
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
    plan.steps_per_epoch = len(epoch_steps([s for b in plan.buckets for s in [b.shape] * b.rows],
                                           plan.batch_of(), dp_size, 0, 0))
    return plan


def plan_dataset(data_path, model: str, temporal_patch: int, batch_size: int, dp_size: int,
                 max_tokens: int | None = None) -> BucketPlan:
    """`plan_buckets` for a dataset on disk and a model preset (the check `train` runs before starting)."""
    from opensora.compression import THW_AXES
    from opensora.data.dataset import EncodedDataset
    from opensora.models.presets import model_config

    data = EncodedDataset(data_path)
    patch = model_config(model, temporal_patch)["patch_size"]
    if batch_size % dp_size:
        raise UserError(f"--batch-size {batch_size} is not divisible by the data-parallel size {dp_size}")
    return plan_buckets([data.latent_shape(i) for i in range(len(data))], THW_AXES[data.manifest["compression"]["name"]],
                        patch, batch_size // dp_size, dp_size, max_tokens, data.files)


def epoch_steps(shapes: list[tuple], batch_of: dict[tuple, int], dp_size: int, seed: int,
                epoch: int) -> list[list[list[int]]]:
    """The epoch's steps: for each, one list of row indices per data-parallel rank."""
    rng = np.random.default_rng([seed, epoch])
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(shapes):
        buckets[tuple(s)].append(i)
    chunks: list[list[int]] = []
    for key in sorted(buckets):
        rows = np.array(buckets[key])
        rng.shuffle(rows)
        b = batch_of[key]
        chunks += [rows[lo : lo + b].tolist() for lo in range(0, len(rows), b)]
    chunks = [chunks[i] for i in rng.permutation(len(chunks))]
    need = -len(chunks) % dp_size
    while need:  # split the largest batch until every rank gets one per step
        i = max(range(len(chunks)), key=lambda j: len(chunks[j]))
        if len(chunks[i]) < 2:
            break
        half = len(chunks[i]) // 2
        chunks[i : i + 1] = [chunks[i][:half], chunks[i][half:]]
        need -= 1
    n_steps = len(chunks) // dp_size
    return [chunks[s * dp_size : (s + 1) * dp_size] for s in range(n_steps)]


class BucketBatchSampler(torch.utils.data.Sampler):
    """This rank's batches of one epoch, from step `start` on; `set_position` moves it.

    The DataLoader iterates its batch sampler in the main process each time an epoch starts, so one
    loader with persistent workers serves every epoch: workers are not re-spawned at each epoch
    boundary (which cost a whole step per epoch on small datasets).
    """

    def __init__(self, shapes, batch_of: dict[tuple, int], dp_rank: int, dp_size: int, seed: int,
                 epoch: int = 0, start: int = 0):
        self.shapes, self.batch_of, self.seed = [tuple(s) for s in shapes], batch_of, seed
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.set_position(epoch, start)

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Serve epoch `epoch` from its step `start` on."""
        self.steps = epoch_steps(self.shapes, self.batch_of, self.dp_size, self.seed, epoch)[start:]

    def __iter__(self):
        for step in self.steps:
            yield step[self.dp_rank]

    def __len__(self) -> int:
        return len(self.steps)


def collate(rows: list[dict]) -> dict:
    """Stack same-shaped stored latents; text features (B, S, D) float32 and their mask."""
    video = torch.from_numpy(np.stack([r["video"] for r in rows]))
    text = torch.from_numpy(np.stack([r["text"] for r in rows]).astype(np.float32))
    lengths = torch.tensor([r["text_length"] for r in rows])
    mask = torch.arange(text.shape[1])[None] < lengths[:, None]
    return {"video": video, "text": text, "text_mask": mask}


def make_loader(data, batch_of: dict[tuple, int], dp_rank: int, dp_size: int, seed: int,
                num_workers: int) -> tuple[torch.utils.data.DataLoader, BucketBatchSampler]:
    """A DataLoader over this rank's batches, and its sampler (`set_position` before each epoch)."""
    shapes = [data.latent_shape(i) for i in range(len(data))]  # cached in the dataset, no row reads
    sampler = BucketBatchSampler(shapes, batch_of, dp_rank, dp_size, seed)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        prefetch_factor=2 if num_workers > 0 else None, persistent_workers=num_workers > 0,
    )
    return loader, sampler
