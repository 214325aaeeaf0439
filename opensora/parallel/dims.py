"""The data-parallel x sequence-parallel mesh: sizes validated in one place, groups built once."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed as dist

from opensora.errors import UserError


@dataclass
class ParallelDims:
    """world = dp x sp. Ranks of one SP group are consecutive (they usually share a node's fast links)."""

    world_size: int
    sp_size: int = 1
    sp_mode: str = "none"
    rank: int = 0
    sp_group: object = field(default=None, repr=False)
    dp_group: object = field(default=None, repr=False)

    def __post_init__(self):
        problems = []
        from opensora.parallel.sequence import SP_STRATEGIES

        if SP_STRATEGIES.problem(self.sp_mode):
            problems.append(SP_STRATEGIES.problem(self.sp_mode))
        if self.sp_size < 1:
            problems.append(f"--sp-size {self.sp_size} must be at least 1")
        elif self.world_size % self.sp_size:
            problems.append(f"--sp-size {self.sp_size} does not divide the world size {self.world_size} "
                            f"(world = data-parallel x sequence-parallel)")
        if self.sp_mode == "none" and self.sp_size > 1:
            problems.append(f"--sp-size {self.sp_size} needs --sp ulysses or --sp fastseq")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def dp_size(self) -> int:
        """Number of data-parallel replicas."""
        return self.world_size // self.sp_size

    @property
    def dp_rank(self) -> int:
        """Which data shard this rank reads."""
        return self.rank // self.sp_size

    @property
    def sp_rank(self) -> int:
        """Position of this rank's sequence shard."""
        return self.rank % self.sp_size

    @property
    def sp_enabled(self) -> bool:
        """True when sequences are split across ranks."""
        return self.sp_mode != "none" and self.sp_size > 1

    def build_groups(self) -> None:
        """Create the SP and DP process groups (every rank must call this, in the same order)."""
        if not dist.is_initialized():
            return
        for d in range(self.dp_size):
            ranks = list(range(d * self.sp_size, (d + 1) * self.sp_size))
            g = dist.new_group(ranks)
            if self.rank in ranks:
                self.sp_group = g
        for s in range(self.sp_size):
            ranks = list(range(s, self.world_size, self.sp_size))
            g = dist.new_group(ranks)
            if self.rank in ranks:
                self.dp_group = g
