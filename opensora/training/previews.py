"""Sample previews during training: a few prompts from the EMA at fixed seeds every --sample-every steps.

Prompt i is always sampled with seed i at the training data's most common latent shape, so the
videos of successive steps differ only by the weights. Each rank samples its share of the prompts
(rank r takes prompts r, r + world, ...) and writes RUN/samples/step-NNNNNNN/NN-slug.mp4 (+ .png);
rank 0 receives the contact sheets for TensorBoard. The RNG state is restored afterwards, so a run
with previews trains exactly as one without.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from opensora.diffusion import DiffusionConfig
from opensora.errors import UserError
from opensora.fsutil import read_user_text

PREVIEW_CFG_SCALE = 4.0  # sample's default guidance


def read_prompts(path: Path, option: str) -> list[str]:
    """One prompt a line (blank lines skipped); a UserError naming `option` for a missing or empty file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{option} {path}: no such file; pass a text file with one prompt a line")
    prompts = [line.strip() for line in read_user_text(path, option).splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{option} {path}: no prompts in it; write one prompt a line")
    return prompts


@dataclass
class PreviewResult:
    """What one round of previews wrote and took."""

    step: int
    videos: list[Path] = field(default_factory=list)
    sheets: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (prompt, HxWx3 uint8), rank 0 only
    seconds: float = 0.0


class Previewer:
    """Encodes the prompts once (then frees the text encoder) and samples them on demand."""

    def __init__(self, prompts_file: Path, data, compressor, patch: tuple[int, int, int], diffusion: DiffusionConfig,
                 steps: int | None, device: torch.device, rank: int, world_size: int):
        from opensora.diffusion import make_objective
        from opensora.text import load_text_encoder
        from opensora.training.data import crop_to_patch

        self.prompts = read_prompts(prompts_file, "--sample-prompts")
        text = data.manifest["text_encoder"]
        encoder = load_text_encoder(text["path"], device=device, max_length=text.get("max_length"))
        self.feats, self.lengths = encoder.encode(self.prompts)
        del encoder
        shape = Counter(data.latent_shape(i) for i in range(len(data))).most_common(1)[0][0]
        row = next(i for i in range(len(data)) if data.latent_shape(i) == shape)
        latent = torch.from_numpy(np.ascontiguousarray(data[row]["video"]))[None]
        self.shape = tuple(crop_to_patch(compressor.to_diffusion(latent.to(device)), patch).shape)  # (1, C, T, H, W)
        self.fps = float((data.manifest.get("settings") or {}).get("fps") or 8.0)
        self.diffusion, self.steps = diffusion, steps or make_objective(diffusion).default_steps
        self.device, self.rank, self.world = device, rank, world_size

    def run(self, ema, compressor, step: int, run_dir: Path) -> PreviewResult:
        """Sample this rank's prompts with `ema`, write their mp4 + PNG; a collective (every rank calls it)."""
        from PIL import Image

        from opensora.data.video import write_video
        from opensora.diffusion.sampling import sample_latents
        from opensora.sampling.sample import preview_sheet, slug

        t0 = time.perf_counter()
        out = Path(run_dir) / "samples" / f"step-{step:07d}"
        out.mkdir(parents=True, exist_ok=True)
        result, mine = PreviewResult(step), []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the training RNG is left as it was
            for i in range(self.rank, len(self.prompts), self.world):
                text = torch.from_numpy(self.feats[i : i + 1])
                mask = torch.arange(text.shape[1])[None] < int(self.lengths[i])
                x0 = sample_latents(ema, self.shape, text, mask, self.diffusion, steps=self.steps,
                                    cfg_scale=PREVIEW_CFG_SCALE, generator=torch.Generator().manual_seed(i))
                frames = compressor.decode_diffusion(x0)[0].cpu().numpy()  # (T, H, W, 3) uint8
                path = out / f"{i:02d}-{slug(self.prompts[i], 40)}.mp4"
                write_video(path, frames, self.fps)
                sheet = preview_sheet(frames)
                Image.fromarray(sheet).save(path.with_suffix(".png"))
                mine.append((i, path, sheet))
        everyone = [mine]
        if self.world > 1:
            everyone = [None] * self.world
            dist.all_gather_object(everyone, mine)
        for i, path, sheet in sorted(x for part in everyone for x in part):
            result.videos.append(path)
            result.sheets.append((self.prompts[i], sheet))
        result.seconds = time.perf_counter() - t0
        return result

