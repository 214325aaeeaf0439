"""Apply the parallelisms a run asks for to a single-device model, for training and sampling alike.

As torchtitan's `parallelize_*`, the model file stays single-device code: `parallelize` turns on
gradient checkpointing, splits sequences over the SP group (`sequence.sequence_parallelize`), and
wraps the model for data parallelism through the Colossal-AI booster's plugin (training only).
"""

from __future__ import annotations

from opensora.parallel.dims import ParallelDims
from opensora.parallel.distributed import DistEnv, init_distributed, quiet


def init_parallel(device: str, sp: str, sp_size: int | None, timeout_s: float = 300.0) -> tuple[DistEnv, ParallelDims]:
    """Join (or start) the process group and build the dp x sp mesh; sp_size None: every rank splits a sequence."""
    env = init_distributed(device, timeout_s)
    dims = ParallelDims(env.world_size, 1 if sp == "none" else (sp_size or env.world_size), sp, env.rank)
    dims.build_groups()
    return env, dims


def parallelize(model, dims: ParallelDims, *, grad_checkpoint: bool = False, booster=None, optimizer=None,
                lr_scheduler=None):
    """(model, optimizer, lr_scheduler) with checkpointing, SP and (given a booster) DP applied, in that order.

    The optimizer may be built before: neither checkpointing nor SP changes the parameters.
    """
    if grad_checkpoint:
        model.enable_gradient_checkpointing()
    if dims.sp_enabled:
        from opensora.parallel.sequence import sequence_parallelize

        sequence_parallelize(model, dims.sp_mode, dims.sp_group, dims.sp_rank, dims.sp_size)
    if booster is not None:
        with quiet():
            model, optimizer, _, _, lr_scheduler = booster.boost(model, optimizer, lr_scheduler=lr_scheduler)
    return model, optimizer, lr_scheduler
