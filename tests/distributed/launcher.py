"""Run a function on N real processes joined in a gloo (or NCCL) group; short timeouts fail a mismatch fast."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, backend: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    kw = {}
    if backend == "nccl":  # one GPU per rank
        import torch

        torch.cuda.set_device(rank)
        kw["device_id"] = torch.device("cuda", rank)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=30), **kw)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_workers(fn, world: int, *args, backend: str = "gloo") -> None:
    """Call fn(rank, world, *args) in `world` spawned processes; re-raise the first failure."""
    mp.spawn(_entry, args=(world, _free_port(), fn, args, backend), nprocs=world, join=True)
