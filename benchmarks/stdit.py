"""STDiT (spatial + temporal attention) against full-attention DiT of the same width and depth.

One training step (forward, backward, AdamW) on random latents of T x 32 x 32 x 4 (patch 2: 256
tokens a frame), batch 1, adaLN conditioning, fp32. Each case runs in a fresh process, which reports
the median step time of --runs steps (after one warm-up) and its peak memory above the built model
(CUDA: max_memory_allocated; CPU: peak RSS), which includes AdamW's states (2 x the parameters, the
same for both families). FLOPs are the plan's model
(opensora/training/plan.py), which `train --plan` uses too. The crossover is where STDiT's FLOPs
fall below DiT's, by that model, at 256 tokens a frame.

    python benchmarks/stdit.py                          # T size, 4, 16 and 64 frames, CPU
    python benchmarks/stdit.py --size S --frames 16 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402

CASE = r"""
import json, resource, statistics, sys, time
import torch
sys.path.insert(0, sys.argv[1])
from opensora.models.presets import create_model
name, frames, runs, device = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
model = create_model(name, 4, "adaln", 64, 8).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randn(1, 4, frames, 32, 32, device=device)
target, t, text = torch.randn_like(x), torch.tensor([500.0], device=device), torch.randn(1, 8, 64, device=device)

def step():
    loss = (model(x, t, text) - target).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()

if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:  # the process's peak so far: imports, the model, the inputs
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
step()  # warm-up (it creates the optimizer's states, counted in the peak: the same for both families)
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
peak = (torch.cuda.max_memory_allocated() if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) - base
print(json.dumps({"s": statistics.median(times), "bytes": max(peak, 0)}))
"""


def flops(name: str, frames: int) -> float:
    """Training-step FLOPs of one sample by the plan's model."""
    from opensora.models.presets import MODELS
    from opensora.training.plan import ModelCost

    p = MODELS[name]
    cost = ModelCost(name, 0, p.hidden_size, p.depth, p.num_heads, (1, p.patch, p.patch), "adaln", 8, p.family)
    return cost.flops_per_sample(frames * (32 // p.patch) ** 2, frames=frames)


def crossover(size: str) -> int | None:
    """Fewest frames at which STDiT's step FLOPs are below DiT's (256 tokens a frame)."""
    return next((t for t in range(1, 1025) if flops(f"STDiT/{size}-2", t) < flops(f"DiT/{size}-2", t)), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="T", choices=["T", "S", "B", "L", "XL"])
    ap.add_argument("--frames", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    root = str(Path(__file__).resolve().parents[1])
    rows = []
    for frames in args.frames:
        measured = {}
        for family in ("DiT", "STDiT"):
            name = f"{family}/{args.size}-2"
            r = subprocess.run([sys.executable, "-c", CASE, root, name, str(frames), str(args.runs), args.device],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"{name} at {frames} frames failed:\n{r.stderr[-2000:]}")
            measured[family] = json.loads(r.stdout.strip().splitlines()[-1])
        d, s = measured["DiT"], measured["STDiT"]
        fd, fs = flops(f"DiT/{args.size}-2", frames), flops(f"STDiT/{args.size}-2", frames)
        rows.append([f"{frames}x32x32", frames * 256, d["s"] * 1e3, s["s"] * 1e3, s["s"] / d["s"],
                     d["bytes"] / 2**20, s["bytes"] / 2**20, s["bytes"] / max(d["bytes"], 1), fd / 1e9, fs / 1e9,
                     fs / fd])
    print_table(f"STDiT/{args.size}-2 vs DiT/{args.size}-2: one training step, batch 1, fp32, {args.device} "
                f"(median of {args.runs}; peak memory above the model)",
                ["latent TxHxW", "tokens", "DiT ms", "STDiT ms", "time ratio", "DiT MiB", "STDiT MiB", "memory ratio",
                 "DiT GFLOP", "STDiT GFLOP", "FLOP ratio"], rows)
    print(f"crossover by FLOPs at 256 tokens a frame: STDiT is cheaper from {crossover(args.size)} frames on")


if __name__ == "__main__":
    main()
