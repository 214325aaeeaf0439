"""Throughput of `opensora train` (data, logging, checkpoint cadence included) against the bare model step.

    python benchmarks/train.py [--models DiT/T-2,DiT/S-2] [--nprocs 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, print_table  # noqa: E402
from opensora.data.dataset import EncodedDataset  # noqa: E402
from opensora.diffusion import DiffusionConfig  # noqa: E402
from opensora.diffusion.ddpm import diffusion_loss, train_scheduler  # noqa: E402
from opensora.models.presets import create_model  # noqa: E402
from opensora.parallel.distributed import share_cpu_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(tmp: Path, n: int, frames: int, size: int) -> Path:
    from opensora.data.video import write_video
    from opensora.text.clip import build_tiny_clip_text_encoder
    from tests.conftest import moving_square_video

    vids = tmp / "videos"
    vids.mkdir()
    for i in range(n):
        write_video(vids / f"v{i}.mp4", moving_square_video(frames, size, size, seed=i), 8)
    (tmp / "c.json").write_text(json.dumps([{"file": f"v{i}.mp4", "captions": [f"clip {i}"]} for i in range(n)]))
    te = build_tiny_clip_text_encoder(tmp / "clip")
    subprocess.run([sys.executable, "-m", "opensora_cli", "data", "encode", "-c", tmp / "c.json", "-v", vids,
                    "-o", tmp / "ds", "--text-encoder", te], check=True, capture_output=True, cwd=ROOT)
    return tmp / "ds"


def _bare(rank, world, port, model_name, data, batch, steps, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=300))
    os.environ["LOCAL_WORLD_SIZE"] = str(world)
    share_cpu_threads()  # the same per-process thread share `opensora train` uses
    ds = EncodedDataset(data)
    from opensora.training.data import stack_batch

    b = stack_batch([ds[i % len(ds)] for i in range(batch // world)])
    torch.manual_seed(0)
    meta = ds.manifest["text_encoder"]
    model = create_model(model_name, 3, "cross-attn", meta["dim"], meta["max_length"])
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = DiffusionConfig()
    sched, gen = train_scheduler(cfg), torch.Generator().manual_seed(rank)
    x0 = b["video"].permute(0, 4, 1, 2, 3).float() / 127.5 - 1

    def step():
        loss = diffusion_loss(ddp, x0, b["text"], b["text_mask"], cfg, sched, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    t = median_time(step, steps, warmup=2)
    if rank == 0:
        Path(out).write_text(json.dumps({"step": t}))
    dist.destroy_process_group()


def bare_step(model_name, data, batch, nproc, steps) -> float:
    out = Path(tempfile.mkdtemp()) / "bare.json"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_bare, args=(nproc, port, model_name, str(data), batch, steps, str(out)), nprocs=nproc, join=True)
    return json.loads(out.read_text())["step"]


def cli_train(model_name, data, batch, nproc, steps, ckpt_every, run: Path) -> dict:
    cmd = [sys.executable, "-m", "opensora_cli", "train", "--data", data, "--model", model_name, "--steps", steps,
           "--batch-size", batch, "--ckpt-every", ckpt_every, "--run-dir", run, "--nproc", nproc,
           "--num-workers", "1"]
    subprocess.run(list(map(str, cmd)), check=True, capture_output=True, cwd=ROOT)
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    return {"loop": json.loads((run / "summary.json").read_text())["samples_per_s"],
            "median_step": sorted(batch / m["samples_per_s"] for m in metrics[2:])[len(metrics[2:]) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="DiT/T-2,DiT/S-2")
    ap.add_argument("--nprocs", default="1,2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--ckpt-every", type=int, default=15, help="checkpoint cadence (a run also saves at its end)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data = make_dataset(tmp, 32, args.frames, args.size)
    rows = []
    for name in args.models.split(","):
        for nproc in map(int, args.nprocs.split(",")):
            bare = bare_step(name, data, args.batch, nproc, 5)
            r = cli_train(name, data, args.batch, nproc, args.steps, args.ckpt_every,
                          tmp / f"run-{name.replace('/', '_')}-{nproc}")
            bare_sps = args.batch / bare
            rows.append([name, nproc, bare_sps, args.batch / r["median_step"], r["loop"],
                         f"{(bare_sps / r['loop'] - 1) * 100:+.1f}%"])
    print_table(
        f"opensora train vs bare step: batch {args.batch}, latent {args.frames}x{args.size}x{args.size}x3 (raw), "
        f"{args.steps} steps, a checkpoint every {args.ckpt_every}",
        ["model", "processes", "bare step samples/s", "train median step samples/s", "train whole loop samples/s",
         "loop overhead"], rows,
    )


if __name__ == "__main__":
    main()
