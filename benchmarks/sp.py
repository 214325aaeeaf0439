"""Sequence-parallel communication: bytes counted per collective against the formula, and step time 1 vs 2 ranks.

    python benchmarks/sp.py [--model DiT/S-2] [--frames 8] [--size 32] [--sp 2]
    python benchmarks/sp.py --model STDiT/S-2 --frames 9    # frames split; only temporal attention communicates

DiT splits its B x L token sequence; STDiT splits frames, and its temporal attention runs B x S
sequences (S tokens a frame) of T' frames, so its formula is the same with B -> B*S and L -> T'.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table  # noqa: E402
from opensora.models.presets import MODELS, create_model  # noqa: E402
from opensora.parallel.sequence import sequence_parallelize, theoretical_bytes  # noqa: E402


def _inputs(args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, args.frames, args.size, args.size, generator=g)
    return x, torch.randint(0, 1000, (args.batch,), generator=g), torch.randn(args.batch, 77, 512, generator=g)


def _step_time(model, args) -> float:
    x, t, text = _inputs(args)
    times = []
    for i in range(args.runs + 1):
        if dist.is_initialized():
            dist.barrier()
        t0 = time.perf_counter()
        model(x, t, text).square().mean().backward()
        if dist.is_initialized():
            dist.barrier()
        if i:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _worker(rank, world, port, args, mode, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    torch.manual_seed(0)
    model = create_model(args.model, 4, "cross-attn", 512, 77)
    ctx = sequence_parallelize(model, mode, dist.new_group(list(range(world))), rank, world)
    x, t, text = _inputs(args)
    ctx.counter.reset()
    model(x, t, text).square().mean().backward()
    measured = {f"{p}:{n}": v // len(model.blocks) for (p, n), v in ctx.counter.bytes.items() if n != "gather_output"}
    step = _step_time(model, args)
    if rank == 0:
        Path(out).write_text(json.dumps({"bytes": measured, "step": step}))
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="DiT/S-2")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--sp", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = create_model(args.model, 4, "cross-attn", 512, 77)
    single = _step_time(model, args)
    pt, ph, pw = model.config.patch_size
    S = (args.size // ph) * (args.size // pw)
    stdit = MODELS.lookup(args.model).family == "STDiT"
    # the sequences the split attention sees: B of L tokens (DiT), or B*S of T' frames (STDiT)
    B, L = (args.batch * S, args.frames // pt) if stdit else (args.batch, (args.frames // pt) * S)
    Lp = L + (-L) % args.sp
    D = model.config.hidden_size
    byte_rows, time_rows = [], [["1 process", "-", single * 1e3, 1.0]]
    for mode in ("ulysses", "fastseq"):
        out = Path(tempfile.mkdtemp()) / "r.json"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_worker, args=(args.sp, port, args, mode, str(out)), nprocs=args.sp, join=True)
        r = json.loads(out.read_text())
        expect = theoretical_bytes(mode, B, Lp, D, args.sp, 4)
        for name, b in expect.items():
            for phase in ("forward", "backward"):
                got = r["bytes"].get(f"{phase}:{name}", 0)
                byte_rows.append([mode, phase, name, got, b, "yes" if got == b else "NO"])
        per_block = sum(expect.values())
        time_rows.append([f"{args.sp} processes, {mode}", f"{per_block / 1e6:.3f}", r["step"] * 1e3, r["step"] / single])
    what = f"{B} sequences of {L} frames (padded {Lp})" if stdit else f"{L} tokens (padded {Lp})"
    print_table(f"{args.model}, {what}, sp {args.sp}, fp32: bytes sent per rank per block",
                ["mode", "phase", "collective", "measured", "theory", "match"], byte_rows)
    print_table("forward+backward step time on this CPU (gloo)", ["run", "MB sent/rank/block (fwd)", "ms", "vs 1 process"],
                time_rows)


if __name__ == "__main__":
    main()
