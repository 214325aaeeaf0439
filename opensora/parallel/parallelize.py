"""Apply the parallelisms a run asks for to a single-device model."""

from __future__ import annotations

from opensora.parallel.dims import ParallelDims
from opensora.parallel.sequence import SPContext, sequence_parallelize


def apply_sequence_parallel(model, dims: ParallelDims) -> SPContext | None:
    """Split sequences over `dims.sp_group` when sequence parallelism is enabled."""
    if not dims.sp_enabled:
        return None
    return sequence_parallelize(model, dims.sp_mode, dims.sp_group, dims.sp_rank, dims.sp_size)
