"""What a training run will cost before it starts: parameters, FLOPs, memory per rank, time per step.

The model is built on the meta device (no memory) to count its parameters exactly. FLOPs count the
matmuls of a forward pass (2 per multiply-add) over the video tokens, the attention over them and the
cross-attention to the text; a training step is 3x a forward. Memory per rank is split into weights,
gradients, optimizer states, EMA, activations and the process's fixed overhead:

  activations = ACT_ELEMS x tokens x hidden x depth x batch x bytes per element

with ACT_ELEMS the elements each block keeps per token and channel for the backward pass (SDPA keeps
no attention matrix). With --grad-checkpoint a block keeps ACT_ELEMS_CKPT (its input and what the
recomputation holds), and one block's full set is alive during its recomputation. ACT_ELEMS and the overhead were measured with
`benchmarks/plan.py` (hand-written: no library predicts a VideoDiT's peak).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ACT_ELEMS = 24.0  # measured by benchmarks/plan.py on DiT/T and DiT/S (fp32, CPU)
ACT_ELEMS_CKPT = 6.0  # a checkpointed block keeps its input and what its recompute holds; measured
# STDiT keeps a second attention's activations: its peaks were 1.29-1.31x DiT's (benchmarks/stdit.py, T size)
ACT_ELEMS_FAMILY = {"DiT": ACT_ELEMS, "STDiT": ACT_ELEMS * 1.3}
OVERHEAD_BYTES = {"cpu": 900 * 2**20, "cuda": 600 * 2**20}  # torch, Colossal-AI, allocator slack; measured


@dataclass
class ModelCost:
    """A preset's size and arithmetic."""

    name: str
    params: int
    hidden: int
    depth: int
    heads: int
    patch: tuple[int, int, int]
    condition: str
    text_len: int
    family: str = "DiT"

    def flops_per_sample(self, tokens: int, train: bool = True, frames: int | None = None) -> float:
        """Matmul + attention FLOPs of one sample with `tokens` video tokens in `frames` latent frame groups
        (x3 for a training step). Full attention costs N^2 per block; STDiT's spatial + temporal
        attention N*S + N*T' (S = N / T'); without `frames`, STDiT is costed as 16 frame groups."""
        from opensora.models.dit import CONDITIONINGS

        conditioning = CONDITIONINGS.lookup(self.condition)
        d, n, s = self.hidden, tokens + conditioning.prefix_tokens(self.text_len), self.text_len
        if self.family == "STDiT":
            t = max(1, min(frames or 16, tokens))
            per_block = 2 * n * 16 * d * d + 4 * n * (n / t) * d + 4 * n * t * d  # + temporal qkv/proj (4 d^2)
        else:
            per_block = 2 * n * 12 * d * d + 4 * n * n * d  # qkv, proj, mlp (4x); scores and values
        if conditioning.cross_attention:
            per_block += 2 * n * 2 * d * d + 2 * s * 2 * d * d + 4 * n * s * d
        forward = self.depth * per_block
        return forward * (3 if train else 1)


def model_cost(name: str, in_channels: int, condition: str, text_dim: int, text_len: int,
               temporal_patch: int = 1) -> ModelCost:
    """Parameters of preset `name` counted on the meta device, with the sizes the FLOP model needs."""
    import torch

    from opensora.models.presets import MODELS, create_model, model_config

    with torch.device("meta"):
        model = create_model(name, in_channels, condition, text_dim, text_len, temporal_patch)
    mc = model_config(name, temporal_patch)
    return ModelCost(name, sum(p.numel() for p in model.parameters()), mc["hidden_size"], mc["depth"],
                     mc["num_heads"], tuple(mc["patch_size"]), condition, text_len, MODELS.lookup(name).family)


@dataclass
class MemoryPlan:
    """Predicted peak bytes per rank, by part."""

    weights: int
    grads: int
    optimizer: int
    ema: int
    activations: int
    activations_ckpt: int
    overhead: int
    grad_checkpoint: bool = False

    def total(self, grad_checkpoint: bool | None = None) -> int:
        """The predicted peak, with or without gradient checkpointing (default: as planned)."""
        ckpt = self.grad_checkpoint if grad_checkpoint is None else grad_checkpoint
        act = self.activations_ckpt if ckpt else self.activations
        return self.weights + self.grads + self.optimizer + self.ema + act + self.overhead

    def parts(self) -> dict[str, int]:
        """Named parts for a table."""
        return {"weights": self.weights, "gradients": self.grads, "optimizer states": self.optimizer,
                "EMA": self.ema, "activations": self.activations, "activations (--grad-checkpoint)": self.activations_ckpt,
                "fixed overhead": self.overhead}


def predict_memory(cost: ModelCost, tokens: int, batch: int, precision: str, plugin: str, device: str,
                   sp_size: int = 1, dp_size: int = 1, grad_checkpoint: bool = False) -> MemoryPlan:
    """Peak bytes per rank for the largest bucket (`tokens` per sample, `batch` per rank)."""
    p = cost.params
    half = precision in ("bf16", "fp16")
    wbytes = 2 if half and plugin != "ddp" else 4  # ddp keeps fp32 weights under autocast
    masters = 4 * p if half and plugin != "ddp" else 0
    shard = dp_size if plugin == "zero2" else 1
    optimizer = (8 * p + masters) // shard  # AdamW's two fp32 moments (+ fp32 masters in 16 bit)
    abytes = 2 if half else 4
    local_tokens = math.ceil(tokens / sp_size)
    unit = local_tokens * cost.hidden * batch * abytes
    per_block = ACT_ELEMS_FAMILY.get(cost.family, ACT_ELEMS)
    full = per_block * unit * cost.depth
    ckpt = ACT_ELEMS_CKPT * unit * cost.depth + per_block * unit  # inputs of every block + one block live
    return MemoryPlan(weights=wbytes * p, grads=wbytes * p // shard, optimizer=int(optimizer),
                      ema=4 * p, activations=int(full), activations_ckpt=int(ckpt),
                      overhead=OVERHEAD_BYTES["cuda" if device.startswith("cuda") else "cpu"],
                      grad_checkpoint=grad_checkpoint)


def available_memory(device: str) -> int:
    """Bytes a run may use: free GPU memory on CUDA, available RAM (cgroup limit included) on the CPU."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    avail = psutil.virtual_memory().available
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(limit_file).read().strip()
        except OSError:
            continue
        if raw.isdigit():
            used = _cgroup_usage()
            avail = min(avail, int(raw) - used) if used is not None else min(avail, int(raw))
        break
    return int(avail)


def _cgroup_usage() -> int | None:
    for f in ("/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"):
        try:
            return int(open(f).read().strip())
        except (OSError, ValueError):
            continue
    return None


def matmul_flops_per_s(device: str, dtype: str = "fp32", n: int = 1024) -> float:
    """This device's matmul throughput, measured in a fraction of a second (for time estimates)."""
    import time

    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=dt)
    b = torch.randn(n, n, device=dev, dtype=dt)
    a @ b  # warm-up
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.2:
        a @ b
        reps += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


@dataclass
class TrainPlan:
    """Everything `train --plan` shows."""

    cost: ModelCost
    memory: MemoryPlan
    available: int
    device: str
    dp_size: int
    sp_size: int
    per_rank_batch: int
    max_tokens: int
    step_flops: float
    step_seconds: float | None
    fixes: list[str] = field(default_factory=list)
    frames: int = 1  # latent frame groups of the heaviest bucket (STDiT's attention cost)

    @property
    def fits(self) -> bool:
        """True when the predicted peak fits what is available."""
        return self.memory.total() <= self.available


def plan_training(cfg, world_size: int, local_ranks: int, device: str, estimate_time: bool = False):
    """(buckets, TrainPlan) for a TrainConfig on `world_size` ranks, `local_ranks` of them on this machine.

    `estimate_time` measures this device's matmul rate (a fraction of a second) for the time per step.
    """
    from opensora.data.dataset import EncodedDataset
    from opensora.models.presets import MODELS, model_config
    from opensora.training.data import plan_dataset

    sp = cfg.resolved_sp_size(world_size)
    dp = max(1, world_size // sp)
    data = EncodedDataset(cfg.data)
    buckets = plan_dataset(data, model_config(cfg.model, cfg.temporal_patch)["patch_size"], cfg.batch_size, dp,
                           cfg.max_tokens_per_batch)
    buckets.mix_images(cfg.image_ratio)
    manifest = data.manifest
    text = manifest["text_encoder"]
    cost = model_cost(cfg.model, manifest["latent_channels"], cfg.condition, text["dim"], text["max_length"],
                      cfg.temporal_patch)
    heaviest = max(buckets.buckets, key=lambda b: b.tokens * b.batch)
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device.startswith("cuda") else "fp32")

    def memory(model_cost_=cost, batch=heaviest.batch, sp_=sp, ckpt=cfg.grad_checkpoint):
        return predict_memory(model_cost_, heaviest.tokens, batch, precision, cfg.plugin, device, sp_, dp, ckpt)

    mem = memory()
    avail = available_memory(device)
    if not device.startswith("cuda"):
        avail //= max(1, local_ranks)  # ranks of one machine share its RAM
    frames = heaviest.train_thw[0] // cost.patch[0]
    step_flops = cost.flops_per_sample(heaviest.tokens, frames=frames) * heaviest.batch / sp
    seconds = step_flops / (0.5 * matmul_flops_per_s(device, precision)) if estimate_time else None
    plan = TrainPlan(cost, mem, avail, device, dp, sp, heaviest.batch, heaviest.tokens, step_flops, seconds,
                     frames=frames)
    if not plan.fits:
        fixes = []
        if not cfg.grad_checkpoint and memory(ckpt=True).total() <= avail:
            fixes.append("--grad-checkpoint")
        b = heaviest.batch - 1
        while b >= 1 and memory(batch=b).total() > avail:
            b -= 1
        if 1 <= b < heaviest.batch:
            fixes.append(f"--batch-size {b * dp}" if not cfg.max_tokens_per_batch
                         else f"--max-tokens-per-batch {b * heaviest.tokens}")
        for n in (2, 4, 8):
            if memory(sp_=sp * n).total() <= avail:
                fixes.append(f"--sp ulysses --nproc {world_size * n} (or more GPUs)")
                break
        preset = MODELS[cfg.model]
        smaller = [n for n in MODELS if MODELS[n].patch == preset.patch and MODELS[n].family == preset.family
                   and MODELS[n].hidden_size < preset.hidden_size]
        for name in sorted(smaller, key=lambda n: -MODELS[n].hidden_size):
            c = model_cost(name, manifest["latent_channels"], cfg.condition, text["dim"], text["max_length"],
                           cfg.temporal_patch)
            if memory(model_cost_=c).total() <= avail:
                fixes.append(f"--model {name}")
                break
        fixes.append("re-encode with a smaller --max-frames or --resolution")
        plan.fixes = fixes
    return buckets, plan
