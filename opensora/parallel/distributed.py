"""Process-group start-up (gloo on CPU, nccl on GPU), and a quiet context for importing Colossal-AI."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@contextlib.contextmanager
def quiet():
    """Silence import-time warnings and prints of Colossal-AI and bitsandbytes (apex, tensornvme, gemm_4bit)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        for name in ("bitsandbytes", "colossalai"):
            logging.getLogger(name).setLevel(logging.ERROR)
        yield


@dataclass
class DistEnv:
    """Where this process sits."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def init_distributed(device: str = "auto", timeout_s: float = 300.0) -> DistEnv:
    """Join the torchrun job described by the environment, or start a 1-process group."""
    use_cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    standalone = "MASTER_ADDR" not in os.environ
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if not dist.is_initialized():
        # colossalai.launch would init with its default (30 min) timeout; a short one keeps a dead
        # peer from hanging the others, so we create the group ourselves and Colossal-AI reuses it.
        # NCCL is told its device (device_id): otherwise it guesses from the rank and every
        # barrier warns that it is "using the device under current context".
        kw = {"timeout": timedelta(seconds=timeout_s), **({"device_id": dev} if use_cuda else {})}
        if standalone:  # one process: an in-memory store, no port to race other processes for
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, **kw)
        else:
            dist.init_process_group(backend=backend, rank=rank, world_size=world, **kw)
    if not use_cuda:
        share_cpu_threads()
    return DistEnv(rank, world, local_rank, dev, backend)


def share_cpu_threads() -> int:
    """Give each of the node's processes an equal share of the CPU cores; return the thread count.

    Every process otherwise starts as many compute threads as the machine has cores, so N local
    processes oversubscribe the CPU N times over (torchrun sets OMP_NUM_THREADS=1 for the same
    reason, but our own --nproc launcher does not go through torchrun's command line). An explicit
    OMP_NUM_THREADS is respected.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(cores // local, 1)
    torch.set_num_threads(threads)
    return threads


def shutdown() -> None:
    """Leave the process group if one is active."""
    if dist.is_initialized():
        dist.destroy_process_group()
