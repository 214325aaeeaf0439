"""Differentiable sequence-parallel collectives, each counting the bytes this rank sends.

torch.distributed's functional collectives (torch.distributed.nn) cover all-gather but not an
all-to-all that reshapes along named dims with a matching backward, nor byte accounting, so the few
we need are written here: all-to-all (adjoint: the reverse all-to-all) and all-gather along the
sequence (adjoint: reduce-scatter).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class CommCounter:
    """Bytes sent by this rank, per (phase, collective name)."""

    bytes: dict = field(default_factory=lambda: defaultdict(int))
    calls: dict = field(default_factory=lambda: defaultdict(int))

    def add(self, phase: str, name: str, nbytes: int) -> None:
        """Record one collective."""
        self.bytes[(phase, name)] += int(nbytes)
        self.calls[(phase, name)] += 1

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.bytes.clear()
        self.calls.clear()



def _all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    world = dist.get_world_size(group)
    inputs = [t.contiguous() for t in x.chunk(world, dim=scatter_dim)]
    outputs = [torch.empty_like(inputs[0]) for _ in range(world)]
    dist.all_to_all(outputs, inputs, group=group)
    return torch.cat(outputs, dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, scatter_dim, gather_dim, counter, name):
        ctx.args = (group, scatter_dim, gather_dim, counter, name)
        world = dist.get_world_size(group)
        counter.add("forward", name, x.numel() * x.element_size() * (world - 1) // world)
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad):
        group, scatter_dim, gather_dim, counter, name = ctx.args
        world = dist.get_world_size(group)
        counter.add("backward", name, grad.numel() * grad.element_size() * (world - 1) // world)
        return _all_to_all(grad, group, gather_dim, scatter_dim), None, None, None, None, None


class _GatherSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, dim, counter, name):
        ctx.args = (group, dim, counter, name)
        world = dist.get_world_size(group)
        counter.add("forward", name, x.numel() * x.element_size() * (world - 1))
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        group, dim, counter, name = ctx.args
        world = dist.get_world_size(group)
        chunks = [c.contiguous() for c in grad.chunk(world, dim=dim)]
        counter.add("backward", name, chunks[0].numel() * chunks[0].element_size() * (world - 1))
        out = torch.empty_like(chunks[0])
        dist.reduce_scatter(out, chunks, op=dist.ReduceOp.SUM, group=group)
        return out, None, None, None, None


def all_to_all(x, group, scatter_dim: int, gather_dim: int, counter: CommCounter, name: str) -> torch.Tensor:
    """Split `x` along scatter_dim across the group and concatenate what arrives along gather_dim."""
    return _AllToAll.apply(x, group, scatter_dim, gather_dim, counter, name)


def gather_seq(x, group, dim: int, counter: CommCounter, name: str) -> torch.Tensor:
    """All-gather shards along `dim` (backward: reduce-scatter of the gradient)."""
    return _GatherSeq.apply(x, group, dim, counter, name)
