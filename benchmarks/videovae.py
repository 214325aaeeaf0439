"""Memory of `--compression video-vae` as clips grow longer and frames larger.

Builds a Wan-architecture video VAE with random weights (narrower than Wan 2.1's: --base-dim), saves
it like a hub model, and encodes one clip per case through `VideoVAECompressor` in a fresh process,
reporting the process's peak RSS above the loaded model and the seconds taken (median of --runs).
The claim under test: memory grows with the frame size (bounded by tiling above 256x256), not with
the clip's length (the VAE runs time causally in chunks).

    python benchmarks/videovae.py [--base-dim 32] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402

CASE = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from opensora.compression import videovae
from opensora.compression.videovae import VideoVAECompressor
frames, size, tiling = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
if not tiling:
    videovae.TILE_ABOVE = 10**12
c = VideoVAECompressor(sys.argv[2])
c.vae  # loaded before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
video = np.random.default_rng(0).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
t0 = time.perf_counter()
(z,) = c.encode([c.crop(video)])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mib": (peak - base) / 1024, "s": dt, "latent": list(z.shape)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-dim", type=int, default=32)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    import torch
    from diffusers import AutoencoderKLWan

    root = Path(__file__).resolve().parents[1]
    vae_dir = Path(tempfile.mkdtemp(prefix="videovae-")) / "wan"
    torch.manual_seed(0)
    AutoencoderKLWan(base_dim=args.base_dim).save_pretrained(vae_dir)
    cases = [(17, 128, 1), (65, 128, 1), (257, 128, 1), (17, 256, 1), (17, 512, 0), (17, 512, 1)]
    rows = []
    for frames, size, tiling in cases:
        got = []
        for _ in range(args.runs):
            r = subprocess.run([sys.executable, "-c", CASE, str(root), str(vae_dir), str(frames), str(size), str(tiling)],
                               capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr[-2000:])
            got.append(json.loads(r.stdout.strip().splitlines()[-1]))
        mib = statistics.median(g["mib"] for g in got)
        rows.append([f"{frames}x{size}x{size}", "on" if tiling and size * size > 256 * 256 else "off",
                     "x".join(map(str, got[0]["latent"])), f"{mib:.0f}", f"{statistics.median(g['s'] for g in got):.1f}"])
    print_table(f"video-vae encode on this CPU: Wan architecture, base_dim {args.base_dim}, random weights "
                f"(peak RSS above the loaded model, median of {args.runs})",
                ["clip TxHxW", "tiling", "latent CxTxHxW", "peak MiB", "seconds"], rows)


if __name__ == "__main__":
    main()
