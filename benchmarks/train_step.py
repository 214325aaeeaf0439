"""Forward + backward + optimizer step of a video DiT, fp32 and bf16, against an eager DiT-style baseline.

The baseline is the same architecture with attention written as in the original DiT/timm code
(explicit softmax(QK^T)V, no fused kernel). MFU is achieved FLOP/s over the FLOP/s of a plain
torch.matmul of the same dtype measured in the same run.

    python benchmarks/train_step.py                       # DiT/S-2, latent 16x32x32x4, batch 4
    python benchmarks/train_step.py --frames 4 --size 16  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import opensora.models.dit as dit  # noqa: E402
from benchmarks.common import median_time, print_table  # noqa: E402
from opensora.models.presets import create_model  # noqa: E402


def eager_attention(q, k, v, key_mask):
    """timm/DiT-style attention: materialise the (L, L) scores, softmax, multiply."""
    attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if key_mask is not None:
        attn = attn.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return attn.softmax(dim=-1) @ v


@contextlib.contextmanager
def baseline_attention():
    """Run the model with the eager attention instead of SDPA."""
    original = dit.sdpa_attention
    dit.sdpa_attention = eager_attention
    try:
        yield
    finally:
        dit.sdpa_attention = original


def make_step(model_name: str, dtype, batch: int, frames: int, size: int, channels: int = 4):
    torch.manual_seed(0)
    model = create_model(model_name, channels, "adaln", 512, 77).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, channels, frames, size, size, dtype=dtype)
    target = torch.randn_like(x)
    t = torch.randint(0, 1000, (batch,))
    text = torch.randn(batch, 77, 512, dtype=dtype)

    def step():
        loss = torch.nn.functional.mse_loss(model(x, t, text), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def matmul_flops_per_s(dtype, n: int = 2048, runs: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    t = median_time(lambda: a @ b, runs, warmup=2)
    return 2 * n**3 / t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="DiT/S-2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dtypes", default="fp32,bf16")
    args = ap.parse_args()
    rows = []
    for name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        peak = matmul_flops_per_s(dtype)
        ours = make_step(args.model, dtype, args.batch, args.frames, args.size)
        flops = count_flops(ours)  # also a warm-up
        t_ours = median_time(ours, args.runs, warmup=1)
        with baseline_attention():
            base = make_step(args.model, dtype, args.batch, args.frames, args.size)
            base_flops = count_flops(base)
            t_base = median_time(base, args.runs, warmup=1)
        rows.append([name, "opensora (SDPA)", t_ours, flops / t_ours / 1e12, flops / t_ours / peak, t_base / t_ours])
        rows.append([name, "eager DiT-style baseline", t_base, base_flops / t_base / 1e12, base_flops / t_base / peak, 1.0])
        rows.append([name, "torch.matmul 2048^3 (peak)", "-", peak / 1e12, 1.0, "-"])
    print_table(
        f"{args.model} train step, latent {args.frames}x{args.size}x{args.size}x4, batch {args.batch}, "
        f"median of {args.runs} after warm-up, {torch.get_num_threads()} threads",
        ["dtype", "implementation", "s/step", "TFLOP/s", "MFU", "speedup vs baseline"], rows,
    )


if __name__ == "__main__":
    main()
