"""Cost of one denoising step: with guidance against one plain forward of batch 2, without against batch 1.

    python benchmarks/sample.py [--model DiT/S-2] [--frames 8] [--size 16] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, print_table  # noqa: E402
from opensora.diffusion import DiffusionConfig  # noqa: E402
from opensora.diffusion.sampling import sample_latents  # noqa: E402
from opensora.models.presets import create_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="DiT/S-2")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, 4, "cross-attn", 512, 77).eval()
    shape = (1, 4, args.frames, args.size, args.size)
    text = torch.randn(1, 77, 512)
    mask = torch.ones(1, 77, dtype=torch.bool)
    cfg = DiffusionConfig()

    def forward(b):
        x = torch.randn(b, *shape[1:])
        with torch.no_grad():
            return lambda: model(x, torch.full((b,), 500), text.expand(b, -1, -1), mask.expand(b, -1),
                                 torch.zeros(b, dtype=torch.bool))

    def sampling(disable):
        return lambda: sample_latents(model, shape, text, mask, cfg, steps=args.steps, cfg_scale=4.0,
                                      disable_cfg=disable, generator=torch.Generator().manual_seed(0))

    f2 = median_time(forward(2), args.runs)
    f1 = median_time(forward(1), args.runs)
    s_cfg = median_time(sampling(False), args.runs) / args.steps
    s_plain = median_time(sampling(True), args.runs) / args.steps
    print_table(
        f"{args.model}, latent {args.frames}x{args.size}x{args.size}x4, {args.steps} DDIM steps, median of {args.runs}",
        ["what", "ms per step", "ratio"],
        [["plain forward, batch 2", f2 * 1e3, 1.0], ["denoising step with CFG (batched 2)", s_cfg * 1e3, s_cfg / f2],
         ["plain forward, batch 1", f1 * 1e3, 1.0], ["denoising step, --disable-cfg", s_plain * 1e3, s_plain / f1]],
    )


if __name__ == "__main__":
    main()
