"""Forward + backward + optimizer step of a video DiT, fp32 and bf16, against an eager DiT-style baseline.

The baseline (benchmarks/dit_baseline.py) is the same architecture and weights written as the
original DiT/timm code is: explicit softmax(QK^T)V, unfused adaLN modulation and gated residuals,
timm's patch-embedding layout. MFU is achieved FLOP/s over the FLOP/s of a plain
torch.matmul of the same dtype measured in the same run.

    python benchmarks/train_step.py                       # DiT/S-2, latent 16x32x32x4, batch 4
    python benchmarks/train_step.py --frames 4 --size 16  # a quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402

from benchmarks.common import median_time, print_table  # noqa: E402
from benchmarks.dit_baseline import eager_twin  # noqa: E402
from opensora.devices import cpu_bf16_is_fast  # noqa: E402
from opensora.models.presets import create_model, model_config  # noqa: E402


def make_step(model_name: str, dtype, batch: int, frames: int, size: int, baseline: bool = False,
              channels: int = 4):
    """One optimizer step of DiT `model_name` (adaLN) on random data; `baseline` runs its eager twin."""
    torch.manual_seed(0)
    model = create_model(model_name, channels, "adaln", 512, 77).to(dtype)
    if baseline:
        model = eager_twin(model)
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


def check_twin(model_name: str) -> float:
    """Largest output difference between VideoDiT and its eager twin (random weights, small input)."""
    torch.manual_seed(1)
    model = create_model(model_name, 4, "adaln", 512, 77)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # leave DiT's zero-init, or both sides output zeros
        x, t, text = torch.randn(2, 4, 2, 8, 8), torch.tensor([3, 700]), torch.randn(2, 77, 512)
        return float((model(x, t, text) - eager_twin(model)(x, t, text)).abs().max())


def baseline_attention_bytes(model_name: str, dtype, batch: int, frames: int, size: int) -> int:
    """What the eager baseline keeps for backward in its (L, L) attention probabilities alone."""
    cfg = model_config(model_name)
    pt, ph, pw = cfg["patch_size"]
    n = (frames // pt) * (size // ph) * (size // pw)
    return cfg["depth"] * batch * cfg["num_heads"] * n * n * torch.finfo(dtype).bits // 8


def _register_cpu_flash_attention_flops() -> None:
    """Teach FlopCounterMode the CPU flash-attention ops (it knows only the CUDA ones).

    Without this, SDPA's attention FLOPs on CPU count as zero and its MFU comes out far too low.
    The formulas are torch's own for the CUDA kernels, minus the backward's recomputation of
    QK^T: MFU counts the model's arithmetic, the same FLOPs the eager baseline is credited with.
    """
    from torch.utils import flop_counter as fcm

    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in fcm.flop_registry:
        return

    @fcm.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return fcm.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fcm.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        (b, h, lq, d), lk = query_shape, key_shape[2]
        recompute = fcm.bmm_flop((b * h, lq, d), (b * h, d, lk))
        return fcm.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape) - recompute


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_flash_attention_flops()
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
    from diffusers.utils import logging as diffusers_logging

    # ModelMixin.to(dtype) warns about "modules to keep in float32: []": noise above the table.
    diffusers_logging.set_verbosity_error()
    rows = []
    diff = check_twin(args.model)
    if diff > 1e-4:
        raise SystemExit(f"the eager baseline does not compute the same function (max diff {diff:.2e})")
    ram = psutil.virtual_memory().total
    for name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        if dtype is torch.bfloat16 and not cpu_bf16_is_fast():
            # torch emulates bf16 here: a step takes ~20x its fp32 time, and an MFU against an
            # emulated matmul "peak" comes out above 100%, which says nothing about the model.
            rows.append([name, "skipped: no fast bf16 matmul on this CPU (x86 needs AVX-512)", "-", "-", "-", "-"])
            continue
        peak = matmul_flops_per_s(dtype)
        ours = make_step(args.model, dtype, args.batch, args.frames, args.size)
        flops = count_flops(ours)  # doubles as the warm-up
        t_ours = median_time(ours, args.runs, warmup=0)
        del ours
        need = baseline_attention_bytes(args.model, dtype, args.batch, args.frames, args.size)
        if need > 0.6 * ram:
            rows.append([name, "opensora (SDPA)", t_ours, flops / t_ours / 1e12, flops / t_ours / peak, "-"])
            rows.append([name, "eager DiT-style baseline", f"skipped: needs > {need / 2**30:.0f} GiB", "-", "-", "-"])
        else:
            base = make_step(args.model, dtype, args.batch, args.frames, args.size, baseline=True)
            base_flops = count_flops(base)
            t_base = median_time(base, args.runs, warmup=0)
            del base
            rows.append([name, "opensora (SDPA)", t_ours, flops / t_ours / 1e12, flops / t_ours / peak,
                         t_base / t_ours])
            rows.append([name, "eager DiT-style baseline", t_base, base_flops / t_base / 1e12,
                         base_flops / t_base / peak, 1.0])
        rows.append([name, "torch.matmul 2048^3 (peak)", "-", peak / 1e12, 1.0, "-"])
    print_table(
        f"{args.model} train step, latent {args.frames}x{args.size}x{args.size}x4, batch {args.batch}, "
        f"median of {args.runs} after warm-up, {torch.get_num_threads()} threads; "
        f"eager twin computes the same function (max diff {diff:.1e})",
        ["dtype", "implementation", "s/step", "TFLOP/s", "MFU", "speedup vs baseline"], rows,
    )


if __name__ == "__main__":
    main()
