"""Colossal-AI booster plugins by name: what each supports, and a one-line refusal before any step.

The registry `PLUGINS` is the only list of plugin names (the CLI's choices and the config check read
it); a new plugin is one `PluginSpec` entry with its builder. Precision works in one of two ways:

* `ddp`: fp32 weights; bf16/fp16 through torch autocast (fp16 with torch's GradScaler), so the
  optimizer, EMA and checkpoints stay fp32. Gradient clipping is ours.
* `hybrid`, `zero2`: Colossal-AI's mixed precision: working weights in bf16/fp16, fp32 master
  weights in the optimizer, gradient clipping and the global gradient norm inside the optimizer
  (ZeRO shards the gradients, so only the optimizer can see them all).

`gemini` is refused before any work (see GEMINI_REFUSAL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opensora.errors import UserError
from opensora.registry import Registry

if TYPE_CHECKING:  # the CLI reads PLUGINS at start-up, before torch is worth importing
    import torch

# Colossal-AI's dynamic loss scaler starts at 2**32 for LowLevelZero and 2**16 elsewhere. At 2**32
# every fp16 step of a DiT overflows; halving once per two overflows (hysteresis 2) then skips the
# first ~32 steps, so a short run never steps at all. 2**16 is where torch's GradScaler starts and
# what the first steps of our models take without overflow; the scaler still grows it every 1000
# clean steps and halves it after two overflows.
FP16_INITIAL_SCALE = 2.0**16


# Measured on an H200 (torch 2.11.0+cu130, Colossal-AI 0.5.0): our trainer under GeminiPlugin faults
# with "CUDA error: an illegal memory access" in its first step, in bf16 and fp16 alike, with
# Colossal-AI's FusedAdam as with HybridAdam. A bare Gemini loop over the same DiT/T-2 (same
# FusedAdam, max_norm, initial scale; async reduce on or off) trains in both precisions, so the cause
# lies in what the trainer does differently and is not yet found (CHANGELOG lists the differences).
GEMINI_REFUSAL = ("--plugin gemini: Colossal-AI 0.5.0's Gemini faults with a CUDA illegal memory access in this "
                  "trainer's first step (seen on an H200 with torch 2.11); use --plugin zero2, which also shards "
                  "gradients and optimizer states")


@dataclass(frozen=True)
class PluginSpec:
    """What a plugin can do on this toolkit's models."""

    precisions: tuple[str, ...]  # fp32 / bf16 / fp16 it trains in
    needs_cuda: bool
    mixed_precision_in_optimizer: bool  # the optimizer keeps fp32 masters, clips and reports the norm
    build: Callable[[str, float], object] | None = None  # (precision, max_norm) -> the booster plugin
    refusal: str | None = None  # why this toolkit refuses the plugin, with what to use instead


def _hybrid(precision: str, max_norm: float):
    from colossalai.booster.plugin import HybridParallelPlugin

    return HybridParallelPlugin(tp_size=1, pp_size=1, zero_stage=0, precision=precision, max_norm=max_norm,
                                initial_scale=FP16_INITIAL_SCALE, custom_policy=_no_shard_policy(),
                                broadcast_buffers=False)


def _ddp(precision: str, max_norm: float):
    from colossalai.booster.plugin import TorchDDPPlugin

    return TorchDDPPlugin(broadcast_buffers=False)  # precision is ours (autocast), clipping too


def _zero2(precision: str, max_norm: float):
    from colossalai.booster.plugin import LowLevelZeroPlugin

    return LowLevelZeroPlugin(stage=2, precision=precision, max_norm=max_norm, initial_scale=FP16_INITIAL_SCALE)


PLUGINS: Registry[PluginSpec] = Registry("plugin", "--plugin")
PLUGINS.add("hybrid", PluginSpec(("fp32", "bf16", "fp16"), False, True, _hybrid),
            "HybridParallelPlugin with tp = pp = 1: data x sequence parallel")
PLUGINS.add("ddp", PluginSpec(("fp32", "bf16", "fp16"), False, False, _ddp), "torch DDP: fp32 weights + autocast")
PLUGINS.add("zero2", PluginSpec(("fp32", "bf16", "fp16"), True, True, _zero2),
            "ZeRO-2: optimizer states and gradients sharded (CUDA only)")
PLUGINS.add("gemini", PluginSpec((), True, True, None, GEMINI_REFUSAL), "ZeRO-3 with chunked parameters (refused)",
            listed=False)


def check_plugin(name: str, precision: str, device: torch.device) -> None:
    """Refuse a plugin x precision x device this toolkit cannot train with, in one line, before any work."""
    spec = PLUGINS.lookup(name)
    if spec.refusal:
        raise UserError(spec.refusal)
    if spec.needs_cuda and device.type != "cuda":
        raise UserError(f"--plugin {name} needs a CUDA GPU (Colossal-AI asserts one); on this machine use "
                        "--plugin hybrid or --plugin ddp")
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU (loss scaling); on the CPU use fp32 or bf16")
    if precision not in spec.precisions:
        raise UserError(f"--plugin {name} --precision {precision} is not supported; use --precision "
                        f"{' or '.join(spec.precisions)}")


def make_plugin(name: str, precision: str, device: torch.device, grad_clip: float):
    """The booster plugin `name` for `precision` ("fp32" | "bf16" | "fp16") on `device`."""
    from opensora.parallel.distributed import quiet

    check_plugin(name, precision, device)
    with quiet():
        from colossalai.accelerator import set_accelerator

        # Colossal-AI picks its device once per process: CUDA whenever a GPU is visible, which would
        # put a `--device cpu` run's plugin state on the GPU beside a gloo group.
        set_accelerator("cuda" if device.type == "cuda" else "cpu")
        return PLUGINS[name].build(precision, grad_clip if optimizer_clips(name, precision) else 0.0)


def keeps_masters(name: str, precision: str) -> bool:
    """Whether the plugin's optimizer holds fp32 master weights apart from the 16-bit working ones."""
    return PLUGINS[name].mixed_precision_in_optimizer and precision != "fp32"


def optimizer_clips(name: str, precision: str) -> bool:
    """Whether the plugin's optimizer clips gradients and reports the global norm itself."""
    return name == "zero2" or keeps_masters(name, precision)


def _no_shard_policy():
    """A shardformer policy that leaves our model as it is (auto policies exist only for HF models)."""
    from colossalai.shardformer.policies.base_policy import Policy

    class NoShardPolicy(Policy):
        def config_sanity_check(self):
            pass

        def preprocess(self):
            return self.model

        def module_policy(self):
            return {}

        def postprocess(self):
            return self.model

        def get_held_layers(self):
            return [self.model]

        def get_shared_params(self):
            return []

    return NoShardPolicy()
