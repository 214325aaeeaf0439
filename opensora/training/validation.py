"""Validation loss: the diffusion loss on a fixed set of (sample, timestep, noise) triples.

Row k of the first N rows of the validation dataset is always noised with the same seed and at
the same position on the noise schedule, (k + 0.5) / N (stratified, so every noise level counts
equally), with its caption always given (no text dropout) and no frame given clean. The figure then moves only with the
weights: it compares steps of one run, and runs of one dataset, objective and model input.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist

from opensora.data.dataset import EncodedDataset
from opensora.diffusion import DiffusionConfig, make_objective
from opensora.errors import UserError
from opensora.training.config import data_identity
from opensora.training.data import crop_to_patch, stack_batch

VAL_SEED = 1_000_003  # triple k's noise seed is VAL_SEED + k: apart from the training samples' seeds


def same_text_encoder(a: dict, b: dict) -> bool:
    """Whether two dataset manifests hold features of the same text encoder (its files' digest when both have it)."""
    ia, ib = a.get("text_identity") or {}, b.get("text_identity") or {}
    if ia.get("files") and ib.get("files"):
        same = ia["files"] == ib["files"]
    else:
        same = same_path(a["text_encoder"]["path"], b["text_encoder"]["path"])
    ta, tb = a["text_encoder"], b["text_encoder"]
    return same and (ta.get("dim"), ta.get("max_length")) == (tb.get("dim"), tb.get("max_length"))


def same_path(a: str, b: str) -> bool:
    """Two model references name the same thing: equal, or local paths resolving to one directory."""
    import os

    return a == b or (os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b))


class Validator:
    """The validation loss of `model` over the first `samples` rows of the dataset at `path`."""

    def __init__(self, path: Path, train_manifest: dict, samples: int, patch: tuple[int, int, int],
                 per_rank_batch: int, dp_rank: int, dp_size: int):
        self.data = EncodedDataset(Path(path))
        ours, theirs = data_identity(train_manifest), data_identity(self.data.manifest)
        diffs = ["compression"] if ours["compression"] != theirs["compression"] else []
        if not same_text_encoder(train_manifest, self.data.manifest):
            diffs.append("text encoder")
        if diffs:
            raise UserError(f"--val-data {path}: encoded with another {' and '.join(diffs)} than --data; encode the "
                            "validation split with the training data's settings")
        self.n = min(samples, len(self.data))
        self.patch = patch
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for k in range(self.n):
            by_shape[self.data.latent_shape(k)].append(k)
        chunks = [rows[i : i + per_rank_batch] for _, rows in sorted(by_shape.items())
                  for i in range(0, len(rows), per_rank_batch)]
        # Every data-parallel rank runs the same number of forwards (sharded plugins gather weights in
        # forward, a collective): a rank out of chunks repeats the first one with weight 0.
        rounds = math.ceil(len(chunks) / dp_size)
        self.mine = [(chunks[i], 1.0) if i < len(chunks) else (chunks[0], 0.0)
                     for i in (r * dp_size + dp_rank for r in range(rounds))]

    @torch.no_grad()
    def loss(self, model, diffusion: DiffusionConfig, compressor, autocast, device: torch.device, sp_size: int) -> float:
        """Mean loss over the N triples, the same on every rank (a collective: every rank calls it)."""
        objective = make_objective(dataclasses.replace(diffusion, cfg_dropout=0.0, frame_condition=0.0))
        total = torch.zeros((), device=device)
        for rows, weight in self.mine:
            batch = stack_batch([self.data[k] for k in rows])
            x0 = crop_to_patch(compressor.to_diffusion(batch["video"].to(device)), self.patch)
            at = torch.tensor([(k + 0.5) / self.n for k in rows])
            weights = torch.full((len(rows),), weight)
            with autocast():  # sum of the per-sample losses (x weight)
                loss = objective.loss(model, x0, batch["text"].to(device), batch["text_mask"].to(device),
                                      [VAL_SEED + k for k in rows], weights, 1.0, at=at.to(device))
            total += loss.float()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(total)  # each sequence-parallel rank of a group holds its group's whole loss
        return total.item() / (self.n * sp_size)
