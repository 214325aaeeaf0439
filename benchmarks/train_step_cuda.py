"""A DiT train step on a CUDA GPU: fp32 weights under bf16 autocast, and bf16 weights; eager and compiled.

MFU is model FLOPs per second over a bf16 torch.matmul (8192^3) measured in the same run. Model
FLOPs are counted once per model with FlopCounterMode at batch 1 under SDPA's math backend (so
attention counts its forward and backward matmuls, not flash attention's backward recompute),
then scaled by the batch. `--compile` adds rows with each DiT block compiled by torch.compile
(the blocks are identical, so one compilation serves them all). The CFG denoise step is one
forward of the conditional and unconditional batch together in bf16, as `opensora sample` runs it.

    python benchmarks/train_step_cuda.py                          # DiT/XL-2 b4, DiT/S-2 b8, 16x32x32x4
    python benchmarks/train_step_cuda.py --compile
    python benchmarks/train_step_cuda.py --device cpu --models DiT/T-2:2 --frames 2 --size 8 --runs 2  # a dry run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, print_table  # noqa: E402
from opensora.models.presets import create_model  # noqa: E402


def synced(fn, device: torch.device):
    """fn followed by a device synchronisation (so wall time measures the GPU's work)."""
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return run


def make_model(name: str, device, weights_dtype, compile_blocks: bool):
    torch.manual_seed(0)
    model = create_model(name, 4, "adaln", 512, 77).to(device=device, dtype=weights_dtype)
    if compile_blocks:
        for block in model.blocks:
            block.compile()
    return model


def inputs(batch: int, frames: int, size: int, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, frames, size, size, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    text = torch.randn(batch, 77, 512, generator=g).to(device, dtype)
    return x, t, text


def train_step(model, batch, frames, size, device, autocast: bool):
    """One AdamW step (torch's fused AdamW on CUDA, as `opensora train` uses)."""
    dtype = next(model.parameters()).dtype
    x, t, text = inputs(batch, frames, size, device, dtype)
    target = torch.randn_like(x, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if autocast else torch.enable_grad

    def step():
        with ctx():
            out = model(x, t, text)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def model_flops_per_sample(name: str, frames: int, size: int, device) -> int:
    """Forward + backward matmul FLOPs of one sample (math attention: no recompute counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = make_model(name, device, torch.bfloat16 if device.type == "cuda" else torch.float32, False)
    x, t, text = inputs(1, frames, size, device, next(model.parameters()).dtype)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model(x, t, text).float().pow(2).mean().backward()
    del model
    return fc.get_total_flops()


def matmul_peak(device, dtype, n: int) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_time(synced(lambda: a @ b, device), 10, warmup=3)


def cfg_denoise_step(model, batch, frames, size, device):
    """One classifier-free-guidance denoise step: cond + uncond in one forward, then the guidance mix."""
    x, t, text = inputs(batch, frames, size, device, torch.bfloat16)
    drop = torch.cat([torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)]).to(device)

    @torch.no_grad()
    def step():
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, text]), None, drop)
        cond, uncond = out.float().chunk(2)
        return uncond + 4.0 * (cond - uncond)

    return step


def peak_gib(device) -> float | str:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="DiT/XL-2:4,DiT/S-2:8", help="MODEL:BATCH,...")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--compile", action="store_true", help="also time each block under torch.compile")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--matmul", type=int, default=8192)
    args = ap.parse_args()
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak(device, peak_dtype, args.matmul)
    rows = []
    modes = [("fp32 weights, bf16 autocast", torch.float32, True), ("bf16 weights", torch.bfloat16, False)]
    for spec in args.models.split(","):
        name, batch = spec.split(":")
        batch = int(batch)
        flops = model_flops_per_sample(name, args.frames, args.size, device) * batch
        for compiled in [False, True] if args.compile else [False]:
            for label, wdtype, autocast in modes:
                model = make_model(name, device, wdtype, compiled)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
                step = synced(train_step(model, batch, args.frames, args.size, device, autocast), device)
                t = median_time(step, args.runs, warmup=3)
                rows.append([f"{name} b{batch}", label + (", compiled" if compiled else ""), t * 1e3,
                             flops / t / 1e12, flops / t / peak, peak_gib(device)])
                del model, step
            model = make_model(name, device, torch.bfloat16, compiled).eval()
            step = synced(cfg_denoise_step(model, batch, args.frames, args.size, device), device)
            t = median_time(step, args.runs, warmup=3)
            rows.append([f"{name} b2x{batch}", "CFG denoise step, bf16" + (", compiled" if compiled else ""),
                         t * 1e3, "-", "-", peak_gib(device)])
            del model, step
    rows.append(["-", f"torch.matmul {args.matmul}^3 {str(peak_dtype)[6:]} (peak)", "-", peak / 1e12, 1.0, "-"])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print_table(f"train step on {gpu}, torch {torch.__version__}, latent {args.frames}x{args.size}x{args.size}x4, "
                f"median of {args.runs} after 3 warm-ups",
                ["model", "mode", "ms/step", "TFLOP/s", "MFU", "peak GiB"], rows)


if __name__ == "__main__":
    main()
